"""Service processes started as a user starts them (`python -m services.<name>`), for the end-to-end
tests and the benchmark: logs to files, liveness checks, SIGTERM with a deadline."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from shared.settings import REPO_ROOT

# Below Linux's ephemeral range (32768-60999): a port the kernel hands out for outgoing connections (to
# Kafka, PostgreSQL, between test processes) cannot take one of these between the check and the bind.
_PORTS = range(20000, 32768)


def free_port() -> int:
    """A loopback port nobody listens on, outside the ephemeral range (a CI run once lost the port it had
    picked to an outgoing connection before the service bound it)."""
    for _ in range(200):
        port = random.choice(_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in 20000-32767")


class ServiceProcesses:
    def __init__(
        self,
        env: dict[str, str],
        logs: Path,
        *,
        failure: type[Exception] = AssertionError,
        root: Path = REPO_ROOT,
    ) -> None:
        """`root`: the checkout whose services run (another one for a before/after comparison)."""
        self.env = env
        self.root = root
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._files: list[IO[bytes]] = []
        self._failure = failure

    def start(self, service: str, name: str | None = None, **env: str) -> None:
        name = name or service
        log = (self.logs / f"{name}.log").open("wb")
        self._files.append(log)
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"],
            cwd=self.root,
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise self._failure(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 40) -> str:
        text = (self.logs / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def kill(self, name: str) -> int:
        """SIGKILL one process (a crash) and forget it; its exit code."""
        proc = self.procs.pop(name)
        proc.kill()
        return proc.wait()

    def terminate(self, name: str, timeout: float) -> int | None:
        """SIGTERM one process and forget it; its exit code, or None if it had to be killed after
        `timeout`."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None

    def stop(self, timeout: float = 15.0) -> dict[str, int | None]:
        """SIGTERM to all, then their exit codes (None for one that had to be killed after `timeout`)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes: dict[str, int | None] = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                codes[name] = None
        for f in self._files:
            f.close()
        return codes
