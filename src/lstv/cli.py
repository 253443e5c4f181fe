"""``lstv`` command line. Thin: parse flags, call one library function, map errors to exit codes.

Imports of the library (and so of torch) happen inside each command, so ``lstv --help`` is quick.
"""

from __future__ import annotations

import argparse
import csv
import logging
import shlex
import signal
import sys
from pathlib import Path

EXIT_USAGE = 2
EXIT_IO = 1

log = logging.getLogger("lstv")


def _add_threshold_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--flag_threshold",
        type=float,
        default=None,
        help="L5/S1 entropy above which a study is flagged (default: the bands of the "
        "checkpoint or run, else 5.0)",
    )
    p.add_argument(
        "--high_threshold",
        type=float,
        default=None,
        help="L5/S1 entropy above which risk is High (default: likewise, else 5.5)",
    )
    p.add_argument(
        "--medium_threshold",
        type=float,
        default=None,
        help="L5/S1 entropy at or above which risk is Medium (default: likewise, else 4.0)",
    )


def _threshold_overrides(args):
    from lstv.config import ThresholdOverrides

    return ThresholdOverrides(
        flag_entropy=args.flag_threshold,
        high_entropy=args.high_threshold,
        medium_entropy=args.medium_threshold,
    )


def _add_infer_flags(p: argparse.ArgumentParser) -> None:
    from lstv.config import DEVICES, MODES, InferenceConfig, default

    def d(name):
        return default(InferenceConfig, name)

    p.add_argument(
        "--input_dir",
        type=Path,
        required=True,
        help="folder of studies: {study_id}/{series_id}/{instance}.dcm",
    )
    p.add_argument(
        "--series_csv",
        type=Path,
        required=True,
        help="train_series_descriptions.csv (study_id, series_id, series_description)",
    )
    p.add_argument("--output_dir", type=Path, required=True)
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=d("checkpoint"),
        help=f"point-net checkpoint (default {d('checkpoint')}: the real hengck23 model)",
    )
    p.add_argument(
        "--valid_ids",
        type=Path,
        default=d("valid_ids"),
        help="hold-out study IDs; without the file every study runs (with a warning)",
    )
    p.add_argument("--mode", choices=MODES, default=d("mode"))
    p.add_argument(
        "--n_trial", type=int, default=d("n_trial"), help=f"studies in trial mode ({d('n_trial')})"
    )
    p.add_argument("--seed", type=int, default=d("seed"), help=f"trial sampling seed ({d('seed')})")
    p.add_argument(
        "--debug_study_id",
        type=int,
        default=d("debug_study_id"),
        help="study for debug mode (default: the first selected)",
    )
    p.add_argument("--device", choices=DEVICES, default=d("device"))
    p.add_argument("--batch_size", type=int, default=d("batch_size"))
    p.add_argument(
        "--num_workers", type=int, default=d("num_workers"), help="DICOM reader processes"
    )
    p.add_argument(
        "--num_parts", type=int, default=d("num_parts"), help="split the studies into N shards"
    )
    p.add_argument("--part_id", type=int, default=d("part_id"), help="which shard to run (0-based)")
    p.add_argument("--image_size", type=int, default=d("image_size"))
    p.add_argument(
        "--save_heatmaps",
        action="store_true",
        help="write heatmaps/{study_id}.npz with the probability maps",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="test-time shifted views: adds per-level mutual information ({level}_tta_mi)",
    )
    p.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="score reference JSON (lstv calibrate) of this checkpoint: adds lstv_score, "
        "lstv_score_driver, lstv_score_flag (default: the checkpoint's own, if it carries one)",
    )
    _add_threshold_flags(p)


def cmd_infer(args) -> int:
    from lstv.config import InferenceConfig, from_namespace
    from lstv.pipeline import run_inference

    config = from_namespace(
        InferenceConfig,
        args,
        visualize=args.mode == "debug",
        threshold_overrides=_threshold_overrides(args),
        command=args.command_line,
    )
    s = run_inference(config)
    print(
        f"{s.n_completed} of {s.n_selected} studies done ({s.n_skipped} from an earlier run), "
        f"{s.n_failed} failed; results in {s.output_dir}"
    )
    if not s.validation_filter:
        print("WARNING: validation filter was off (no valid_id.npy): every study ran.")
    return 0


def _add_report_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", type=Path, required=True, help="lstv_uncertainty_metrics.csv")
    p.add_argument("--output", type=Path, required=True, help="HTML file to write")
    p.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="CSV with study_id, lstv (and optionally lstv_type): adds the ROC section",
    )
    p.add_argument(
        "--data_dir",
        type=Path,
        default=None,
        help="train_images folder: candidate thumbnails from the original DICOM slice",
    )
    p.add_argument("--top_n", type=int, default=20, help="candidates shown (default 20)")
    p.add_argument(
        "--audit_n", type=int, default=60, help="studies in audit_queue.csv (default 60)"
    )
    _add_threshold_flags(p)


def cmd_report(args) -> int:
    from lstv.audit import write_audit_queue
    from lstv.report import build_report
    from lstv.rundir import AUDIT_QUEUE_CSV

    thresholds = _run_bands(args)
    path = build_report(
        args.csv,
        args.output,
        labels_path=args.labels,
        data_dir=args.data_dir,
        top_n=args.top_n,
        thresholds=thresholds,
    )
    queue = write_audit_queue(
        args.csv,
        Path(args.output).with_name(AUDIT_QUEUE_CSV),
        n=args.audit_n,
        thresholds=thresholds,
    )
    print(f"report: {path}\naudit queue: {queue}")
    return 0


def _run_bands(args):
    """The bands the run used (its manifest), unless the command line says otherwise."""
    from lstv.rundir import RunDir
    from lstv.uncertainty import resolve_thresholds

    recorded = RunDir(Path(args.csv).parent).run_thresholds()
    overrides = _threshold_overrides(args).given()
    return resolve_thresholds(recorded, source="the run's manifest", **overrides)


def _add_evaluate_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", type=Path, required=True)
    p.add_argument(
        "--labels",
        type=Path,
        required=True,
        help="CSV with study_id, lstv (0/1) and optionally lstv_type",
    )
    p.add_argument("--output_dir", type=Path, required=True)
    p.add_argument("--n_bootstrap", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--fixed_threshold",
        type=float,
        default=None,
        help="L5/S1 entropy cut for sensitivity/specificity (default: the run's flag "
        "threshold from its manifest, else 5.0)",
    )


def cmd_evaluate(args) -> int:
    from lstv.evaluate import evaluate

    result = evaluate(
        args.csv,
        args.labels,
        args.output_dir,
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
        fixed_threshold=args.fixed_threshold,
    )
    print(f"evaluation of {result.get('n_studies', '?')} studies written to {args.output_dir}")
    return 0


def _add_merge_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shards_dir",
        type=Path,
        required=True,
        help="folder holding one part_* output folder per shard",
    )
    p.add_argument("--output_dir", type=Path, required=True)
    p.add_argument(
        "--num_parts",
        type=int,
        default=None,
        help="shards expected (default: from the shards' manifests)",
    )


def cmd_merge(args) -> int:
    from lstv.merge import merge_shards

    shards = sorted(p for p in Path(args.shards_dir).glob("part_*") if p.is_dir())
    merged = merge_shards(shards, args.output_dir, expected_parts=args.num_parts)
    print(
        f"merged {len(shards)} shards into {args.output_dir}: {merged['n_completed']} studies, "
        f"{merged['n_failed']} failed"
    )
    return 0


def _add_phantom_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output_dir", type=Path, required=True)
    p.add_argument("--n_studies", type=int, default=20)
    p.add_argument("--lstv_fraction", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--valid_fraction",
        type=float,
        default=0.25,
        help="share of studies held out in valid_id.npy (default 0.25)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes writing studies in parallel; the files are the same for any count",
    )
    p.add_argument(
        "--layout",
        choices=("rsna", "hospital"),
        default="rsna",
        help="hospital: also copy the studies into hospital_export/ (nested folders, no "
        "extensions, DICOMDIR, vendor descriptions, one Enhanced MR) for lstv index",
    )


def cmd_phantom(args) -> int:
    from lstv.phantom import write_phantom_dataset

    ds = write_phantom_dataset(
        args.output_dir,
        n_studies=args.n_studies,
        lstv_fraction=args.lstv_fraction,
        seed=args.seed,
        valid_fraction=args.valid_fraction,
        progress=not args.quiet,
        workers=args.workers,
    )
    print(f"{len(ds.study_ids)} phantom studies ({len(ds.valid_ids)} held out) in {ds.root}")
    if args.layout == "hospital":
        from lstv.phantom.hospital import write_hospital_export

        export = write_hospital_export(ds.root, args.output_dir)
        print(f"hospital-style export: {export.root} (labels: {export.labels_csv})")
    return 0


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    from lstv.config import DEVICES, TrainConfig, default

    def d(name):
        return default(TrainConfig, name)

    p.add_argument(
        "--data_dir", type=Path, required=True, help="RSNA-layout folder (e.g. from lstv phantom)"
    )
    p.add_argument("--output", type=Path, required=True, help="checkpoint to write")
    p.add_argument("--encoder", default=d("encoder"))
    p.add_argument("--image_size", type=int, default=d("image_size"))
    p.add_argument("--steps", type=int, default=d("steps"))
    p.add_argument("--batch_size", type=int, default=d("batch_size"))
    p.add_argument("--lr", type=float, default=d("lr"), help="peak of the one-cycle schedule")
    p.add_argument(
        "--background_weight",
        type=float,
        default=d("background_weight"),
        help="cross-entropy weight of the background class (discs weigh 1)",
    )
    p.add_argument("--seed", type=int, default=d("seed"))
    p.add_argument(
        "--disc_radius_mm",
        type=float,
        default=d("disc_radius_mm"),
        help="radius of the disc-shaped class mask around each label (default 5 mm)",
    )
    p.add_argument("--device", choices=DEVICES, default=d("device"))
    p.add_argument("--num_workers", type=int, default=d("num_workers"))
    p.add_argument(
        "--init_from",
        type=Path,
        default=d("init_from"),
        help="start from the weights of this checkpoint (same encoder): fine-tuning",
    )


def cmd_train(args) -> int:
    from lstv.config import TrainConfig, from_namespace
    from lstv.train import train

    result = train(from_namespace(TrainConfig, args))
    print(f"checkpoint: {result.checkpoint}")
    print(result.summary())
    return 0


def _add_demo_flags(p: argparse.ArgumentParser) -> None:
    from lstv.config import DEVICES, DemoConfig, default

    def d(name):
        return default(DemoConfig, name)

    p.add_argument("--output_dir", type=Path, default=d("output_dir"))
    p.add_argument("--n_studies", type=int, default=d("n_studies"))
    p.add_argument("--lstv_fraction", type=float, default=d("lstv_fraction"))
    p.add_argument("--seed", type=int, default=d("seed"))
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=d("checkpoint"),
        help="default: models/phantom_point_net.pth shipped with the project",
    )
    p.add_argument("--device", choices=DEVICES, default=d("device"))


def cmd_demo(args) -> int:
    from lstv.config import DemoConfig, from_namespace
    from lstv.demo import run_demo

    result = run_demo(from_namespace(DemoConfig, args))
    print(result.summary())
    return 0


def _add_serve_flags(p: argparse.ArgumentParser) -> None:
    from lstv.config import DEVICES, ServeConfig, default

    def d(name):
        return default(ServeConfig, name)

    p.add_argument("--checkpoint", type=Path, default=d("checkpoint"))
    p.add_argument(
        "--host", default=d("host"), help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=d("port"))
    p.add_argument("--max_upload_mb", type=int, default=d("max_upload_mb"))
    p.add_argument("--device", choices=DEVICES, default=d("device"))
    p.add_argument(
        "--reference",
        type=Path,
        default=d("reference"),
        help="score reference JSON of this checkpoint (lstv calibrate); default: its own",
    )


def cmd_serve(args) -> int:
    from lstv.api import load_model
    from lstv.config import ServeConfig, from_namespace
    from lstv.web import create_app

    config = from_namespace(ServeConfig, args)
    app = create_app(
        load_model(config.checkpoint, config.device),
        config.max_upload_mb,
        reference=config.reference,
    )
    print(f"serving on http://{config.host}:{config.port}/ (Ctrl-C to stop)")
    app.run(host=config.host, port=config.port)
    return 0


def _add_review_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="an lstv infer output folder")
    p.add_argument(
        "--data_dir", type=Path, help="where its DICOM lies; default: the run's input folder"
    )
    p.add_argument("--reviewer", default="", help="name written in the reviewer column")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--blind", action="store_true", help="hide the score until a verdict")


def cmd_review(args) -> int:
    from lstv.web.review import create_review_app

    app = create_review_app(args.run_dir, args.data_dir, args.reviewer, args.blind)
    # Patient images: this machine only, never a public address.
    print(f"reviewing {args.run_dir} on http://127.0.0.1:{args.port}/ (Ctrl-C to stop)")
    app.run(host="127.0.0.1", port=args.port)
    return 0


def _add_slurm_flags(p: argparse.ArgumentParser) -> None:
    from lstv.slurm import STEPS  # standard library only: --help stays quick

    p.add_argument("step", choices=STEPS, help="what the sbatch script of that name does")
    p.add_argument(
        "operands",
        nargs="*",
        metavar="ARG",
        help="debug: the study ID (else LSTV_DEBUG_STUDY_ID); check_model: CHECKPOINT VALID_IDS",
    )
    p.add_argument(
        "--skip_download",
        action="store_true",
        help="master: submit without the downloads (as LSTV_SKIP_DOWNLOAD=1)",
    )


def cmd_slurm(args) -> int:
    from lstv.download import DownloadError
    from lstv.slurm import SlurmError, run_step

    try:
        lines = run_step(args.step, args.operands, skip_download=args.skip_download)
    except (SlurmError, DownloadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


def _add_index_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--input_dir",
        type=Path,
        required=True,
        help="a DICOM export: any folders, any file names (a DICOMDIR is used when present)",
    )
    p.add_argument(
        "--output",
        type=Path,
        required=True,
        help="series CSV to write (for lstv infer --series_csv); never a file of the export",
    )
    p.add_argument(
        "--num_workers",
        type=int,
        default=None,
        help="header-reading processes (default: the CPU count, at most 8)",
    )


def cmd_index(args) -> int:
    from lstv.index import build_index

    result = build_index(
        args.input_dir, args.output, num_workers=args.num_workers, progress=not args.quiet
    )
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(result.skipped.items()))
    folders = result.unreadable_text()
    print(
        f"{len(result.rows)} series of {result.n_studies} studies ({result.n_instances} "
        f"instances of {result.n_files} files{'; skipped ' + skipped if skipped else ''}"
        f"{'; ' + folders if folders else ''}) in {args.output}"
    )
    return 0


def _add_calibrate_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", type=Path, required=True, help="a run's lstv_uncertainty_metrics.csv")
    p.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="study_id, lstv[, lstv_type] (a filled-in audit_queue.csv works): the reference "
        "is the studies labelled normal; without it, all studies (with a warning)",
    )
    p.add_argument(
        "--target_specificity",
        type=float,
        default=0.95,
        help="flag threshold at this quantile of the reference's leave-one-out scores "
        "(default 0.95: about 1 normal study in 20 goes to review by design; 1 = their maximum)",
    )
    p.add_argument(
        "--rule",
        choices=("mahalanobis", "max_abs_z"),
        default="mahalanobis",
        help="mahalanobis (score v2: robust Mahalanobis distance of map and geometry features) "
        "or max_abs_z (score v1: largest robust |z| of ten map features)",
    )
    p.add_argument("--output", type=Path, required=True, help="reference JSON to write")


def cmd_calibrate(args) -> int:
    from lstv.calibrate import calibrate

    ref = calibrate(args.csv, args.output, args.labels, args.target_specificity, args.rule)
    print(
        f"reference of {ref.n} studies ({ref.reference_studies}) written to {args.output}; "
        f"flag above {ref.threshold:.3f} ({ref.threshold_rule})"
    )
    return 0


def _add_score_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--csv",
        type=Path,
        required=True,
        help="a finished run's lstv_uncertainty_metrics.csv: its score columns are rewritten",
    )
    p.add_argument(
        "--reference",
        type=Path,
        required=True,
        help="reference JSON from lstv calibrate (or a checkpoint that carries one), fitted "
        "on the same checkpoint as the run",
    )


def cmd_score(args) -> int:
    from lstv.scoring import rescore_run

    r = rescore_run(args.csv, args.reference)
    print(
        f"{r['n_scored']} of {r['n_rows']} studies scored, {r['n_flagged']} flagged "
        f"(lstv_score > {r['threshold']:.3f}); {args.csv} updated"
    )
    if r["drift"].get("drift"):
        print(f"drift: {r['drift']['note']}")
    return 0


COMMANDS = {
    "index": (_add_index_flags, cmd_index, "index any DICOM export into a series CSV"),
    "infer": (_add_infer_flags, cmd_infer, "run the localizer over studies, write the CSV"),
    "report": (_add_report_flags, cmd_report, "HTML report and audit queue from a metrics CSV"),
    "evaluate": (_add_evaluate_flags, cmd_evaluate, "ROC analysis against expert labels"),
    "calibrate": (_add_calibrate_flags, cmd_calibrate, "fit the LSTV score on normal studies"),
    "score": (_add_score_flags, cmd_score, "(re)write a finished run's LSTV score columns"),
    "merge": (_add_merge_flags, cmd_merge, "join the outputs of sharded runs"),
    "phantom": (_add_phantom_flags, cmd_phantom, "write synthetic RSNA-layout DICOM studies"),
    "train": (_add_train_flags, cmd_train, "train a localizer on normal phantoms"),
    "demo": (_add_demo_flags, cmd_demo, "phantoms -> infer -> report -> evaluate, end to end"),
    "serve": (_add_serve_flags, cmd_serve, "web demo: upload one series, see its heatmaps"),
    "review": (_add_review_flags, cmd_review, "label a run's audit queue, one key per study"),
    "slurm": (_add_slurm_flags, cmd_slurm, "the steps of the sbatch scripts in slurm_scripts/"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lstv",
        description="Zero-shot LSTV screening from the uncertainty of a disc-level localizer.",
    )
    from lstv import __version__

    parser.add_argument("--version", action="version", version=f"lstv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_flags, func, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_flags(p)
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
    from lstv.errors import RunDirBusyError

    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, csv.Error, RunDirBusyError) as exc:  # incl. checkpoints
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # disk full, read-only folder: what was written before is whole
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_IO
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 128 + int(signum)


if __name__ == "__main__":
    sys.exit(main())
