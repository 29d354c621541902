"""Network faults on 127.0.0.1 for the hostile-run tests and ``bench/hostile_runs.py``: a server that
accepts and never answers, a folder served over HTTP, and MLflow's own tracking server behind a
proxy that can go silent mid-run. Each is a context manager that closes what it opened."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class Silent:
    """A listening socket that accepts every connection and never sends a byte (``.url``)."""

    def __init__(self, scheme: str = "http") -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:  # closed
                return

    def __enter__(self) -> "Silent":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


class FileServer:
    """``folder`` served over HTTP on 127.0.0.1 (``.url``), quietly."""

    def __init__(self, folder: Path) -> None:
        class Quiet(SimpleHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> "FileServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


# MLflow's tracking server: its Flask app (what `mlflow server` runs) under werkzeug, sqlite behind it,
# artifacts served by it (`mlflow-artifacts:/`); prints its port once it listens
SERVER = """
import os, sys
root = sys.argv[1]
os.environ.update(_MLFLOW_SERVER_FILE_STORE=f"sqlite:///{root}/server.db", _MLFLOW_SERVER_SERVE_ARTIFACTS="true",
                  _MLFLOW_SERVER_ARTIFACT_ROOT="mlflow-artifacts:/", _MLFLOW_SERVER_ARTIFACT_DESTINATION=f"{root}/art")
from mlflow import MlflowClient
MlflowClient(os.environ["_MLFLOW_SERVER_FILE_STORE"]).search_experiments()  # the tables, before the first request
from mlflow.server import app
from werkzeug.serving import make_server
server = make_server("127.0.0.1", 0, app, threaded=True)
print(server.server_port, flush=True)
server.serve_forever()
"""


class MlflowServer:
    """A real MLflow tracking server in a subprocess, reached at ``.url`` through a proxy in this
    process. ``cut()`` makes the proxy go silent: connections open or new are kept and never answered;
    ``unanswered`` counts the requests that came after the cut."""

    def __init__(self, root: Path, timeout: float = 120) -> None:
        root.mkdir(parents=True, exist_ok=True)
        with open(root / "server.log", "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(root)], stdout=subprocess.PIPE, stderr=log,
                                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        timer = threading.Timer(timeout, self.proc.kill)  # a server that never comes up fails the test
        timer.start()
        line = self.proc.stdout.readline()
        timer.cancel()
        if not line.strip().isdigit():
            raise RuntimeError(f"MLflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        self.target = int(line)
        self.silent, self.closed = threading.Event(), threading.Event()
        self.unanswered = 0
        self.sockets: list[socket.socket] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self.silent.set()

    def _accept(self) -> None:
        while True:
            try:
                client = self.sock.accept()[0]
            except OSError:
                return
            self.sockets.append(client)
            if self.silent.is_set():
                threading.Thread(target=self._pump, args=(client, None, True), daemon=True).start()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets.append(upstream)
            for a, b, asks in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(a, b, asks), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket | None, asks: bool) -> None:
        """Bytes from ``src`` to ``dst`` until the cut; after it they go nowhere and ``src`` stays open."""
        try:
            while True:
                data = src.recv(65536)
                if data and (dst is None or self.silent.is_set()):
                    self.unanswered += asks
                    self.closed.wait()
                    return
                if not data:
                    if dst is not None:
                        dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
        except OSError:
            return

    def __enter__(self) -> "MlflowServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.closed.set()
        self.sock.close()
        for s in self.sockets:
            s.close()
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
