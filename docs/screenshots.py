"""Screenshots of the review page, the web demo and the report at 1366 x 768 (docs/*.png).

    python docs/screenshots.py RUN_DIR [--checkpoint models/phantom_point_net.pth]

RUN_DIR is an ``lstv infer`` run with heatmaps whose input folder still exists (``lstv demo``
writes one). Headless Debian Chromium through Playwright; nothing leaves the machine. The
review page is shown after three verdicts, on a copy of the run.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
VIEWPORT = {"width": 1366, "height": 768}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--checkpoint", type=Path, default=Path("models/phantom_point_net.pth"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from lstv.api import load_model
    from lstv.report import build_report
    from lstv.web import create_app
    from lstv.web.review import create_review_app
    from lstv.web.server import serving

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        run = shutil.copytree(args.run_dir, Path(tmp) / "run")
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport=VIEWPORT)
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(
            ("http://127.0.0.1", "file:", "data:", "blob:")) else r.abort())  # fmt: skip
        with serving(create_review_app(run, reviewer="demo")) as url:
            page.goto(url + "/")
            page.wait_for_function("() => viewer.meta")
            for key in "nsn":
                page.keyboard.press(key)
                page.wait_for_timeout(700)
            page.wait_for_function(
                "() => viewer.meta.study_id === state.rows[state.current].study_id"
                " && document.getElementById('score').textContent"
            )
            page.screenshot(path=DOCS / "review.png")
        with serving(create_app(load_model(args.checkpoint, device="cpu"))) as url:
            page.goto(url + "/")
            page.click("#example")
            page.wait_for_function("() => viewer.meta", timeout=180_000)
            page.screenshot(path=DOCS / "demo.png")
        report = build_report(run / "lstv_uncertainty_metrics.csv", Path(tmp) / "report.html")
        page.goto(report.as_uri())
        # the candidates, below the summary: no smooth scrolling, so the shot is not mid-way
        page.evaluate(
            "document.documentElement.style.scrollBehavior = 'auto';"
            "window.scrollTo(0, document.getElementById('candidates').offsetTop - 50)"
        )
        page.screenshot(path=DOCS / "report.png")
        browser.close()
    print("wrote", ", ".join(str(DOCS / n) for n in ("review.png", "demo.png", "report.png")))


if __name__ == "__main__":
    main()
