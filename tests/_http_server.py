"""A small HTTP file server on 127.0.0.1 with Range support and fault switches, for the shard-reading tests.

    srv = RangeServer(folder).start()      # srv.url = "http://127.0.0.1:PORT"
    srv.delay = 2.0; srv.fail_next = 3; srv.ignore_range = True    # slow / 503 x3 / no Range support
    srv.stop()                             # the port then refuses connections

``python tests/_http_server.py FOLDER PORT_FILE [PORT]`` runs it as a process (to be killed with SIGKILL, and
brought back on the same PORT).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class RangeServer:
    """Serves ``folder``; logs every request as (path, range header, bytes sent)."""

    def __init__(self, folder: str | os.PathLike, port: int = 0) -> None:
        self.folder = Path(folder)
        self.delay = 0.0
        self.fail_next = 0
        self.ignore_range = False
        self.log: list[tuple[str, str | None, int]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as object stores do

            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                if server.fail_next > 0:
                    server.fail_next -= 1
                    self._reply(503, b"busy", {})
                    return
                if server.delay:
                    time.sleep(server.delay)
                path = server.folder / self.path.lstrip("/")
                if not path.is_file():
                    self._reply(404, b"not found", {})
                    return
                data = path.read_bytes()
                rng = self.headers.get("Range")
                m = re.fullmatch(r"bytes=(\d+)-(\d+)", rng or "")
                if m and not server.ignore_range:
                    a, b = int(m[1]), min(int(m[2]), len(data) - 1)
                    body = data[a:b + 1]
                    self._reply(206, body, {"Content-Range": f"bytes {a}-{b}/{len(data)}"})
                else:
                    body = data
                    self._reply(200, body, {})
                server.log.append((self.path, rng, len(body)))

            def _reply(self, code, body, headers):
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        ThreadingHTTPServer.allow_reuse_address = True  # brought back on its port while old connections linger
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread: threading.Thread | None = None

    def start(self) -> "RangeServer":
        """Serve in a background thread."""
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (new connections are refused)."""
        self.httpd.shutdown()
        self.httpd.server_close()


def spawn(folder: str | os.PathLike, port_file: Path, timeout: float = 30.0) -> tuple[subprocess.Popen, str]:
    """This server as a separate process (so a test can SIGKILL it): (process, url) once it listens."""
    proc = subprocess.Popen([sys.executable, __file__, str(folder), str(port_file)])
    deadline = time.time() + timeout
    while not port_file.exists() or not port_file.read_text():
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"test server for {folder} did not start")
        time.sleep(0.05)
    return proc, port_file.read_text()


if __name__ == "__main__":
    srv = RangeServer(sys.argv[1], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    Path(sys.argv[2]).write_text(srv.url)
    srv.httpd.serve_forever()
