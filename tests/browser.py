"""Headless Chromium for the browser tests, driven over the DevTools protocol.

``chromium`` (a session fixture in conftest.py) starts one browser; ``load_in_browser`` opens a
page in a new tab and reports console errors, decoded image widths and every request made.
"""

import base64
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium")


class DevTools:
    """A minimal Chrome DevTools Protocol client over a stdlib websocket (RFC 6455 client side).

    Neither ``websocket-client`` nor ``websockets`` is a dependency of the project, and the test
    needs only text frames, pings and large replies (screenshots).
    """

    def __init__(self, ws_url: str, timeout: float = 60.0):
        url = urllib.parse.urlparse(ws_url)
        self.sock = socket.create_connection((url.hostname, url.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {url.path} HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buf = bytearray()
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        end = self.buf.index(b"\r\n\r\n")
        status = bytes(self.buf[:end]).split(b"\r\n", 1)[0]
        if b" 101" not in status:
            raise ConnectionError(f"websocket upgrade refused: {status!r}")
        del self.buf[: end + 4]
        self.last_id = 0
        self.events: list[dict] = []

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("DevTools closed the connection")
        self.buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _send(self, payload: bytes, opcode: int = 0x1) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload)))

    def _message(self) -> dict:
        parts = []
        while True:
            b0, b1 = self._take(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack(">H", self._take(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", self._take(8))
            mask = self._take(4) if b1 & 0x80 else None
            payload = self._take(n)
            if mask:
                payload = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 0x9:
                self._send(payload, 0xA)
            elif opcode == 0x8:
                raise ConnectionError("DevTools closed the websocket")
            elif opcode in (0x0, 0x1, 0x2):
                parts.append(payload)
                if b0 & 0x80:
                    return json.loads(b"".join(parts))

    def call(self, method: str, **params):
        self.last_id += 1
        self._send(json.dumps({"id": self.last_id, "method": method, "params": params}).encode())
        while True:
            msg = self._message()
            if msg.get("id") == self.last_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event["method"] == method:
                return event
        while time.monotonic() < deadline:
            msg = self._message()
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == method:
                    return msg
        raise TimeoutError(f"no {method} within {timeout} s")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send(b"", 0x8)
        self.sock.close()


def start_chromium(tmp_path_factory):
    """Headless Chromium with a DevTools port; yields the port (skips without Chromium)."""
    if CHROMIUM is None:
        pytest.skip("Debian chromium is not installed")
    root = tmp_path_factory.mktemp("chromium")
    profile = root / "profile"
    log = (root / "chromium.log").open("w")
    proc = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--window-size=1280,4000",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    # Chromium writes the port it picked to DevToolsActivePort (also "DevTools listening" on
    # stderr); the file is the steadier of the two to read.
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while not (port_file.is_file() and port_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.close()
            pytest.fail("Chromium did not start:\n" + (root / "chromium.log").read_text()[-3000:])
        time.sleep(0.1)
    try:
        yield int(port_file.read_text().split()[0])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def load_in_browser(port: int, page: Path | str, screenshot: Path) -> dict:
    """Open ``page`` (a file or a URL) in a new tab; return console errors, image widths,
    requests and the page height."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    request = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
    with opener.open(request, timeout=30) as reply:
        target = json.load(reply)
    tab = DevTools(target["webSocketDebuggerUrl"])
    try:
        for domain in ("Runtime", "Log", "Page", "Network"):
            tab.call(f"{domain}.enable")
        tab.call(
            "Emulation.setDeviceMetricsOverride",
            width=1280,
            height=4000,
            deviceScaleFactor=1,
            mobile=False,
        )
        url = page if isinstance(page, str) else page.resolve().as_uri()
        tab.call("Page.navigate", url=url)
        tab.wait_for("Page.loadEventFired")
        # decode() rejects for an image that cannot be decoded; -1 marks those.
        widths = tab.call(
            "Runtime.evaluate",
            awaitPromise=True,
            returnByValue=True,
            expression="Promise.all(Array.from(document.images).map("
            "i => i.decode().then(() => i.naturalWidth, () => -1)))",
        )["result"]["value"]
        height = tab.call("Page.getLayoutMetrics")["cssContentSize"]["height"]
        shot = tab.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": 1280, "height": min(height, 16000), "scale": 1},
        )
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        errors, requests = [], []
        for event in tab.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                errors.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a)) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append(params["entry"].get("text", "log error"))
            elif method == "Network.requestWillBeSent":
                requests.append(params["request"]["url"])
        return {"errors": errors, "widths": widths, "requests": requests, "height": height}
    finally:
        tab.close()
        with opener.open(f"http://127.0.0.1:{port}/json/close/{target['id']}", timeout=30):
            pass


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])
