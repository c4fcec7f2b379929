"""The API bench's load generator for real: vegeta (built by deploy/local/vegeta.sh, as make test and
make bench-api do) against a local HTTP server that records what arrives. Each request arrives once,
with its own key and query, the position marker never reaches the server, every answer is read back
to its request, and vegeta's CPU is counted as the load generator's (no timing judged)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from bench.api_load import Vegeta, children_cpu_seconds, install_vegeta
from bench.api_workload import Request

HEADERS = {"admin": {"Authorization": "Bearer admin-key"}, "scoped": {"Authorization": "Bearer scoped-key"}}


@contextmanager
def _recording_server() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """(base URL, [(request target, Authorization)]): answers 200, or 503 on /v1/fail."""
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            with lock:
                seen.append((self.path, self.headers.get("Authorization", "")))
            body = b'{"items": []}'
            self.send_response(503 if self.path.startswith("/v1/fail") else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _left(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _requests(n: int) -> list[Request]:
    out: list[Request] = []
    for i in range(n):
        if i % 3 == 0:
            out.append(Request("detail", "detail", "scoped", "scoped", f"/v1/mentions/m{i}"))
        elif i % 3 == 1:
            params = (("q", f'"dark mode" OR n{i}'), ("cursor", "a+b/c="))
            out.append(Request("list", "list:cursor", "q", "admin", "/v1/mentions", params))
        else:
            out.append(Request("queues", "queues", "all", "admin", "/v1/queues", (("n", str(i)),)))
    return out


async def test_vegeta_sends_every_request_once_with_its_key_and_reads_each_answer_back(
    tmp_path: Path,
) -> None:
    exe, version = install_vegeta()
    assert version.startswith("v12.")
    requests = [*_requests(59), Request("list", "list:first", "broken", "admin", "/v1/fail")]
    with _recording_server() as (base_url, seen):
        tool = Vegeta(exe, base_url=base_url, headers=HEADERS, workdir=tmp_path, concurrency=4)
        attack = tool.prepare(requests, rate=200.0, seconds=0.0, workers=0)
        before = children_cpu_seconds()
        await tool.run(attack)
        loadgen_cpu = children_cpu_seconds() - before
        samples, timing = await tool.results(attack)

    assert loadgen_cpu > 0  # vegeta's CPU, counted once its process was waited for
    arrived = Counter((urlsplit(t).path, tuple(parse_qsl(urlsplit(t).query)), auth) for t, auth in seen)
    asked = Counter((r.path, r.params, HEADERS[r.key]["Authorization"]) for r in requests)
    assert arrived == asked  # each once, with its own key and its query intact
    assert not any("#" in target for target, _ in seen)
    assert sorted(id(s.request) for s in samples) == sorted(id(r) for r in requests)
    by_path = {s.request.path: s for s in samples}
    assert by_path["/v1/fail"].status == 503 and "503" in by_path["/v1/fail"].error
    assert all(s.status == 200 and s.latency_ms > 0 for s in samples if s.request.path != "/v1/fail")
    assert set(timing) == {"send_schedule_s", "sender_max_behind_ms", "queued_max_ms", "finished_s"}
    assert _left(tmp_path) == [f"{attack.name}.stderr"]  # the targets (they carry the keys) are gone


async def test_vegeta_closed_loop_sends_back_to_back_for_the_seconds(tmp_path: Path) -> None:
    exe, _ = install_vegeta()
    requests = _requests(5_000)
    with _recording_server() as (base_url, seen):
        tool = Vegeta(exe, base_url=base_url, headers=HEADERS, workdir=tmp_path, concurrency=64)
        attack = tool.prepare(requests, rate=None, seconds=0.5, workers=2)
        await tool.run(attack)
        samples, timing = await tool.results(attack)
    assert 0 < len(samples) == len(seen) < len(requests)
    assert all(s.status == 200 for s in samples)
    assert timing["achieved_per_s"] > 0
