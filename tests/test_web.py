import io
import struct
import threading
import urllib.request
import zipfile

import numpy as np
import pydicom
import pytest
from pydicom.uid import RLELossless

from helpers import horizontal_overflow
from lstv.web.server import serving


def upload(files):
    return {"files": [(io.BytesIO(f.read_bytes()), f.name) for f in files]}


def test_index_page(client):
    page = client.get("/")
    assert page.status_code == 200
    assert b'type="file"' in page.data


def test_api_analyses_an_uploaded_series(client, series_files):
    res = client.post("/api/analyse", data=upload(series_files), content_type="multipart/form-data")
    assert res.status_code == 200, res.json
    body = res.json
    assert body["n_slices"] == len(series_files)
    assert set(body["levels"]) == {"l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"}
    assert body["risk_level"] in ("High", "Medium", "Low")
    assert body["series"]["description"] == "Sagittal T2/STIR" and body["series"]["why"]
    # The study view the page draws: every slice as 16-bit data, the maps of the five levels.
    meta = client.get("/" + body["view"]).json
    assert meta["shape"][0] == len(series_files) and len(meta["levels"]) == 5
    volume = client.get("/" + body["view"] + "/volume")
    assert len(volume.data) == 2 * int(np.prod(meta["shape"]))
    heatmaps = client.get("/" + body["view"] + "/heatmaps")
    assert len(heatmaps.data) == 5 * meta["heatmap_size"] ** 2


def test_html_result_page(client, series_files):
    res = client.post("/analyse", data=upload(series_files), content_type="multipart/form-data")
    assert res.status_code == 200
    assert b'id="result-data"' in res.data and b"l5_s1" in res.data


def test_zip_member_paths_cannot_escape_the_temp_dir(client, series_files, tmp_path):
    buffer = io.BytesIO()
    target = tmp_path / "escaped.dcm"
    with zipfile.ZipFile(buffer, "w") as z:
        for i, f in enumerate(series_files):
            name = f"../../../../../../{target}" if i == 0 else f"sub/{f.name}"
            z.writestr(name, f.read_bytes())
    buffer.seek(0)
    res = client.post(
        "/api/analyse", data={"files": [(buffer, "series.zip")]}, content_type="multipart/form-data"
    )
    assert res.status_code == 200, res.json
    assert not target.exists()


def test_uploads_are_size_limited(client):
    big = io.BytesIO(b"\0" * (21 * 2**20))
    res = client.post(
        "/api/analyse", data={"files": [(big, "big.dcm")]}, content_type="multipart/form-data"
    )
    assert res.status_code == 413
    assert "larger than 20 MB" in res.json["error"]


def test_bad_uploads_get_a_clear_message(client):
    res = client.post(
        "/api/analyse",
        data={"files": [(io.BytesIO(b"hello"), "x.dcm")]},
        content_type="multipart/form-data",
    )
    assert res.status_code == 400
    assert "not a readable DICOM" in res.json["error"]
    res = client.post("/api/analyse", data={}, content_type="multipart/form-data")
    assert res.status_code == 400 and "no files uploaded" in res.json["error"]
    res = client.post(
        "/analyse",
        data={"files": [(io.BytesIO(b"PK junk"), "a.zip")]},
        content_type="multipart/form-data",
    )
    assert res.status_code == 400 and b"not a valid zip" in res.data


def test_serve_binds_localhost_by_default():
    from lstv.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1"


@pytest.fixture(scope="module")
def t1_files(phantom_dataset):
    """The files of a phantom study's sagittal T1 series (no T2 among them)."""
    import pandas as pd

    from lstv.phantom import T1_DESCRIPTION

    table = pd.read_csv(phantom_dataset.series_csv, dtype=str)
    row = table[table["series_description"] == T1_DESCRIPTION].iloc[0]
    folder = phantom_dataset.images_dir / row["study_id"] / row["series_id"]
    return sorted(folder.glob("*.dcm"))


def zipped(files) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for f in files:
            z.writestr(f"study/{f.name}", f.read_bytes())
    return buffer.getvalue()


def test_a_t1_only_upload_gets_a_message_not_a_verdict(client, t1_files):
    """A zip holding only a sagittal T1 came back "High (flagged as an LSTV candidate)"."""
    res = client.post(
        "/api/analyse",
        data={"files": [(io.BytesIO(zipped(t1_files)), "t1.zip")]},
        content_type="multipart/form-data",
    )
    assert res.status_code == 400
    assert res.json["error"].startswith("no verdict: the upload has no sagittal T2 series")
    assert "Sagittal T1" in res.json["error"] and "risk_level" not in res.json


def drop_files(page, selector, files: dict[str, bytes]) -> None:
    """Drop ``files`` (name -> bytes) on an element, as a reader dragging them from a folder."""
    import base64

    data = [[name, base64.b64encode(b).decode()] for name, b in files.items()]
    transfer = page.evaluate_handle(
        """files => {
            const dt = new DataTransfer();
            for (const [name, b64] of files) {
                const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                dt.items.add(new File([bytes], name));
            }
            return dt;
        }""",
        data,
    )
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


@pytest.mark.browser
def test_demo_in_a_real_browser(app, series_files, t1_files, page):
    with serving(app) as url:
        page.goto(url + "/")
        # the example study, for a visitor with no DICOM at hand
        page.click("#example")
        page.wait_for_function("() => viewer.meta", timeout=120_000)
        text = page.text_content("#result")
        assert "Analysed: Sagittal T2/STIR" in text and "Chosen because its description" in text
        assert "Seed's entropy rule" in text
        assert horizontal_overflow(page) == 0
        assert page.evaluate("document.getElementById('view').clientHeight") >= 512
        # a dropped T2 series: its own view
        example = page.evaluate("viewer.meta.study_id")
        drop_files(page, "#drop", {f.name: f.read_bytes() for f in series_files})
        page.wait_for_function("s => viewer.meta.study_id !== s", arg=example)
        assert page.evaluate("viewer.meta.shape[0]") == len(series_files)
        # a dropped zip of a sagittal T1 only: a message and no verdict
        drop_files(page, "#drop", {"t1.zip": zipped(t1_files)})
        page.wait_for_function("() => document.getElementById('message').textContent")
        assert "no sagittal T2 series" in page.text_content("#message")
        assert page.text_content("#result") == "No verdict."
    # Chromium logs the 400 answer as a console error; it is the refusal this test wants.
    page.errors[:] = [e for e in page.errors if "400" not in e]
    assert page.errors == []


def test_risk_uses_the_checkpoint_bands(tmp_path, series_files):
    import torch

    from lstv.api import load_model
    from lstv.model import PointNet, save_checkpoint
    from lstv.web import create_app

    torch.manual_seed(0)
    bands = {"flag_entropy": 17.0, "high_entropy": 20.0, "medium_entropy": 15.0}
    ckpt = save_checkpoint(
        PointNet("resnet10t"), tmp_path / "c.pth", extra_config={"risk_thresholds": bands}
    )
    client = create_app(load_model(ckpt, device="cpu")).test_client()
    body = client.post(
        "/api/analyse", data=upload(series_files), content_type="multipart/form-data"
    ).json
    assert body["thresholds"] == bands
    assert body["risk_level"] == "Low" and body["lstv_flag"] is False  # entropy <= ln(160^2)


@pytest.mark.slow  # over 10 s on the shared 2-core machine
def test_the_checkpoint_reference_adds_the_calibrated_score(tmp_path, series_files):
    import torch

    from lstv.api import load_model
    from lstv.model import PointNet, save_checkpoint
    from lstv.score import FEATURES, fit_reference
    from lstv.web import create_app

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    # a reference whose every feature sits far from this random net's: the study is flagged
    ref = fit_reference(rng.normal(50.0, 1.0, size=(20, len(FEATURES))), None)
    ckpt = save_checkpoint(
        PointNet("resnet10t"), tmp_path / "c.pth", extra_config={"lstv_reference": ref.to_dict()}
    )
    client = create_app(load_model(ckpt, device="cpu")).test_client()
    body = client.post(
        "/api/analyse", data=upload(series_files), content_type="multipart/form-data"
    ).json
    assert body["lstv_score"] > ref.threshold and body["lstv_score_flag"] is True
    assert body["lstv_score_driver"] in FEATURES and body["lstv_score_reason"]
    assert body["lstv_score_threshold"] == pytest.approx(ref.threshold)
    assert "peak2" in body["levels"]["l5_s1"]
    page = client.post("/analyse", data=upload(series_files), content_type="multipart/form-data")
    assert b"\"lstv_score_reason\": \"" in page.data  # the page script shows it


def test_without_a_reference_the_score_is_null(client, series_files):
    body = client.post(
        "/api/analyse", data=upload(series_files), content_type="multipart/form-data"
    ).json
    assert body["lstv_score"] is None and body["lstv_score_reason"] is None


def test_concurrent_analyses_are_bounded_with_a_clear_503(app, series_files, monkeypatch):
    """17.1: each upload declaring millions of frames held a core, with no bound on how many."""
    import lstv.web.demo

    started, release = threading.Event(), threading.Event()
    analyse = lstv.web.demo.analyse_folder

    def slow_analyse(*args, **kwargs):
        started.set()
        release.wait(30)
        return analyse(*args, **kwargs)

    monkeypatch.setattr(lstv.web.demo, "analyse_folder", slow_analyse)
    limit = app.config.get("LSTV_MAX_ANALYSES", 2)
    results = []

    def post():
        res = app.test_client().post(
            "/api/analyse", data=upload(series_files), content_type="multipart/form-data"
        )
        results.append(res.status_code)

    busy = [threading.Thread(target=post) for _ in range(limit)]
    for t in busy:
        t.start()
    assert started.wait(30)
    extra = threading.Thread(target=post)
    extra.start()
    extra.join(10)
    try:
        assert not extra.is_alive(), "a request over the limit waited instead of being refused"
        assert results == [503]
        refused = app.test_client().post(
            "/analyse", data=upload(series_files), content_type="multipart/form-data"
        )
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        assert b"busy" in refused.data
    finally:
        release.set()
        for t in busy:
            t.join(60)
    assert sorted(results) == [200] * limit + [503]

# -------------------- web hardening
# Issue 9.8 and 9.11: the web demo answers bad zips with a 400 and a message, decodes no more than
# the limits allow, sends security headers and names no server version.


def post_zip(client, data: bytes, path="/api/analyse"):
    return client.post(
        path,
        data={"files": [(io.BytesIO(data), "series.zip")]},
        content_type="multipart/form-data",
    )


def zip_of(files, method=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as z:
        for f in files:
            z.writestr(f.name, f.read_bytes())
    return buffer.getvalue()


def patch_headers(data: bytes, offset: int, fmt: str, value) -> bytes:
    """Set one field in every local and central header of a zip (offsets per APPNOTE)."""
    data = bytearray(data)
    for signature, base in ((b"PK\x03\x04", 0), (b"PK\x01\x02", 2)):
        start = 0
        while (start := data.find(signature, start)) != -1:
            struct.pack_into(fmt, data, start + base + offset, value)
            start += 4
    return bytes(data)


def test_unsupported_compression_is_a_400(client, series_files):
    data = patch_headers(zip_of(series_files[:2]), 8, "<H", 9)  # method 9: deflate64
    res = post_zip(client, data)
    assert res.status_code == 400, res.data
    assert "compression method 9 is not supported" in res.json["error"]


def test_encrypted_zip_is_a_400(client, series_files):
    data = zip_of(series_files[:2])
    flags = struct.unpack_from("<H", data, 6)[0]
    data = patch_headers(data, 6, "<H", flags | 0x1)
    res = post_zip(client, data, path="/analyse")
    assert res.status_code == 400
    assert b"encrypted" in res.data


def test_corrupt_deflate_stream_is_a_400(client, series_files):
    data = bytearray(zip_of(series_files[:1], zipfile.ZIP_DEFLATED))
    name_len, extra_len = struct.unpack_from("<HH", data, 26)
    start = 30 + name_len + extra_len
    data[start : start + 64] = b"\xff" * 64
    res = post_zip(client, bytes(data))
    assert res.status_code == 400, res.data
    assert "cannot extract" in res.json["error"]


def test_zip_bomb_is_refused_before_extraction(client):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for i in range(3):
            z.writestr(f"{i}.dcm", b"\0" * (9 * 2**20))  # 27 MB from ~30 KB
    assert len(buffer.getvalue()) < 2**20
    res = post_zip(client, buffer.getvalue())
    assert res.status_code == 400
    assert "expands to 27 MB, more than the 20 MB" in res.json["error"]


def test_macos_metadata_in_a_zip_is_skipped(client, series_files):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for f in series_files:
            z.writestr(f"series/{f.name}", f.read_bytes())
            z.writestr(f"__MACOSX/series/._{f.name}", b"\0\5\26\7 resource fork")
    res = post_zip(client, buffer.getvalue())
    assert res.status_code == 200, res.json
    assert res.json["n_slices"] == len(series_files)


def test_upload_declaring_huge_pixels_is_refused_before_decoding(client, series_files, tmp_path):
    ds = pydicom.dcmread(series_files[0])
    ds.Rows, ds.Columns = 64, 64
    ds.compress(RLELossless, np.zeros((64, 64), dtype=np.uint16))
    ds.Rows, ds.Columns = 60000, 60000  # 7.2 GB if decoded
    bomb = tmp_path / "bomb.dcm"
    ds.save_as(bomb)
    res = client.post(
        "/api/analyse",
        data={"files": [(io.BytesIO(bomb.read_bytes()), "bomb.dcm")]},
        content_type="multipart/form-data",
    )
    assert res.status_code == 400, res.json
    assert "60000 x 60000" in res.json["error"] and "per-file limit" in res.json["error"]


def test_security_headers_on_every_answer(client):
    for res in (client.get("/"), client.post("/api/analyse", data={})):
        assert res.headers["X-Content-Type-Options"] == "nosniff"
        assert res.headers["X-Frame-Options"] == "DENY"
        assert res.headers["Referrer-Policy"] == "no-referrer"
        csp = res.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "http" not in csp and "*" not in csp  # no remote sources


def test_server_names_no_version_and_stops_with_its_block(app):
    with serving(app) as url, urllib.request.urlopen(f"{url}/", timeout=10) as res:
        headers = res.headers
    with pytest.raises(OSError):  # the block's end shut the server down
        urllib.request.urlopen(f"{url}/", timeout=5)
    assert headers["Server"] == "lstv"
    assert "Werkzeug" not in str(headers) and "Python" not in str(headers)
    assert headers["X-Frame-Options"] == "DENY"


def test_lstv_serve_runs_the_quiet_handler(app, monkeypatch):
    import werkzeug.serving

    from lstv.web import QuietRequestHandler

    seen = {}
    monkeypatch.setattr(werkzeug.serving, "run_simple", lambda *a, **kw: seen.update(kw))
    app.run(host="127.0.0.1", port=5999)
    assert seen["request_handler"] is QuietRequestHandler


def test_server_error_is_a_short_message_without_traceback(tiny_checkpoint, series_files):
    from lstv.api import load_model
    from lstv.web import create_app

    predictor = load_model(tiny_checkpoint, device="cpu")

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: secret internal detail")

    predictor.__class__ = type("Broken", (predictor.__class__,), {"__call__": broken})
    client = create_app(predictor).test_client()
    res = client.post(
        "/api/analyse",
        data={"files": [(io.BytesIO(f.read_bytes()), f.name) for f in series_files]},
        content_type="multipart/form-data",
    )
    assert res.status_code == 500
    assert res.json == {"error": "the analysis failed on the server; the server log says why"}
    assert res.headers["X-Content-Type-Options"] == "nosniff"
