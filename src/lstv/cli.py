"""``lstv`` command line. Thin: parse flags, call one library function, map errors to exit codes.

Imports of the library (and so of torch) happen inside each command, so ``lstv --help`` is quick.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

EXIT_USAGE = 2

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


def _threshold_overrides(args) -> dict:
    return {
        "flag_entropy": args.flag_threshold,
        "high_entropy": args.high_threshold,
        "medium_entropy": args.medium_threshold,
    }


def _add_infer_flags(p: argparse.ArgumentParser) -> None:
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
        default=Path("models/point_net_checkpoint.pth"),
        help="point-net checkpoint (default: the real hengck23 model)",
    )
    p.add_argument(
        "--valid_ids",
        type=Path,
        default=Path("models/valid_id.npy"),
        help="hold-out study IDs; without the file every study runs (with a warning)",
    )
    p.add_argument("--mode", choices=("trial", "debug", "prod"), default="trial")
    p.add_argument("--n_trial", type=int, default=10, help="studies in trial mode (default 10)")
    p.add_argument("--seed", type=int, default=42, help="trial sampling seed (default 42)")
    p.add_argument(
        "--debug_study_id",
        type=int,
        default=None,
        help="study for debug mode (default: the first selected)",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--num_workers", type=int, default=2, help="DICOM reader processes")
    p.add_argument("--num_parts", type=int, default=1, help="split the studies into N shards")
    p.add_argument("--part_id", type=int, default=0, help="which shard to run (0-based)")
    p.add_argument("--image_size", type=int, default=160)
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
    _add_threshold_flags(p)


def cmd_infer(args) -> int:
    from lstv.pipeline import InferenceConfig, run_inference

    config = InferenceConfig(
        input_dir=args.input_dir,
        series_csv=args.series_csv,
        output_dir=args.output_dir,
        checkpoint=args.checkpoint,
        valid_ids=args.valid_ids,
        mode=args.mode,
        n_trial=args.n_trial,
        seed=args.seed,
        debug_study_id=args.debug_study_id,
        device=args.device,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        num_parts=args.num_parts,
        part_id=args.part_id,
        image_size=args.image_size,
        save_heatmaps=args.save_heatmaps,
        tta=args.tta,
        visualize=args.mode == "debug",
        threshold_overrides=_threshold_overrides(args),
        quiet=args.quiet,
        command=shlex.join(["lstv", *sys.argv[1:]]),
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
    from lstv.results import run_thresholds
    from lstv.uncertainty import resolve_thresholds

    # The bands the run used (its manifest), unless the command line says otherwise.
    thresholds = resolve_thresholds(
        run_thresholds(Path(args.csv).parent), **_threshold_overrides(args)
    )
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
        Path(args.output).with_name("audit_queue.csv"),
        n=args.audit_n,
        thresholds=thresholds,
    )
    print(f"report: {path}\naudit queue: {queue}")
    return 0


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
    p.add_argument("--fixed_threshold", type=float, default=5.0)


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


def cmd_phantom(args) -> int:
    from lstv.phantom import write_phantom_dataset

    ds = write_phantom_dataset(
        args.output_dir,
        n_studies=args.n_studies,
        lstv_fraction=args.lstv_fraction,
        seed=args.seed,
        valid_fraction=args.valid_fraction,
        progress=not args.quiet,
    )
    print(f"{len(ds.study_ids)} phantom studies ({len(ds.valid_ids)} held out) in {ds.root}")
    return 0


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data_dir", type=Path, required=True, help="RSNA-layout folder (e.g. from lstv phantom)"
    )
    p.add_argument("--output", type=Path, required=True, help="checkpoint to write")
    p.add_argument("--encoder", default="resnet10t")
    p.add_argument("--image_size", type=int, default=160)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch_size", type=int, default=12)
    p.add_argument("--lr", type=float, default=2e-3, help="peak of the one-cycle schedule")
    p.add_argument(
        "--background_weight",
        type=float,
        default=0.05,
        help="cross-entropy weight of the background class (discs weigh 1)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--disc_radius_mm",
        type=float,
        default=5.0,
        help="radius of the disc-shaped class mask around each label (default 5 mm)",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--num_workers", type=int, default=2)


def cmd_train(args) -> int:
    from lstv.train import TrainConfig, train

    result = train(
        TrainConfig(
            data_dir=args.data_dir,
            output=args.output,
            encoder=args.encoder,
            image_size=args.image_size,
            steps=args.steps,
            background_weight=args.background_weight,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            disc_radius_mm=args.disc_radius_mm,
            device=args.device,
            num_workers=args.num_workers,
            quiet=args.quiet,
        )
    )
    print(f"checkpoint: {result.checkpoint}")
    print(result.summary())
    return 0


def _add_demo_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output_dir", type=Path, default=Path("data/output/demo"))
    p.add_argument("--n_studies", type=int, default=40)
    p.add_argument("--lstv_fraction", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="default: models/phantom_point_net.pth shipped with the project",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def cmd_demo(args) -> int:
    from lstv.demo import run_demo

    result = run_demo(
        args.output_dir,
        n_studies=args.n_studies,
        lstv_fraction=args.lstv_fraction,
        seed=args.seed,
        checkpoint=args.checkpoint,
        device=args.device,
        quiet=args.quiet,
    )
    print(result.summary())
    return 0


def _add_serve_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, default=Path("models/phantom_point_net.pth"))
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--max_upload_mb", type=int, default=200)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def cmd_serve(args) -> int:
    from lstv.api import load_model
    from lstv.web import create_app

    app = create_app(load_model(args.checkpoint, args.device), args.max_upload_mb)
    print(f"serving on http://{args.host}:{args.port}/ (Ctrl-C to stop)")
    app.run(host=args.host, port=args.port)
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


COMMANDS = {
    "infer": (_add_infer_flags, cmd_infer, "run the localizer over studies, write the CSV"),
    "report": (_add_report_flags, cmd_report, "HTML report and audit queue from a metrics CSV"),
    "evaluate": (_add_evaluate_flags, cmd_evaluate, "ROC analysis against expert labels"),
    "merge": (_add_merge_flags, cmd_merge, "join the outputs of sharded runs"),
    "phantom": (_add_phantom_flags, cmd_phantom, "write synthetic RSNA-layout DICOM studies"),
    "train": (_add_train_flags, cmd_train, "train a localizer on normal phantoms"),
    "demo": (_add_demo_flags, cmd_demo, "phantoms -> infer -> report -> evaluate, end to end"),
    "serve": (_add_serve_flags, cmd_serve, "web demo: upload one series, see its heatmaps"),
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
    args = build_parser().parse_args(argv)
    configure_logging(args.quiet, args.verbose)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as exc:  # includes checkpoint and series errors
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
