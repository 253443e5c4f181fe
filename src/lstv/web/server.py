"""What every page the package serves shares: security headers, a server that names no
version, and the shared static files (``static/``: the study viewer, no library, no CDN)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from flask import Flask
from werkzeug.serving import WSGIRequestHandler, make_server

# Scripts only from this server (the package's own static files), nothing remote, no inline
# script; connections only back to this server.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; connect-src 'self'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def lstv_flask(import_name: str) -> Flask:
    """A Flask app with the package's templates and static files and the security headers."""
    app = DemoFlask(import_name, root_path=str(Path(__file__).parent))

    @app.after_request
    def security_headers(response):
        response.headers.update(SECURITY_HEADERS)
        return response

    return app


class QuietRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler without its ``Server: Werkzeug/x Python/y`` version banner."""

    def version_string(self) -> str:
        return "lstv"


class DemoFlask(Flask):
    """Flask whose ``run`` (``lstv serve``) uses :class:`QuietRequestHandler`."""

    def run(self, host=None, port=None, debug=None, load_dotenv=True, **options) -> None:
        options.setdefault("request_handler", QuietRequestHandler)
        super().run(host, port, debug, load_dotenv, **options)


def make_demo_server(app: Flask, host: str, port: int):
    """A threaded server for the demo that names no software version (``serve_forever`` it)."""
    return make_server(host, port, app, threaded=True, request_handler=QuietRequestHandler)


@contextlib.contextmanager
def serving(app: Flask, host: str = "127.0.0.1") -> Iterator[str]:
    """``app`` served on a free port in a thread for the length of the block; yields its base
    URL (the tests' pages and the README's screenshots)."""
    server = make_demo_server(app, host, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.port}"
    finally:
        server.shutdown()
        thread.join()
