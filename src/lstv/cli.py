"""``lstv`` command line. Thin: parse flags, call one library function, map errors to exit codes.

Imports of the library (and so of torch) happen inside each command, so ``lstv --help`` is quick.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import shlex
import signal
import sys
from pathlib import Path

EXIT_USAGE = 2  # the user's mistake: the message says what to change
EXIT_IO = 1  # the disk or the file system refused
EXIT_BUG = 1  # anything else: a bug, with its traceback in the log
PACKAGE_DIR = Path(__file__).resolve().parent

log = logging.getLogger("lstv")


_TYPES = {"Path": Path, "int": int, "float": float, "str": str}


def _nested(f) -> type | None:
    """The settings dataclass a field holds (``ThresholdOverrides``), or None."""
    from lstv import config

    kind = getattr(config, str(f.type).replace(" | None", ""), None)
    return kind if dataclasses.is_dataclass(kind) else None


def add_flags(p: argparse.ArgumentParser, config_class: type) -> None:
    """The flags of a config dataclass (:mod:`lstv.config`): ``--{field}``, its type, default,
    choices and help; a field without a default is required; a bool is a switch."""
    for f in dataclasses.fields(config_class):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        if (nested := _nested(f)) is not None:
            add_flags(p, nested)
            continue
        kind = str(f.type).replace(" | None", "")
        default = config_default(config_class, f.name)
        spec = {"help": meta.get("help") or None}
        if meta.get("choices"):
            spec["choices"] = meta["choices"]
        if kind == "bool":
            spec["action"] = "store_true"
        elif kind in _TYPES:
            spec["type"] = _TYPES[kind]
        if meta.get("positional"):
            spec["nargs"] = meta.get("nargs")
            spec.pop("nargs") if spec["nargs"] is None else None
            if default is not dataclasses.MISSING:
                spec["default"] = default
            p.add_argument(f.name, **spec, **({"metavar": "ARG"} if meta.get("nargs") else {}))
            continue
        if default is dataclasses.MISSING:
            spec["required"] = True
        elif kind != "bool":
            spec["default"] = default
            if default not in (None, ()) and "default" not in (spec["help"] or ""):
                spec["help"] = f"{spec['help'] or ''} (default: %(default)s)".lstrip()
        if meta.get("name"):  # a flag named otherwise than its field: show the flag's name
            spec["metavar"] = meta["name"].lstrip("-").upper()
        p.add_argument(meta.get("name") or f"--{f.name}", dest=f.name, **spec)


def config_default(config_class: type, name: str):
    """A field's default, or ``dataclasses.MISSING`` for a required one."""
    from lstv.config import default

    try:
        return default(config_class, name)
    except KeyError:
        return dataclasses.MISSING


def config_from_args(config_class: type, args, **values):
    """The config of a command from its parsed flags; ``values`` set the fields it sets itself."""
    given = {}
    for f in dataclasses.fields(config_class):
        if (nested := _nested(f)) is not None:
            given[f.name] = config_from_args(nested, args)
        elif hasattr(args, f.name):
            given[f.name] = getattr(args, f.name)
    return config_class(**{**given, **values})


def _config(args, **values):
    from lstv.config import COMMAND_CONFIGS

    return config_from_args(COMMAND_CONFIGS[args.command], args, **values)


def cmd_infer(args) -> int:
    from lstv.pipeline import run_inference

    config = _config(args, visualize=args.mode == "debug", command=args.command_line)
    s = run_inference(config)
    print(
        f"{s.n_completed} of {s.n_selected} studies done ({s.n_skipped} from an earlier run), "
        f"{s.n_failed} failed; results in {s.output_dir}"
    )
    if not s.validation_filter:
        print("WARNING: validation filter was off (no valid_id.npy): every study ran.")
    return 0


def cmd_report(args) -> int:
    from lstv.audit import write_audit_queue
    from lstv.report import build_report
    from lstv.rundir import AUDIT_QUEUE_CSV, RunDir
    from lstv.uncertainty import resolve_thresholds

    config = _config(args)
    # The bands the run used (its manifest), unless the command line says otherwise.
    recorded = RunDir(Path(config.csv).parent).run_thresholds()
    overrides = config.threshold_overrides.given()
    thresholds = resolve_thresholds(recorded, source="the run's manifest", **overrides)
    path = build_report(
        config.csv,
        config.output,
        labels_path=config.labels,
        data_dir=config.data_dir,
        top_n=config.top_n,
        thresholds=thresholds,
    )
    queue = write_audit_queue(
        config.csv,
        Path(config.output).with_name(AUDIT_QUEUE_CSV),
        n=config.audit_n,
        thresholds=thresholds,
    )
    print(f"report: {path}\naudit queue: {queue}")
    return 0


def cmd_evaluate(args) -> int:
    from lstv.evaluate import evaluate

    c = _config(args)
    result = evaluate(
        c.csv,
        c.labels,
        c.output_dir,
        n_bootstrap=c.n_bootstrap,
        seed=c.seed,
        fixed_threshold=c.fixed_threshold,
    )
    print(f"evaluation of {result.get('n_studies', '?')} studies written to {c.output_dir}")
    return 0


def cmd_merge(args) -> int:
    from lstv.merge import merge_shards

    c = _config(args)
    shards = sorted(p for p in Path(c.shards_dir).glob("part_*") if p.is_dir())
    merged = merge_shards(shards, c.output_dir, expected_parts=c.num_parts)
    print(
        f"merged {len(shards)} shards into {c.output_dir}: {merged['n_completed']} studies, "
        f"{merged['n_failed']} failed"
    )
    return 0


def cmd_phantom(args) -> int:
    from lstv.phantom import write_phantom_dataset

    c = _config(args)
    ds = write_phantom_dataset(
        c.output_dir,
        n_studies=c.n_studies,
        lstv_fraction=c.lstv_fraction,
        seed=c.seed,
        valid_fraction=c.valid_fraction,
        progress=not c.quiet,
        workers=c.workers,
    )
    print(f"{len(ds.study_ids)} phantom studies ({len(ds.valid_ids)} held out) in {ds.root}")
    if c.layout == "hospital":
        from lstv.phantom.hospital import write_hospital_export

        export = write_hospital_export(ds.root, c.output_dir)
        print(f"hospital-style export: {export.root} (labels: {export.labels_csv})")
    return 0


def cmd_train(args) -> int:
    from lstv.train import train

    result = train(_config(args))
    print(f"checkpoint: {result.checkpoint}")
    print(result.summary())
    return 0


def cmd_demo(args) -> int:
    from lstv.demo import run_demo

    result = run_demo(_config(args))
    print(result.summary())
    return 0


def cmd_serve(args) -> int:
    from lstv.api import load_model
    from lstv.web import create_app

    config = _config(args)
    app = create_app(
        load_model(config.checkpoint, config.device),
        config.max_upload_mb,
        reference=config.reference,
    )
    print(f"serving on http://{config.host}:{config.port}/ (Ctrl-C to stop)")
    app.run(host=config.host, port=config.port)
    return 0


def cmd_slurm(args) -> int:
    from lstv.download import DownloadError
    from lstv.slurm import SlurmError, run_step

    c = _config(args)
    try:
        lines = run_step(c.step, c.operands, skip_download=c.skip_download)
    except (SlurmError, DownloadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


def cmd_review(args) -> int:
    from lstv.web.review import create_review_app

    c = _config(args)
    app = create_review_app(c.run_dir, c.data_dir, c.reviewer, c.blind)
    # Patient images: this machine only, never a public address.
    print(f"reviewing {c.run_dir} on http://127.0.0.1:{c.port}/ (Ctrl-C to stop)")
    app.run(host="127.0.0.1", port=c.port)
    return 0


def cmd_index(args) -> int:
    from lstv.index import build_index

    c = _config(args)
    result = build_index(c.input_dir, c.output, num_workers=c.num_workers, progress=not c.quiet)
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(result.skipped.items()))
    folders = result.unreadable_text()
    print(
        f"{len(result.rows)} series of {result.n_studies} studies ({result.n_instances} "
        f"instances of {result.n_files} files{'; skipped ' + skipped if skipped else ''}"
        f"{'; ' + folders if folders else ''}) in {c.output}"
    )
    return 0


def cmd_calibrate(args) -> int:
    from lstv.calibrate import calibrate

    c = _config(args)
    ref = calibrate(c.csv, c.output, c.labels, c.target_specificity, c.rule)
    print(
        f"reference of {ref.n} studies ({ref.reference_studies}) written to {c.output}; "
        f"flag above {ref.threshold:.3f} ({ref.threshold_rule})"
    )
    return 0


def cmd_score(args) -> int:
    from lstv.scoring import rescore_run

    c = _config(args)
    r = rescore_run(c.csv, c.reference)
    print(
        f"{r['n_scored']} of {r['n_rows']} studies scored, {r['n_flagged']} flagged "
        f"(lstv_score > {r['threshold']:.3f}); {c.csv} updated"
    )
    if r["drift"]["verdict"] != "none":
        print(f"drift ({r['drift']['verdict']}): {r['drift']['note']}")
    return 0


# The commands in the order --help lists them: what runs each, and its one-line help; the flags
# of each come from its config class (lstv.config.COMMAND_CONFIGS).
COMMANDS = {
    "index": (cmd_index, "index any DICOM export into a series CSV"),
    "infer": (cmd_infer, "run the localizer over studies, write the CSV"),
    "report": (cmd_report, "HTML report and audit queue from a metrics CSV"),
    "evaluate": (cmd_evaluate, "ROC analysis against expert labels"),
    "calibrate": (cmd_calibrate, "fit the LSTV score on normal studies"),
    "score": (cmd_score, "(re)write a finished run's LSTV score columns"),
    "merge": (cmd_merge, "join the outputs of sharded runs"),
    "phantom": (cmd_phantom, "write synthetic RSNA-layout DICOM studies"),
    "train": (cmd_train, "train a localizer on normal phantoms"),
    "demo": (cmd_demo, "phantoms -> infer -> report -> evaluate, end to end"),
    "serve": (cmd_serve, "web demo: upload one series, see its heatmaps"),
    "review": (cmd_review, "label a run's audit queue, one key per study"),
    "slurm": (cmd_slurm, "the steps of the sbatch scripts in slurm_scripts/"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lstv",
        description="Zero-shot LSTV screening from the uncertainty of a disc-level localizer.",
    )
    from lstv import __version__

    parser.add_argument("--version", action="version", version=f"lstv {__version__}")
    from lstv.config import COMMAND_CONFIGS

    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (func, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_flags(p, COMMAND_CONFIGS[name])
        p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
        p.add_argument("--verbose", action="store_true", help="debug logging")
        p.set_defaults(func=func)
    return parser


def configure_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    """Run one command; ``argv`` (default ``sys.argv[1:]``) is what the manifest records."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["lstv", *argv])
    configure_logging(args.quiet, args.verbose)
    log.debug("timeline: lstv %s starts", args.command)
    try:
        return args.func(args)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 128 + int(signum)
    except Exception as exc:
        if is_usage_error(exc):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(exc, OSError):  # disk full, read-only folder: what was written is whole
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_IO
        log.error("internal error in lstv %s", args.command, exc_info=exc)
        print(
            f"error: internal error ({type(exc).__name__}: {exc}); this is a bug in lstv, "
            "not in what you gave it: the traceback is in the log above",
            file=sys.stderr,
        )
        return EXIT_BUG


def run() -> None:
    """``lstv`` as a command (the console script and ``python -m lstv``): :func:`main`, then the
    process ends. Once torch is loaded it ends without the interpreter's teardown, which frees
    every module and unloads torch's libraries: 0.8-1.2 s of a loaded 2-core machine after the
    last output was written, for nothing (issue 22's start-up).

    The fast exit is an ordinary exit handler (:func:`atexit.register`) registered before the
    command runs, so it runs last: after the threads are joined and after every handler
    registered during the command (temporary folders, process pools); it then shuts logging
    down (flushing and closing every handler), flushes the standard streams and ends the
    process with :func:`os._exit`. What lstv writes is whole and synced before :func:`main`
    returns."""
    import atexit

    code: list[int] = []  # main's exit code, once it has returned
    atexit.register(_exit_without_teardown, code)
    code.append(main())
    sys.exit(code[0])


def _exit_without_teardown(code: list[int]) -> None:
    """The last exit handler: where torch was loaded, end now instead of tearing down."""
    if not code or "torch" not in sys.modules:
        return  # main did not return (--help, an uncaught error), or no torch: the usual exit
    import contextlib
    import os

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe
            stream.flush()
    os._exit(code[0])


def is_usage_error(exc: BaseException) -> bool:
    """The user's mistake rather than a bug: a :class:`lstv.errors.UsageError` (checkpoints,
    a busy output folder, bad settings, files and what they hold), a missing file or a malformed
    CSV. Any other ValueError, lstv's own included, is a bug: exit 1 with its traceback."""
    from lstv.errors import UsageError

    return isinstance(exc, UsageError | FileNotFoundError | csv.Error)


if __name__ == "__main__":
    run()
