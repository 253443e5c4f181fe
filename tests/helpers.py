"""Small builders shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path


def phantom_infer_config(dataset, output_dir: Path, checkpoint: Path, **settings):
    """An ``lstv infer`` config over a phantom dataset on the CPU, in-process and quiet;
    ``settings`` override any field."""
    from lstv.config import InferenceConfig

    base = dict(
        input_dir=dataset.images_dir,
        series_csv=dataset.series_csv,
        output_dir=output_dir,
        checkpoint=checkpoint,
        valid_ids=dataset.valid_ids_path,
        mode="prod",
        device="cpu",
        num_workers=0,
        quiet=True,
    )
    return InferenceConfig(**{**base, **settings})
