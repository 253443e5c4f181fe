"""What the sbatch scripts in ``slurm_scripts/`` do, in one tested place.

Each numbered script is an ``#SBATCH`` header plus one call, ``lstv slurm STEP``. This module
reads the scripts' settings (``LSTV_*`` environment variables, all listed in
``slurm_scripts/README.md``), chooses where ``lstv`` runs (an Apptainer/Singularity image when
there is one, the host Python otherwise), builds the ``lstv`` and ``sbatch`` command lines and
submits the chain of jobs; the downloads are :mod:`lstv.download`.

It imports the standard library only, so the login node's plain ``python3`` runs it from the
project's ``src/`` even where lstv's dependencies live in the container image alone.
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from lstv import download
from lstv.config import SLURM_STEPS
from lstv.rundir import METRICS_CSV, REPORT_HTML, VISUALIZATION_DIR
from lstv.slurm_settings import (  # noqa: F401 - part of this module's API
    Settings,
    SlurmError,
    find_project,
    is_on,
    positive_int,
    whole_number,
)

log = logging.getLogger(__name__)

# Steps of `lstv slurm` and the scripts that call them.
SCRIPTS = {
    "master": "00_master_pipeline.sh",
    "download_data": "01_download_data.sh",
    "download_model": "01b_download_model.sh",
    "trial": "02_trial_inference.sh",
    "prod": "03_prod_inference.sh",
    "merge": "03b_merge_report.sh",
    "debug": "04_debug_single.sh",
}
# Not a script: download_model runs it where lstv runs (container or host) to check a checkpoint.
CHECK_MODEL = "check_model"
STEPS = SLURM_STEPS  # the CLI's choices (lstv.config): every script's step and check_model

GPU, CPU = "gpu", "cpu"
CONTAINER_PROJECT = "/work"  # where the container sees the project
# Caches (matplotlib, torch hub) go to the project (created on first use), never to $HOME or
# the read-only image.
CONTAINER_CACHES = (
    "MPLCONFIGDIR=/work/.cache/matplotlib,XDG_CACHE_HOME=/work/.cache,TORCH_HOME=/work/.cache/torch"
)
DEFAULT_NUM_PARTS = 8

Runner = Callable[..., subprocess.CompletedProcess]


def child_env(env: Mapping[str, str], project_dir: Path, **extra: str) -> dict[str, str]:
    """The environment for processes this module starts (lstv, sbatch and so the jobs).

    The scripts put the project's ``src/`` on ``PYTHONPATH`` only to start this module: it is
    taken out again, so ``LSTV_PYTHON`` must have lstv installed, as the README says.
    ``LSTV_PROJECT_DIR`` is added, so a job finds the project wherever Slurm runs its script.
    """
    src = os.path.realpath(project_dir / "src")
    out = dict(env)
    kept = [
        p for p in out.pop("PYTHONPATH", "").split(os.pathsep) if p and os.path.realpath(p) != src
    ]
    if kept:
        out["PYTHONPATH"] = os.pathsep.join(kept)
    out["LSTV_PROJECT_DIR"] = str(project_dir)
    out.update(extra)
    return out


@dataclass(frozen=True)
class Runtime:
    """Where ``lstv`` runs: ``tool`` is ``apptainer``, ``singularity`` or ``host``."""

    tool: str
    why: str

    @property
    def in_container(self) -> bool:
        return self.tool != "host"


def choose_runtime(
    settings: Settings, which: Callable[[str], str | None] = shutil.which
) -> Runtime:
    """The image when it and apptainer/singularity are there (``LSTV_USE_CONTAINER=auto``).

    Raises:
        SlurmError: the image is required (``LSTV_USE_CONTAINER=1`` or a chosen
            ``LSTV_CONTAINER``) but missing or without a tool to run it, or the mode is unknown.
    """
    mode = settings.use_container
    if mode in ("0", "no", "false"):
        return Runtime("host", f"LSTV_USE_CONTAINER={mode}")
    if mode not in ("1", "yes", "true", "auto"):
        raise SlurmError(f"LSTV_USE_CONTAINER must be auto, 1 or 0, not {mode!r}")
    tool = next((t for t in ("apptainer", "singularity") if which(t)), None)
    image = settings.container
    if image.is_file() and tool:
        return Runtime(tool, f"image {image}")
    if mode != "auto" or settings.container_chosen:
        if not image.is_file():
            raise SlurmError(
                f"container image not found: {image} (build it as in slurm_scripts/README.md, "
                "or unset LSTV_CONTAINER to run on the host)"
            )
        raise SlurmError(
            f"container image {image} is there but neither apptainer nor singularity is on "
            "PATH (try: module load apptainer)"
        )
    if image.is_file():
        return Runtime("host", "no apptainer or singularity on PATH")
    return Runtime("host", f"no container image at {image}")


def container_path(settings: Settings, arg: str) -> str:
    """``arg`` as the container sees it: the project is mounted at /work."""
    project = str(settings.project_dir)
    if arg == project:
        return CONTAINER_PROJECT
    if arg.startswith(project + "/"):
        return CONTAINER_PROJECT + arg[len(project) :]
    return arg


def input_binds(settings: Settings) -> list[str]:
    """Read-only binds for inputs kept outside the project (e.g. data on scratch)."""
    binds: list[str] = []
    for path in (settings.input_dir, settings.series_csv, settings.checkpoint, settings.valid_ids):
        if path is None or path.is_relative_to(settings.project_dir):
            continue
        folder = path if path.is_dir() else path.parent
        bind = f"{folder}:{folder}:ro"
        if folder.is_dir() and bind not in binds:
            binds += ["--bind", bind]
    return binds


def lstv_command(settings: Settings, runtime: Runtime, args: Sequence[str]) -> list[str]:
    """``python -m lstv ARGS`` on the host, or in the image with the project at /work."""
    if not runtime.in_container:
        return [settings.python, "-m", "lstv", *args]
    return [
        *(runtime.tool, "exec", "--nv", "--bind", f"{settings.project_dir}:{CONTAINER_PROJECT}"),
        *input_binds(settings),
        *("--pwd", CONTAINER_PROJECT, "--env", CONTAINER_CACHES),
        *(str(settings.container), "python", "-m", "lstv"),
        *(container_path(settings, arg) for arg in args),
    ]


def run_lstv(
    settings: Settings,
    runtime: Runtime,
    args: Sequence[str],
    env: Mapping[str, str],
    run: Runner = subprocess.run,
) -> None:
    """Run ``lstv ARGS`` where ``runtime`` says, from the project folder.

    Raises:
        SlurmError: the host Python lacks lstv, an output folder is outside what the container
            may write, or lstv failed.
    """
    if runtime.in_container:
        # The image is read-only and only the project is mounted writable.
        if not settings.output_dir.is_relative_to(settings.project_dir):
            raise SlurmError(
                f"LSTV_OUTPUT_DIR={settings.output_dir} is outside {settings.project_dir}, the "
                "only folder the container may write to; choose a folder inside the project"
            )
        where = f"in the container ({runtime.tool}, {runtime.why})"
    else:
        _require_host_lstv(settings, env, run)
        where = f"on the host ({runtime.why})"
    command = lstv_command(settings, runtime, args)
    program = "python" if runtime.in_container else shutil.which(settings.python) or settings.python
    log.info("%s: %s %s", where, program, " ".join(command[-len(args) - 2 :]))
    result = run(command, cwd=settings.project_dir, env=child_env(env, settings.project_dir))
    if result.returncode != 0:
        raise SlurmError(f"lstv {args[0]} failed with exit code {result.returncode} (see above)")


def _require_host_lstv(settings: Settings, env: Mapping[str, str], run: Runner) -> None:
    try:
        ok = (
            run(
                [settings.python, "-c", "import lstv"],
                env=child_env(env, settings.project_dir),
                capture_output=True,
            ).returncode
            == 0
        )
    except OSError:
        ok = False
    if not ok:
        raise SlurmError(
            f"{settings.python!r} cannot import lstv: run 'pip install -e "
            f"{settings.project_dir}', set LSTV_PYTHON to the Python that has it, or use the "
            "container (LSTV_CONTAINER)"
        )


def log_banner(settings: Settings, runtime: Runtime, title: str, env: Mapping[str, str]) -> None:
    """What a job log starts with: the step, the job, the node and where lstv runs."""
    log.info("== %s ==", title)
    log.info(
        "job %s (array %s, task %s) on %s, project %s",
        env.get("SLURM_JOB_ID", "none"),
        env.get("SLURM_ARRAY_JOB_ID", "none"),
        env.get("SLURM_ARRAY_TASK_ID", "none"),
        socket.gethostname(),
        settings.project_dir,
    )
    log.info(
        "GPUs: CUDA_VISIBLE_DEVICES=%s; runs on: %s (%s)",
        env.get("CUDA_VISIBLE_DEVICES", "unset"),
        runtime.tool,
        runtime.why,
    )
    if shutil.which("nvidia-smi"):
        subprocess.run(["nvidia-smi", "-L"], stdout=sys.stderr, check=False)


def resource_args(env: Mapping[str, str], kind: str) -> list[str]:
    """sbatch options from the ``LSTV_*`` resource settings for a GPU or CPU job; an unset
    setting keeps the script's own ``#SBATCH`` default."""
    names = [("--partition", "LSTV_PARTITION"), ("--gres", "LSTV_GRES"), ("--time", "LSTV_TIME")]
    if kind == CPU:
        names = [("--partition", "LSTV_CPU_PARTITION")]
    names += [
        ("--cpus-per-task", "LSTV_CPUS"),
        ("--mem", "LSTV_MEM"),
        ("--account", "LSTV_ACCOUNT"),
        ("--qos", "LSTV_QOS"),
    ]
    args = [arg for flag, name in names if env.get(name) for arg in (flag, env[name])]
    return [*args, *(env.get("LSTV_SBATCH_ARGS") or "").split()]


def sbatch_command(
    settings: Settings,
    env: Mapping[str, str],
    kind: str,
    script: str,
    options: Sequence[str] = (),
    script_args: Sequence[str] = (),
) -> list[str]:
    """``sbatch`` for one of the numbered scripts. Logs go to ``LSTV_LOG_DIR`` and the job
    starts in the project, so this works from any folder."""
    logs = settings.log_dir
    return [
        *("sbatch", "--parsable", "--chdir", str(settings.project_dir)),
        *("--output", f"{logs}/%x_%A_%a.out", "--error", f"{logs}/%x_%A_%a.err"),
        *("--export", "ALL", *resource_args(env, kind), *options),
        str(settings.project_dir / "slurm_scripts" / script),
        *script_args,
    ]


def parse_job_id(stdout: str) -> str:
    """The job ID from ``sbatch --parsable`` output: ``ID`` or ``ID;CLUSTER``."""
    lines = stdout.strip().splitlines()
    job_id = lines[-1].split(";")[0].strip() if lines else ""
    if not job_id.isdigit():
        raise SlurmError(f"sbatch printed no job ID: {stdout!r}")
    return job_id


class Submitted(NamedTuple):
    """One submitted job, as the submitters print it."""

    script: str
    job_id: str
    note: str = ""

    def line(self) -> str:
        return f"{self.script:<24} job {self.job_id}{self.note}"


class Submitter:
    """Submits the numbered scripts with ``sbatch`` and chains them with ``afterok``.

    Args:
        settings: the scripts' settings.
        env: the user's environment; jobs get it (``--export ALL``), so they work out the
            defaults on their own node (CPUs of the job, container or host).
        run: runs a command (``subprocess.run``; tests pass a stand-in for ``sbatch``).
    """

    def __init__(self, settings: Settings, env: Mapping[str, str], run: Runner = subprocess.run):
        self.settings = settings
        self.env = env
        self.run = run

    def submit(
        self,
        kind: str,
        script: str,
        options: Sequence[str] = (),
        script_args: Sequence[str] = (),
        **extra_env: str,
    ) -> str:
        """Submit ``script`` and return its job ID."""
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        command = sbatch_command(self.settings, self.env, kind, script, options, script_args)
        env = child_env(self.env, self.settings.project_dir, **extra_env)
        try:
            result = self.run(command, env=env, capture_output=True, text=True)
        except FileNotFoundError:
            raise SlurmError("sbatch not found: run this on a SLURM login node") from None
        if result.returncode != 0:
            raise SlurmError(f"sbatch refused {script}: {result.stderr.strip()}")
        return parse_job_id(result.stdout)

    def prod(self, dependency: str = "") -> list[Submitted]:
        """The production array (``LSTV_NUM_PARTS`` tasks, or ``LSTV_ARRAY_INDICES`` of them)
        and the merge job that waits for it."""
        num_parts = positive_int(
            "LSTV_NUM_PARTS", self.env.get("LSTV_NUM_PARTS") or str(DEFAULT_NUM_PARTS)
        )
        indices = self.env.get("LSTV_ARRAY_INDICES") or f"0-{num_parts - 1}"
        wait = ["--dependency", dependency] if dependency else []
        # LSTV_NUM_PARTS travels with the jobs: a task rerun alone (--array=1) still knows the
        # run was split into num_parts shards.
        parts = {"LSTV_NUM_PARTS": str(num_parts)}
        array_id = self.submit(GPU, SCRIPTS["prod"], ["--array", indices, *wait], **parts)
        merge_id = self.submit(
            CPU, SCRIPTS["merge"], ["--dependency", f"afterok:{array_id}"], **parts
        )
        return [
            Submitted(
                SCRIPTS["prod"], array_id, f" (array of {num_parts} shards, tasks {indices})"
            ),
            Submitted(SCRIPTS["merge"], merge_id),
        ]

    def pipeline(self, skip_download: bool, debug_study_id: str = "") -> list[Submitted]:
        """01 + 01b -> 02 -> 03 (array) -> 03b, and 04 after 02 when a study ID is given.

        Checks on the login node what would otherwise fail in a queued job an hour later.
        """
        jobs: list[Submitted] = []
        trial_wait: list[str] = []
        if skip_download:
            log.info("skipping the downloads (LSTV_SKIP_DOWNLOAD=1)")
            self.settings.require_inputs()
        else:
            _kaggle(self.settings, self.env).require()
            jobs += [
                Submitted(SCRIPTS[step], self.submit(CPU, SCRIPTS[step]))
                for step in ("download_data", "download_model")
            ]
            trial_wait = ["--dependency", "afterok:" + ":".join(job.job_id for job in jobs)]
        trial_id = self.submit(GPU, SCRIPTS["trial"], trial_wait)
        jobs.append(Submitted(SCRIPTS["trial"], trial_id))
        jobs += self.prod(f"afterok:{trial_id}")
        if debug_study_id:
            debug_id = self.submit(
                GPU, SCRIPTS["debug"], ["--dependency", f"afterok:{trial_id}"], [debug_study_id]
            )
            jobs.append(Submitted(SCRIPTS["debug"], debug_id, f" (study {debug_study_id})"))
        return jobs


def submitted_lines(jobs: Sequence[Submitted], settings: Settings, env: Mapping) -> list[str]:
    """What a submitter prints: a line a job, then one line of IDs for scripts to read."""
    user = env.get("USER") or getpass.getuser()
    return [
        *(job.line() for job in jobs),
        "job ids: " + " ".join(job.job_id for job in jobs),
        f"follow with: squeue -u {user}; logs in {settings.log_dir}; "
        f"results in {settings.output_dir}",
    ]


def _kaggle(settings: Settings, env: Mapping[str, str]) -> download.Kaggle:
    return download.Kaggle(child_env(env, settings.project_dir), env.get("LSTV_KAGGLE") or "kaggle")


def download_data(settings: Settings, env: Mapping[str, str]) -> None:
    """Step 01: the competition data into ``LSTV_DATA_DIR`` (:mod:`lstv.download`)."""
    competition = env.get("LSTV_COMPETITION") or download.COMPETITION
    log.info("== 01 download %s into %s ==", competition, settings.data_dir)
    download.download_competition(
        settings.data_dir,
        _kaggle(settings, env),
        competition,
        force=is_on(env.get("LSTV_FORCE_DOWNLOAD")),
        keep_zip=is_on(env.get("LSTV_KEEP_ZIP")),
    )
    log.info("done: %s", settings.data_dir)


def download_model(settings: Settings, env: Mapping[str, str]) -> None:
    """Step 01b: the checkpoint and hold-out IDs (:mod:`lstv.download`), checked where lstv
    runs (``lstv slurm check_model`` in the container or on the host)."""
    dataset = env.get("LSTV_MODEL_DATASET") or download.MODEL_DATASET
    # Checked before anything is fetched: a typo must not cost a download.
    limit = env.get("LSTV_MIN_CHECKPOINT_MB") or str(download.MIN_CHECKPOINT_MB)
    min_mb = whole_number("LSTV_MIN_CHECKPOINT_MB", limit)
    valid_ids = settings.valid_ids or settings.project_dir / "models" / "valid_id.npy"
    log.info("== 01b download %s -> %s, %s ==", dataset, settings.checkpoint, valid_ids)
    runtime: Runtime | None = None  # chosen on first use: files that are missing need none

    def check(checkpoint: Path, ids: Path) -> bool:
        nonlocal runtime
        runtime = runtime or choose_runtime(settings)
        try:
            run_lstv(settings, runtime, ["slurm", CHECK_MODEL, str(checkpoint), str(ids)], env)
        except SlurmError as exc:
            log.warning("%s", exc)
            return False
        return True

    download.download_model(
        settings.checkpoint,
        valid_ids,
        check,
        _kaggle(settings, env),
        dataset=dataset,
        force=is_on(env.get("LSTV_FORCE_DOWNLOAD")),
        min_mb=min_mb,
    )
    log.info("done: %s, %s", settings.checkpoint, valid_ids)


def run_trial(settings: Settings, runtime: Runtime, env: Mapping[str, str]) -> None:
    """Step 02: ``LSTV_N_TRIAL`` random hold-out studies, then the report."""
    log_banner(settings, runtime, f"02 trial inference: {settings.n_trial} studies", env)
    settings.require_inputs()
    out = settings.output_dir / "trial"
    mode = ["--mode", "trial", "--n_trial", settings.n_trial, "--output_dir", str(out)]
    run_lstv(settings, runtime, ["infer", *settings.infer_args(), *mode], env)
    run_lstv(settings, runtime, settings.report_args(out), env)
    log.info("done: %s and %s", out / METRICS_CSV, out / REPORT_HTML)


def run_prod_task(settings: Settings, runtime: Runtime, env: Mapping[str, str]) -> None:
    """Step 03, one array task: shard ``SLURM_ARRAY_TASK_ID`` of ``LSTV_NUM_PARTS`` (else of the
    array's task count). ``lstv infer`` refuses a task outside the split; ``lstv merge`` a
    missing, duplicated or unfinished shard."""
    part_id = env["SLURM_ARRAY_TASK_ID"]
    num_parts = env.get("LSTV_NUM_PARTS") or env.get("SLURM_ARRAY_TASK_COUNT", "1")
    shard = settings.output_dir / "prod" / "shards" / f"part_{int(part_id):03d}"
    log_banner(settings, runtime, f"03 production inference: shard {part_id} of {num_parts}", env)
    settings.require_inputs()
    split = ["--mode", "prod", "--num_parts", num_parts, "--part_id", part_id]
    run_lstv(
        settings,
        runtime,
        ["infer", *settings.infer_args(), *split, "--output_dir", str(shard)],
        env,
    )
    log.info("done: shard %s of %s in %s", part_id, num_parts, shard)


def run_merge(settings: Settings, runtime: Runtime, env: Mapping[str, str]) -> None:
    """Step 03b: join the shards into ``LSTV_OUTPUT_DIR/prod`` and render the report."""
    out = settings.output_dir / "prod"
    log_banner(settings, runtime, f"03b merge shards of {out / 'shards'}", env)
    merge = ["merge", "--shards_dir", str(out / "shards"), "--output_dir", str(out)]
    if env.get("LSTV_NUM_PARTS"):
        merge += ["--num_parts", env["LSTV_NUM_PARTS"]]
    run_lstv(settings, runtime, merge, env)
    run_lstv(settings, runtime, settings.report_args(out), env)
    log.info("done: %s and %s", out / METRICS_CSV, out / REPORT_HTML)


def run_debug(settings: Settings, runtime: Runtime, env: Mapping[str, str], study_id: str) -> None:
    """Step 04: one study with every picture, for checking by eye."""
    if not study_id.isdigit():
        raise SlurmError(
            "usage: sbatch slurm_scripts/04_debug_single.sh <study_id> (a numeric RSNA study ID)"
        )
    log_banner(settings, runtime, f"04 debug: study {study_id}", env)
    settings.require_inputs()
    out = settings.output_dir / "debug" / study_id
    debug = ["--mode", "debug", "--debug_study_id", study_id, "--output_dir", str(out)]
    # Its pictures need the heatmaps whatever LSTV_SAVE_HEATMAPS says, and the flag goes once.
    infer_args = replace(settings, save_heatmaps=True).infer_args()
    run_lstv(settings, runtime, ["infer", *infer_args, *debug], env)
    run_lstv(settings, runtime, settings.report_args(out), env)
    log.info("done: figures in %s, report %s", out / VISUALIZATION_DIR, out / REPORT_HTML)


def run_step(
    step: str,
    operands: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    skip_download: bool = False,
) -> list[str]:
    """Run one step of ``lstv slurm``; return the lines a submitter prints (else none).

    Args:
        step: one of ``STEPS``.
        operands: the study ID of ``debug``; checkpoint and IDs file of ``check_model``.
        env: the environment (default ``os.environ``).
        skip_download: ``master`` without the downloads (also ``LSTV_SKIP_DOWNLOAD=1``).

    Raises:
        SlurmError: what stopped the step, with what to do.
    """
    env = dict(os.environ if env is None else env)
    takes = {"debug": 1, CHECK_MODEL: 2}.get(step, 0)
    if step not in STEPS:
        raise SlurmError(f"unknown step {step!r}; choose from {', '.join(STEPS)}")
    if len(operands) > takes or (step == CHECK_MODEL and len(operands) != takes):
        raise SlurmError(f"{step} takes {takes} argument(s), got {list(operands)}")
    if step == CHECK_MODEL:
        return download.check_model_files(*operands)
    settings = Settings.from_env(env, find_project(env))
    if step == "master" or (step == "prod" and not env.get("SLURM_ARRAY_TASK_ID")):
        submitter = Submitter(settings, env)
        if step == "prod":  # not an array task: submit the array and the merge job
            jobs = submitter.prod()
        else:
            skip = skip_download or is_on(env.get("LSTV_SKIP_DOWNLOAD"))
            jobs = submitter.pipeline(skip, env.get("LSTV_DEBUG_STUDY_ID", ""))
        return submitted_lines(jobs, settings, env)
    if step == "download_data":
        download_data(settings, env)
    elif step == "download_model":
        download_model(settings, env)
    elif step == "debug":
        study_id = operands[0] if operands else env.get("LSTV_DEBUG_STUDY_ID", "")
        run_debug(settings, choose_runtime(settings), env, study_id)
    else:
        job = {"trial": run_trial, "prod": run_prod_task, "merge": run_merge}[step]
        job(settings, choose_runtime(settings), env)
    return []
