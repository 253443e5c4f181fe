"""``lstv review`` (lstv.web.review) in a real browser: one key per study, saved at once into
the run's audit_queue.csv, which ``lstv evaluate`` and ``lstv calibrate`` then read."""

import shutil
from pathlib import Path

import pandas as pd
import pytest

from helpers import horizontal_overflow
from lstv.tables import read_labels
from lstv.web.server import serving

REVIEWER = "dr review"


@pytest.fixture
def run(shipped_infer_output, tmp_path):
    """A copy of a real infer run (the shipped phantom localizer; the phantom DICOM lies where
    its manifest says)."""
    return shutil.copytree(shipped_infer_output, tmp_path / "run")


@pytest.fixture
def review(run, page):
    """The review page of ``run`` open in ``page``, the first study loaded; yields the page."""
    from lstv.web.review import create_review_app

    with serving(create_review_app(run, reviewer=REVIEWER)) as url:
        page.goto(url + "/")
        page.wait_for_function("() => viewer.meta && viewer.meta.study_id")
        yield page
    assert page.errors == []


def progress(page) -> str:
    return page.text_content("#progress")


def wait_progress(page, start: str) -> None:
    page.wait_for_function(
        "s => document.getElementById('progress').textContent.startsWith(s)", arg=start
    )


def queue(run):
    return pd.read_csv(run / "audit_queue.csv", dtype=str, keep_default_na=False)


def canvas(page) -> str:
    return page.evaluate("document.getElementById('view').toDataURL()")


@pytest.mark.browser
def test_one_key_writes_the_row_moves_on_undoes_and_survives_a_reload(review, run):
    page = review
    n = len(queue(run))
    assert progress(page) == f"0/{n} reviewed, 0 LSTV, 0 unsure"
    first, second = queue(run)["study_id"][:2]
    assert page.evaluate("viewer.meta.study_id") == first
    page.keyboard.press("n")
    wait_progress(page, f"1/{n}")
    labels, _ = read_labels(run / "audit_queue.csv")
    assert labels.to_dict("records") == [{"study_id": first, "lstv": 0, "lstv_type": "normal"}]
    assert queue(run)["reviewer"][0] == REVIEWER
    page.wait_for_function("s => viewer.meta.study_id === s", arg=second)  # moved on
    page.keyboard.press("z")
    wait_progress(page, f"0/{n}")
    assert (queue(run)[["lstv", "lstv_type", "reviewer"]].to_numpy() == "").all()
    page.keyboard.press("s")
    wait_progress(page, f"1/{n} reviewed, 1 LSTV")
    page.keyboard.press("u")
    wait_progress(page, f"2/{n} reviewed, 1 LSTV, 1 unsure")
    page.reload()
    wait_progress(page, f"2/{n} reviewed, 1 LSTV, 1 unsure")  # the file is the state
    assert page.text_content("#queue li:nth-child(1) .tag") == "sacralization"
    labels, _ = read_labels(run / "audit_queue.csv")
    assert labels.attrs["n_unsure"] == 1 and len(labels) == 1
    # the layout at 1366 x 768: no sideways scrolling, an image at least 512 px tall
    assert horizontal_overflow(page) == 0
    assert page.evaluate("document.getElementById('view').clientHeight") >= 512


@pytest.mark.browser
def test_slice_window_and_heatmap_keys_change_the_pixels(review):
    page = review
    start = canvas(page)
    page.keyboard.press("ArrowDown")
    assert canvas(page) != start
    assert "image" in page.text_content("#caption")
    page.keyboard.press("Home")
    assert canvas(page) == start
    box = page.locator("#view").bounding_box()
    page.mouse.move(box["x"] + 100, box["y"] + 100)
    page.mouse.wheel(0, 120)  # the wheel scrolls slices too
    assert canvas(page) != start
    page.keyboard.press("Home")
    page.keyboard.press("3")
    assert canvas(page) != start
    page.keyboard.press("1")
    assert canvas(page) == start
    page.keyboard.press("h")
    assert canvas(page) != start
    page.keyboard.press("h")
    page.mouse.move(box["x"] + 200, box["y"] + 200)
    page.mouse.down()
    page.mouse.move(box["x"] + 260, box["y"] + 150)
    page.mouse.up()
    assert canvas(page) != start and "custom" in page.text_content("#caption")


@pytest.mark.browser
def test_each_point_lands_at_its_csv_coordinates(review, run):
    page = review
    study = page.evaluate("viewer.meta.study_id")
    metrics = pd.read_csv(run / "lstv_uncertainty_metrics.csv", dtype={"study_id": str})
    row = metrics.set_index("study_id").loc[study]
    levels = page.evaluate("viewer.meta.levels")
    drawn = 0
    for level in levels:
        x, y = row[f"{level['key']}_x"], row[f"{level['key']}_y"]
        if pd.isna(x):
            assert level["point"] is None
            continue
        assert level["point"] == pytest.approx([x, y], abs=0.06)
        cx, cy = page.evaluate("p => viewer.toCanvas(p[0], p[1])", level["point"])
        rgb = page.evaluate(
            """([x, y]) => Array.from(document.getElementById('view').getContext('2d')
                .getImageData(Math.round(x), Math.round(y), 1, 1).data.slice(0, 3))""",
            [cx - 0.5, cy - 0.5],
        )
        want = [int(level["colour"][i : i + 2], 16) for i in (1, 3, 5)]
        assert max(abs(a - b) for a, b in zip(rgb, want, strict=True)) <= 40, level
        drawn += 1
    assert drawn >= 1


@pytest.mark.browser
def test_typing_a_note_gives_no_verdict(review, run):
    page = review
    n = len(queue(run))
    page.keyboard.press("/")
    page.keyboard.type("no slsu jkz N")
    assert progress(page).startswith(f"0/{n}")
    assert (queue(run)["lstv"] == "").all()
    page.keyboard.press("Escape")
    page.keyboard.press("l")
    wait_progress(page, f"1/{n}")
    first = queue(run).iloc[0]
    assert (first["lstv"], first["lstv_type"], first["notes"]) == (
        "1", "lumbarization", "no slsu jkz N"
    )


@pytest.mark.browser
def test_a_file_edited_behind_the_page_is_refused(review, run):
    page = review
    edited = queue(run)
    edited.loc[1, "lstv"] = "1"
    edited.to_csv(run / "audit_queue.csv", index=False)  # a spreadsheet saved it
    before = (run / "audit_queue.csv").read_bytes()
    page.keyboard.press("n")
    page.wait_for_function("() => document.getElementById('message').textContent.length > 0")
    assert "changed on disk since this page loaded" in page.text_content("#message")
    assert (run / "audit_queue.csv").read_bytes() == before
    # Chromium logs the 409 answer as a console error; it is the refusal this test wants.
    page.errors[:] = [e for e in page.errors if "409" not in e]
    page.reload()  # a reload reads the file again and saves
    page.wait_for_function("() => viewer.meta")
    page.keyboard.press("n")
    wait_progress(page, "2/")


@pytest.mark.browser
def test_blind_mode_hides_the_score_until_the_verdict(run, page):
    from lstv.web.review import create_review_app

    with serving(create_review_app(run, reviewer=REVIEWER, blind=True)) as url:
        page.goto(url + "/")
        page.wait_for_function("() => viewer.meta && viewer.meta.study_id")
        assert "hidden until you give a verdict" in page.text_content("#score")
        assert "Seed" not in page.text_content("#score")
        page.keyboard.press("n")
        wait_progress(page, "1/")
        page.keyboard.press("k")
        page.wait_for_function("() => !viewer.meta.blind")
        assert "Seed" in page.text_content("#score")


@pytest.fixture(scope="module")
def run_of_40(tmp_path_factory):
    """40 phantom studies (about 30% transitional) run through the shipped localizer."""
    from helpers import phantom_infer_config
    from lstv.phantom import write_phantom_dataset
    from lstv.pipeline import run_inference

    root = tmp_path_factory.mktemp("forty")
    data = write_phantom_dataset(root / "phantoms", n_studies=40, seed=19, valid_fraction=1.0)
    checkpoint = Path(__file__).resolve().parents[1] / "models" / "phantom_point_net.pth"
    run_inference(phantom_infer_config(data, root / "run", checkpoint, save_heatmaps=True))
    return root / "run", data


@pytest.mark.slow
@pytest.mark.browser
def test_a_run_of_40_is_reviewed_one_key_per_study_then_evaluated_and_calibrated(
    run_of_40, page
):
    """The issue's "done when": a radiologist (here the phantoms' truth) reviews 40 studies
    with one key each; the commands the page then gives run on the file it wrote."""
    import subprocess
    import sys

    from lstv.web.review import create_review_app

    run, data = run_of_40
    truth = pd.read_csv(data.lstv_labels_csv, dtype=str).set_index("study_id")["lstv_type"]
    keys = {"normal": "n", "sacralization": "s", "lumbarization": "l"}
    with serving(create_review_app(run, reviewer=REVIEWER)) as url:
        page.goto(url + "/")
        for i in range(40):
            page.wait_for_function(f"() => viewer.meta && state.current === {i}")
            study = page.evaluate("state.rows[state.current].study_id")
            page.keyboard.press(keys[truth[study]])
            wait_progress(page, f"{i + 1}/40 reviewed")
        n_lstv = int((truth != "normal").sum())
        assert progress(page) == f"40/40 reviewed, {n_lstv} LSTV, 0 unsure"
        assert page.is_visible("#done")
        commands = page.text_content("#commands").splitlines()
    labels, n_unreviewed = read_labels(run / "audit_queue.csv")
    assert n_unreviewed == 0 and len(labels) == 40
    assert dict(zip(labels["study_id"], labels["lstv_type"], strict=True)) == truth.to_dict()
    # the two commands the page gives, as a reader would paste them
    for command in commands:
        argv = [sys.executable, "-m", "lstv", *command.split()[1:]]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
    assert (run / "evaluation" / "evaluation.json").is_file()
    assert (run / "score_reference.json").is_file()
