"""``lstv demo``: the whole method on held-out phantoms with the shipped localizer, one command.

Phantoms (normal and transitional) -> ``lstv infer`` -> report, audit queue and ROC evaluation
against the phantoms' known labels. Phantoms test the software and the method's mechanics, not
its clinical accuracy.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from lstv.config import DemoConfig
from lstv.rundir import RunDir

log = logging.getLogger(__name__)

# The seed's score, then the scores the phantom benchmark found to carry the signal, then the
# calibrated score (when the checkpoint carries a reference).
DEMO_SCORES = ("l5_s1_entropy", "l5_s1_one_minus_confidence", "l5_s1_tta_mi", "lstv_score")

SHIPPED_CHECKPOINT = Path("models") / "phantom_point_net.pth"


def shipped_checkpoint() -> Path:
    """The phantom localizer: in the project folder we run from (a container binds it at
    /work), else beside the source tree of an editable install."""
    if SHIPPED_CHECKPOINT.is_file():
        return SHIPPED_CHECKPOINT
    return Path(__file__).resolve().parents[2] / SHIPPED_CHECKPOINT


@dataclass
class DemoResult:
    output_dir: Path
    metrics_csv: Path
    n_studies: int
    n_completed: int
    n_failed: int
    outputs: dict[str, Path] = field(default_factory=dict)
    aucs: dict[str, dict[str, float | None]] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [
            f"demo: {self.n_completed} of {self.n_studies} phantom studies analysed "
            f"({self.n_failed} failed) in {self.seconds:.0f} s",
            f"  metrics CSV: {self.metrics_csv}",
        ]
        lines += [f"  {name}: {path}" for name, path in self.outputs.items()]
        if self.aucs:
            groups = list(next(iter(self.aucs.values())))
            lines.append("  ROC AUC against normal: " + ", ".join(groups))
            for score, by_group in self.aucs.items():
                cells = ", ".join("n/a" if v is None else f"{v:.2f}" for v in by_group.values())
                lines.append(f"    {score}: {cells}")
        return "\n".join(lines)


def run_demo(config: DemoConfig | None = None, **settings) -> DemoResult:
    """Phantoms -> infer -> report, audit queue and evaluation, in ``config.output_dir``.

    Args:
        config: the demo's settings; or give them as keywords (``output_dir=...``).
    """
    from lstv.config import InferenceConfig
    from lstv.phantom import write_phantom_dataset
    from lstv.pipeline import run_inference

    config = config or DemoConfig(**settings)
    started = time.perf_counter()
    run_dir = RunDir(config.output_dir)
    checkpoint = Path(config.checkpoint) if config.checkpoint else shipped_checkpoint()
    if not checkpoint.is_file():
        from lstv.errors import CheckpointNotFoundError

        raise CheckpointNotFoundError(
            f"demo checkpoint not found: {checkpoint}. It ships with the repository "
            "(models/phantom_point_net.pth); models/README.md has the command that trains it."
        )
    data = write_phantom_dataset(
        run_dir.path / "phantoms",
        n_studies=config.n_studies,
        lstv_fraction=config.lstv_fraction,
        seed=config.seed,
        valid_fraction=1.0,
        progress=not config.quiet,
    )
    run = run_inference(
        InferenceConfig(
            input_dir=data.images_dir,
            series_csv=data.series_csv,
            output_dir=run_dir.path,
            checkpoint=checkpoint,
            valid_ids=data.valid_ids_path,
            mode="prod",
            device=config.device,
            save_heatmaps=True,
            tta=True,
            quiet=config.quiet,
            command=f"lstv demo --output_dir {run_dir.path}",
        )
    )
    result = DemoResult(
        run_dir.path, run_dir.metrics_csv, run.n_selected, run.n_completed, run.n_failed
    )
    _report_and_evaluate(result, run_dir, data)
    result.seconds = time.perf_counter() - started
    return result


def _report_and_evaluate(result: DemoResult, run_dir: RunDir, data) -> None:
    from lstv.audit import write_audit_queue
    from lstv.evaluate import evaluate
    from lstv.report import build_report
    from lstv.uncertainty import resolve_thresholds

    # The run's own bands (the checkpoint's), as lstv report and lstv evaluate use them.
    thresholds = resolve_thresholds(run_dir.run_thresholds())
    evaluation = evaluate(run_dir.metrics_csv, data.lstv_labels_csv, run_dir.evaluation)
    result.outputs["evaluation"] = run_dir.evaluation / "evaluation.json"
    result.aucs = {
        score: _aucs(evaluation, score)
        for score in DEMO_SCORES
        if any(score in g["scores"] for g in evaluation["groups"].values())
    }
    result.outputs["report"] = build_report(
        run_dir.metrics_csv,
        run_dir.report_html,
        labels_path=data.lstv_labels_csv,
        data_dir=data.images_dir,
        thresholds=thresholds,
    )
    result.outputs["audit queue"] = write_audit_queue(
        run_dir.metrics_csv, run_dir.audit_queue_csv, thresholds=thresholds
    )


def _aucs(evaluation: dict, score: str) -> dict[str, float | None]:
    """The AUC of one score for each comparison (all transitional, then each type)."""
    return {
        group: info["scores"].get(score, {}).get("auc")
        for group, info in evaluation["groups"].items()
    }
