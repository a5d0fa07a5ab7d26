"""Run the simulator on a real socket in a background thread (for tests and benches)."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from nmsim.app import create_app
from nmsim.sim import Simulator


class QuietHandler(WSGIRequestHandler):
    """Request handler without the per-request access log line."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Skip access logging."""


class ServerHandle:
    """A running simulator: `.url`, `.port`, `.app`, `.sim`, `.stop()`."""

    def __init__(self, server: BaseWSGIServer, app: Flask, host: str) -> None:
        self._server = server
        self.app = app
        self.host = host
        self.port: int = server.server_port
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"nmsim-{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def sim(self) -> Simulator:
        """The simulator behind the app (direct access, e.g. for assertions)."""
        return self.app.extensions["nmsim"]  # type: ignore[no-any-return]

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._thread.join(timeout=10)
        self._server.server_close()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    host: str = "127.0.0.1", port: int = 0, access_log: bool = False, **options: Any
) -> tuple[BaseWSGIServer, Flask]:
    """Create the app and a bound threaded werkzeug server (not yet serving)."""
    app = create_app(**options)
    handler = WSGIRequestHandler if access_log else QuietHandler
    server = make_server(host, port, app, threaded=True, request_handler=handler)
    return server, app


def start(host: str = "127.0.0.1", port: int = 0, **options: Any) -> ServerHandle:
    """Start a simulator in a background thread; port 0 picks a free port."""
    server, app = serve(host, port, **options)
    return ServerHandle(server, app, host)
