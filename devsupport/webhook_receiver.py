"""A local HTTP server that receives webhooks: the stand-in for a department's endpoint.

It records every POST (path, headers, body) and answers with the statuses queued for its path (`fail`),
then with the path's standing status (`answer`, 200 unless set).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    status: int  # what the receiver answered


class WebhookReceiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self._queued: dict[str, list[int]] = {}
        self._standing: dict[str, int] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real endpoint would

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    queued = receiver._queued.get(self.path)
                    status = queued.pop(0) if queued else receiver._standing.get(self.path, 200)
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.received.append(Received(self.path, headers, body, status))
                reply = b'{"ok": true}' if status < 300 else b'{"error": "the receiver failed on purpose"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def fail(self, path: str, times: int, status: int = 500) -> None:
        """Answer the next `times` requests to `path` with `status`."""
        with self._lock:
            self._queued.setdefault(path, []).extend([status] * times)

    def answer(self, path: str, status: int) -> None:
        """Answer every further request to `path` with `status` (after any queued ones)."""
        with self._lock:
            self._standing[path] = status

    def requests(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def start(self) -> None:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
