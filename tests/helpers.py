"""Small builders shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import threading
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


def horizontal_overflow(tab) -> int:
    """How many CSS pixels a reader must scroll sideways to see everything: the page's excess
    over the viewport, or the largest excess of a box that scrolls sideways (0: none)."""
    return tab.evaluate(
        """() => Math.max(document.documentElement.scrollWidth - window.innerWidth,
            ...Array.from(document.querySelectorAll('*'), e => {
                const x = getComputedStyle(e).overflowX;
                return x === 'auto' || x === 'scroll' ? e.scrollWidth - e.clientWidth : 0;
            }))"""
    )


@contextlib.contextmanager
def serving(app):
    """``app`` served on 127.0.0.1 on a free port in a thread; yields its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join()
