"""The READMEs as a contract: every fenced ``lstv`` command of README.md, slurm_scripts/README.md
and models/README.md runs as written, on phantoms, so the documentation cannot drift from the code.

How a documented command is run:

- In a temporary project folder laid out like the repository, with the README's relative paths
  (``data/raw/train_images``, ``models/...``, ``data/output/...``) as they are. ``data/raw`` holds
  phantoms in the RSNA layout plus a hospital-style export (``lstv phantom --layout hospital``).
  ``models/point_net_checkpoint.pth`` is a copy of the shipped phantom localizer: the real one
  needs Kaggle credentials. The commands run in the order the files give them (a later command
  may read what an earlier one wrote); selecting one test runs the ones above it first.
- Placeholders that are not paths are mapped (:data:`PLACEHOLDERS`), and sizes are capped so a
  command takes seconds, not hours (:data:`CAPS`): fewer phantoms, fewer training steps. Nothing
  else is changed: an unknown flag or a wrong path fails the test, which is the point.
- Commands that need what this machine cannot give (credentials, a GPU, a container runtime, a
  cluster, package installation) are skipped by :data:`SKIPS`, each with its reason; a line that
  mentions ``lstv`` and is neither run nor skipped fails
  :func:`test_every_documented_lstv_line_is_run_or_skipped`.
- A server (``lstv serve``, ``lstv review``) is started on a free port and must answer HTTP
  within a time limit; then it is stopped.

The fast tests check the extraction and that every documented ``lstv`` command's flags parse;
the slow one runs the commands.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
READMES = ("README.md", "slurm_scripts/README.md", "models/README.md")

# Placeholders of the READMEs that name no real file, and what stands in for them here.
PLACEHOLDERS = {
    "RUN": "data/output/trial",  # "a run folder": the seed's trial run the README makes first
    "...": "data/output/trial",  # ".../lstv_uncertainty_metrics.csv": likewise
    "labels.csv": "data/raw/lstv_labels.csv",  # expert labels: the phantoms' known truth
    # a radiologist's filled-in audit queue: the phantoms' known labels stand in for one
    "audit_queue.csv": "data/raw/lstv_labels.csv",
    "/data/pacs_export": "data/raw/hospital_export",  # a hospital export: the phantoms' copy
}
# Sizes capped so each command takes seconds: flag -> largest value used here.
CAPS = {"--n_studies": 8, "--steps": 2, "--n_bootstrap": 100, "--repeats": 1}
# Flags added when a command leaves a size at a default too large for a test.
ADDED = {"demo": ["--n_studies", "8"]}
# Commands that start a server: started on a free port, checked to answer, stopped.
SERVERS = {"serve", "review"}
SERVER_START_S = 240
COMMAND_TIMEOUT_S = 900

# (pattern on the whole command, reason): documented commands this test does not run.
SKIPS = (
    (r"^(apptainer|singularity|docker|podman|buildah)\b", "needs a container runtime"),
    (r"^(sbatch|srun|squeue|scancel)\b", "needs a SLURM cluster"),
    (r"^lstv slurm check_model\b", "checks hengck23's checkpoint: needs Kaggle credentials"),
    (r"^lstv slurm\b(?!.*--help)", "submits or runs SLURM jobs: needs a cluster"),
    (r"^(pip|python -m pip)\b", "installs packages; the test runs in the installed environment"),
    (r"^kaggle\b", "needs Kaggle credentials"),
    (r"--device cuda\b", "needs a GPU"),
)

LSTV_WORD = re.compile(r"(?<![\w./-])lstv(?![\w./-])")
PROGRAMS = ("lstv", "python -m lstv", "python src/inference.py", "python src/generate_report.py")


@dataclass
class Documented:
    """One command of a README's fenced block."""

    source: str  # file:line
    text: str  # as documented, continuation lines joined
    argv: list[str] = field(default_factory=list)  # tokens, env assignments and nice removed
    env: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.source}:{' '.join(self.argv[:3]).splitlines()[0][:40]}"

    def kind(self) -> str:
        """'lstv' (args after the program), 'seed' (src/*.py), 'python' (python -c), or ''."""
        a = self.argv
        if a[:1] == ["lstv"] or a[:3] == ["python", "-m", "lstv"]:
            return "lstv"
        if a[:1] == ["python"] and a[1:2] in (["src/inference.py"], ["src/generate_report.py"]):
            return "seed"
        if a[:2] == ["python", "-c"] and re.search(r"\blstv\b", a[2] if len(a) > 2 else ""):
            return "python"
        return ""

    def lstv_args(self) -> list[str]:
        return self.argv[1:] if self.argv[0] == "lstv" else self.argv[3:]

    def skip_reason(self) -> str | None:
        line = re.sub(r"^python -m lstv\b", "lstv", " ".join(self.argv))
        return next((why for pattern, why in SKIPS if re.search(pattern, line)), None)


def _logical_lines(block: str, first_line: int):
    """(line number, text) of a shell block: backslash continuations joined, and a quoted
    string that spans lines (``python -c "..."``) kept whole."""
    pending, start = "", first_line
    for offset, line in enumerate(block.splitlines()):
        if not pending:
            start = first_line + offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        try:
            shlex.split(pending + line, comments=True)
        except ValueError:  # an open quote: the command goes on
            pending += line + "\n"
            continue
        yield start, pending + line
        pending = ""
    if pending:
        yield start, pending


def documented_commands(readmes=READMES) -> list[Documented]:
    """Every command of the READMEs' shell blocks (``bash``, ``sh``, ``console`` or unlabelled)
    that runs lstv or mentions it, split at ``&&``, ``||``, ``;`` and ``|``."""
    found = []
    fence = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
    for name in readmes:
        text = (REPO / name).read_text()
        for match in fence.finditer(text):
            if match.group(1) not in ("", "bash", "sh", "shell", "console"):
                continue
            first = text.count("\n", 0, match.start(2)) + 1
            for number, line in _logical_lines(match.group(2), first):
                for command in _commands(line):
                    command.source = f"{name}:{number}"
                    if command.kind() or LSTV_WORD.search(command.text):
                        found.append(command)
    return found


def _commands(line: str) -> list[Documented]:
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:  # not shell (unbalanced quotes in prose): nothing to run
        return []
    out, current = [], []
    for token in [*tokens, "&&"]:
        if token in ("&&", "||", ";", "|"):
            if current:
                out.append(_documented(current))
            current = []
        else:
            current.append(token)
    return out


def _documented(tokens: list[str]) -> Documented:
    env = {}
    while tokens and re.fullmatch(r"[A-Za-z_]\w*=.*", tokens[0]):
        key, value = tokens.pop(0).split("=", 1)
        env[key] = value
    if tokens[:1] == ["nice"]:
        tokens = tokens[1:]
        if tokens[:1] == ["-n"]:
            tokens = tokens[2:]
    tokens = ["python" if t == "python3" and i == 0 else t for i, t in enumerate(tokens)]
    return Documented("", shlex.join(tokens), tokens, env)


# ------------------------------------------------------------------------- rewriting


def _placeholder(token: str) -> str:
    for key, value in PLACEHOLDERS.items():
        if token == key and key != "...":  # a bare "..." is elided flags: nothing to run
            return value
        if token.startswith(key + "/"):
            return value + token[len(key) :]
    return token


def rewrite(args: list[str]) -> list[str]:
    """Optional ``[...]`` groups kept, placeholders mapped, sizes capped."""
    out = []
    for token in args:
        token = token.removeprefix("[").removesuffix("]") if token not in ("[", "]") else ""
        if not token:
            continue
        if out and out[-1] in CAPS and re.fullmatch(r"\d+", token):
            token = str(min(int(token), CAPS[out[-1]]))
        out.append(_placeholder(token))
    return out


def lstv_argv(command: Documented) -> list[str]:
    """The ``lstv`` arguments this test runs for a documented ``lstv`` command."""
    args = rewrite(command.lstv_args())
    added = ADDED.get(args[0] if args else "", [])
    if added and added[0] not in args:
        args += added
    return args


# ------------------------------------------------------------------------- the fast checks

COMMANDS = documented_commands()
RUNNABLE = [c for c in COMMANDS if c.kind() and not c.skip_reason()]


def test_extraction_finds_the_documented_commands():
    """The parser sees the commands a reader sees (guards the guard)."""
    texts = [" ".join(c.argv) for c in COMMANDS]
    assert any(t.startswith("lstv demo --output_dir") for t in texts)
    assert any(t.startswith("lstv index --input_dir /data/pacs_export") for t in texts)
    assert any(t.startswith("lstv train --data_dir") and "--init_from" in t for t in texts)
    assert any(c.kind() == "seed" for c in COMMANDS)
    # continuation lines are joined, comments dropped, && split
    demo = next(c for c in COMMANDS if c.argv[:2] == ["lstv", "demo"])
    assert demo.source.startswith("README.md:")
    assert not any("#" in t for c in COMMANDS for t in c.argv if t.startswith("#"))
    assert rewrite(["[--top_n", "20]", "--n_studies", "500", "RUN/x.csv"]) == [
        "--top_n",
        "20",
        "--n_studies",
        "8",
        "data/output/trial/x.csv",
    ]


def test_every_documented_lstv_line_is_run_or_skipped():
    """A new documented command is either run here or skipped with a reason in SKIPS."""
    unaccounted = [c.id for c in COMMANDS if not c.kind() and not c.skip_reason()]
    assert unaccounted == [], (
        "documented commands that mention lstv but that this test neither runs nor skips: "
        f"{unaccounted}; run them (PROGRAMS) or add a reason to SKIPS"
    )


@pytest.mark.parametrize(
    "command", [c for c in RUNNABLE if c.kind() in ("lstv", "seed")], ids=lambda c: c.id
)
def test_documented_flags_parse(command):
    """Every flag a README gives exists (argparse exits 2 on an unknown one)."""
    from lstv.cli import build_parser

    if command.kind() == "lstv":
        args = lstv_argv(command)
    else:  # the seed's scripts take lstv infer's and lstv report's flags
        seed = "infer" if command.argv[1] == "src/inference.py" else "report"
        args = [seed, *rewrite(command.argv[2:])]
    if "..." in args:
        pytest.fail(
            f"{command.source}: `{command.text}` elides flags with a bare `...`, which nobody can "
            f"run: write the command out, with a placeholder of {sorted(PLACEHOLDERS)} where a "
            "path is the reader's own"
        )
    try:
        build_parser().parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"{command.source}: `{command.text}` does not parse (exit {exc.code})")


# ------------------------------------------------------------------------- running them


class Project:
    """A folder laid out like the repository, where the documented commands run in order."""

    def __init__(self, root: Path):
        self.root = root
        self.ran: set[str] = set()
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p
            ),
            "MPLBACKEND": "Agg",
        }
        (root / "models").mkdir(parents=True)
        (root / "src").symlink_to(REPO / "src")  # python src/inference.py
        shipped = REPO / "models/phantom_point_net.pth"
        for name in ("phantom_point_net.pth", "point_net_checkpoint.pth"):
            shutil.copy(shipped, root / "models" / name)  # the second stands in for Kaggle's
        shutil.copy(shipped, root / "previous_phantom_point_net.pth")  # git show 1b46f01:...
        # data/raw: phantoms instead of the RSNA download, every study held out (so a trial run
        # has enough normal studies to calibrate on), and a hospital-style export of them
        self.run_lstv(
            ["phantom", "--output_dir", "data/raw", "--n_studies", "12", "--seed", "3"]
            + ["--valid_fraction", "1.0", "--layout", "hospital", "--quiet"]
        )
        shutil.copy(root / "data/raw/valid_id.npy", root / "models/valid_id.npy")

    def run_lstv(self, args: list[str]) -> None:
        self.check(self.run([sys.executable, "-m", "lstv", *args]), f"lstv {shlex.join(args)}")

    def run(self, argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            argv,
            cwd=self.root,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )

    @staticmethod
    def check(proc: subprocess.CompletedProcess, what: str) -> None:
        if proc.returncode != 0:
            pytest.fail(
                f"`{what}` exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
            )

    def run_documented(self, command: Documented) -> None:
        kind = command.kind()
        if kind == "lstv":
            args = lstv_argv(command)
            if args and args[0] in SERVERS:
                return self.serve(command, args)
            argv = [sys.executable, "-m", "lstv", *args]
        elif kind == "seed":
            argv = [sys.executable, command.argv[1], *rewrite(command.argv[2:])]
        else:
            argv = [sys.executable, *command.argv[1:]]
        self.check(self.run(argv, command.env), f"{command.source}: {command.text}")

    def serve(self, command: Documented, args: list[str]) -> None:
        """Start the server on a free port, wait for an HTTP answer, stop it."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        from lstv.cli import build_parser

        commands = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001
        ported = "--port" in commands[args[0]]._option_string_actions  # noqa: SLF001
        argv = [sys.executable, "-m", "lstv", *args, *(["--port", str(port)] if ported else [])]
        log = self.root / f"server-{port}.log"  # a file, not a pipe nobody drains
        with open(log, "w") as out:
            proc = subprocess.Popen(
                argv,
                cwd=self.root,
                env={**self.env, **command.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + SERVER_START_S
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    pytest.fail(
                        f"{command.source}: `{command.text}` exited {proc.returncode} "
                        f"before it served:\n{log.read_text()[-4000:]}"
                    )
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                        assert r.status == 200
                        return
                except OSError:
                    time.sleep(1)
            pytest.fail(f"{command.source}: `{command.text}` did not answer in {SERVER_START_S} s")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    return Project(tmp_path_factory.mktemp("readme") / "project")


@pytest.mark.slow
@pytest.mark.parametrize("command", RUNNABLE, ids=lambda c: c.id)
def test_documented_command_runs(project, command):
    """The command runs as documented (after the commands above it), exit code 0."""
    for earlier in RUNNABLE[: RUNNABLE.index(command)]:
        if earlier.id not in project.ran:  # selected alone: build what it reads first
            project.ran.add(earlier.id)
            with contextlib.suppress(pytest.fail.Exception):  # its own test reports it
                project.run_documented(earlier)
    project.ran.add(command.id)
    project.run_documented(command)
