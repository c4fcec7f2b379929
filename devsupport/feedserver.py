"""A local HTTP server that serves test feeds: the only fake, standing in for the outside internet."""

from __future__ import annotations

import gzip
import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Served:
    body: bytes
    content_type: str = "application/rss+xml; charset=utf-8"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    conditional: bool = True  # send an ETag and answer If-None-Match with 304
    gzip: bool = False  # send the body gzip-encoded (Content-Encoding: gzip)
    delay: float = 0.0  # seconds to wait before answering (a slow server)


class FeedServer:
    """Serves `routes[path]` with ETag support (304 on If-None-Match) and counts requests per path."""

    def __init__(self) -> None:
        self.routes: dict[str, Served] = {}
        self.requests: dict[str, int] = {}
        self.not_modified: dict[str, int] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.requests[self.path] = server.requests.get(self.path, 0) + 1
                    served = server.routes.get(self.path)
                if served is None:
                    self.send_error(404)
                    return
                if served.delay:
                    time.sleep(served.delay)
                etag = '"' + hashlib.sha256(served.body).hexdigest()[:16] + '"'
                conditional = served.conditional and served.status == 200
                if conditional and self.headers.get("If-None-Match") == etag:
                    with server._lock:
                        server.not_modified[self.path] = server.not_modified.get(self.path, 0) + 1
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                body = gzip.compress(served.body) if served.gzip else served.body
                self.send_response(served.status)
                self.send_header("Content-Type", served.content_type)
                self.send_header("Content-Length", str(len(body)))
                if served.gzip:
                    self.send_header("Content-Encoding", "gzip")
                if conditional:
                    self.send_header("ETag", etag)
                for k, v in served.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, path: str, body: bytes, **kw: object) -> str:
        with self._lock:
            self.routes[path] = Served(body, **kw)  # type: ignore[arg-type]
        return self.url(path)

    def start(self) -> None:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@contextmanager
def feed_server() -> Iterator[FeedServer]:
    server = FeedServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
