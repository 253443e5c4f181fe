"""Issue 9.8 and 9.11: the web demo answers bad zips with a 400 and a message, decodes no more
than the limits allow, sends security headers and names no server version."""

import io
import struct
import threading
import urllib.request
import zipfile

import numpy as np
import pydicom
from pydicom.uid import RLELossless


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


def test_server_names_no_version(app):
    from lstv.web import make_demo_server

    server = make_demo_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=10) as res:
            headers = res.headers
    finally:
        server.shutdown()
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
