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

log = logging.getLogger(__name__)

# The seed's score, then the scores the phantom benchmark found to carry the signal.
DEMO_SCORES = ("l5_s1_entropy", "l5_s1_one_minus_confidence", "l5_s1_tta_mi")

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


def run_demo(
    output_dir: str | Path = "data/output/demo",
    n_studies: int = 40,
    lstv_fraction: float = 0.3,
    seed: int = 2024,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    quiet: bool = False,
) -> DemoResult:
    from lstv.phantom import write_phantom_dataset
    from lstv.pipeline import InferenceConfig, run_inference

    started = time.perf_counter()
    out = Path(output_dir)
    checkpoint = Path(checkpoint) if checkpoint else shipped_checkpoint()
    if not checkpoint.is_file():
        from lstv.errors import CheckpointNotFoundError

        raise CheckpointNotFoundError(
            f"demo checkpoint not found: {checkpoint}. It ships with the repository "
            "(models/phantom_point_net.pth); models/README.md has the command that trains it."
        )
    data = write_phantom_dataset(
        out / "phantoms",
        n_studies=n_studies,
        lstv_fraction=lstv_fraction,
        seed=seed,
        valid_fraction=1.0,
        progress=not quiet,
    )
    run = run_inference(
        InferenceConfig(
            input_dir=data.images_dir,
            series_csv=data.series_csv,
            output_dir=out,
            checkpoint=checkpoint,
            valid_ids=data.valid_ids_path,
            mode="prod",
            device=device,
            save_heatmaps=True,
            tta=True,
            quiet=quiet,
            command=f"lstv demo --output_dir {out}",
        )
    )
    result = DemoResult(
        out, out / "lstv_uncertainty_metrics.csv", run.n_selected, run.n_completed, run.n_failed
    )
    _report_and_evaluate(result, data)
    result.seconds = time.perf_counter() - started
    return result


def _report_and_evaluate(result: DemoResult, data) -> None:
    from lstv.audit import write_audit_queue
    from lstv.evaluate import evaluate
    from lstv.report import build_report

    out = result.output_dir
    evaluation = evaluate(result.metrics_csv, data.lstv_labels_csv, out / "evaluation")
    result.outputs["evaluation"] = out / "evaluation" / "evaluation.json"
    result.aucs = {score: _aucs(evaluation, score) for score in DEMO_SCORES}
    result.outputs["report"] = build_report(
        result.metrics_csv,
        out / "report.html",
        labels_path=data.lstv_labels_csv,
        data_dir=data.images_dir,
    )
    result.outputs["audit queue"] = write_audit_queue(result.metrics_csv, out / "audit_queue.csv")


def _aucs(evaluation: dict, score: str) -> dict[str, float | None]:
    """The AUC of one score for each comparison (all transitional, then each type)."""
    return {
        group: info["scores"].get(score, {}).get("auc")
        for group, info in evaluation["groups"].items()
    }
