"""A real `mlflow server` on loopback for tests, and a fault-injecting HTTP proxy in front of it.

The proxy forwards every request to the server after a random delay (up to `max_delay_s`) and can answer
chosen requests with an HTTP error instead, so tests see what clients see when a shared tracking server is
slow or has a blip.
"""

from __future__ import annotations

import http.client
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` with a SQLite (or given) backend store and proxied artifacts in a temp folder."""

    def __init__(self, root: Path, backend_uri: str | None = None, extra_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        backend = backend_uri or f"sqlite:///{root / 'server.db'}"
        cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--backend-store-uri", backend, "--artifacts-destination", str(root / "artifacts"), "--workers", "2",
               *extra_args]
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
               "MLFLOW_FLASK_SERVER_SECRET_KEY": "genforge-tests", **(env or {})}  # the basic-auth app's CSRF key
        self.log = open(root / "server.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                     cwd=root)  # the basic-auth app keeps its user database in the working dir
        self._wait_healthy(120.0)

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"mlflow server did not answer within {timeout_s:.0f} s; see {self.log.name}")

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


class FaultProxy:
    """HTTP proxy to `upstream` that delays each request by U(0, max_delay_s) (writes, i.e. POST/PATCH/DELETE, by
    U(0, max_write_delay_s) when given) and answers the requests `fail` selects with its HTTP status."""

    def __init__(self, upstream: str, max_delay_s: float = 0.0,
                 fail: Callable[[str, str], int | None] = lambda method, path: None, seed: int = 0,
                 max_write_delay_s: float | None = None) -> None:
        self.upstream = upstream  # may be re-pointed, e.g. at a restarted server
        rng, lock = random.Random(seed), threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                longest = proxy.max_delay_s
                if self.command != "GET" and proxy.max_write_delay_s is not None:
                    longest = proxy.max_write_delay_s
                with lock:
                    delay = rng.uniform(0, longest)
                time.sleep(delay)
                status = proxy.fail(self.command, self.path)
                if status:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                host, port = proxy.upstream.removeprefix("http://").split(":")
                conn = http.client.HTTPConnection(host, int(port), timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward

            def log_message(self, *args) -> None:  # keep test output clean
                pass

        self.max_delay_s, self.max_write_delay_s, self.fail = max_delay_s, max_write_delay_s, fail
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
