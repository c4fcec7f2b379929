"""A throwaway Kafka broker or PostgreSQL server of a test's own, that the test may kill, stop and restart.

Started with the same scripts as the shared ones (deploy/local/kafka.sh and postgres.sh) but with their
state in a temporary directory and on free ports, so that a fault test never touches the instances other
people's tests use. `remove()` stops the server and deletes its state.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from devsupport.processes import free_port
from shared.settings import REPO_ROOT

LOCAL = REPO_ROOT / "deploy" / "local"


def _state_dir(kind: str) -> Path:
    # Under /tmp, traversable by everyone: as root, postgres.sh runs the server as the `postgres` user.
    path = Path(tempfile.mkdtemp(prefix=f"mr-{kind}-", dir="/tmp"))
    path.chmod(0o755)
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class _Private:
    script: str = ""
    kind: str = ""

    def __init__(self) -> None:
        self.dir = _state_dir(self.kind)
        self.env: dict[str, str] = {**os.environ, "MR_LOCAL_DIR": str(self.dir)}

    def _run(self, command: str, timeout: float = 120) -> None:
        done = subprocess.run(
            [str(LOCAL / self.script), command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"{self.script} {command} failed ({done.returncode}):\n{done.stderr}")

    def start(self) -> None:
        self._run("start")

    def stop(self) -> None:
        """A clean stop (SIGTERM and wait)."""
        self._run("stop")

    def pid(self) -> int | None:
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL the server's main process and wait until it is gone."""
        pid = self.pid()
        if pid is None:
            raise AssertionError(f"the private {self.kind} is not running")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.kind} pid {pid} survived SIGKILL for 30 s")
            time.sleep(0.05)

    def remove(self) -> None:
        try:
            if self.pid() is not None:
                self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class PrivateKafka(_Private):
    script = "kafka.sh"
    kind = "kafka"

    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()
        self.env["MR_KAFKA_PORT"] = str(self.port)
        self.env["MR_KAFKA_CONTROLLER_PORT"] = str(free_port())
        self.env["MR_KAFKA_HEAP_OPTS"] = "-Xmx384m -Xms128m"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pid(self) -> int | None:
        path = self.dir / "kafka" / "kafka.pid"
        if not path.exists():
            return None
        pid = int(path.read_text().strip() or 0)
        return pid if pid and _pid_alive(pid) else None


class PrivatePostgres(_Private):
    script = "postgres.sh"
    kind = "postgres"

    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()
        self.env["MR_PG_PORT"] = str(self.port)

    @property
    def url(self) -> str:
        """The asyncpg URL of the server's `mention_router` database (role mr/mr, a superuser)."""
        return f"postgresql+asyncpg://mr:mr@127.0.0.1:{self.port}/mention_router"

    def pid(self) -> int | None:
        path = self.dir / "postgres" / "data" / "postmaster.pid"
        if not path.exists():
            return None
        first = path.read_text().splitlines()[:1]
        pid = int(first[0]) if first and first[0].isdigit() else 0
        return pid if pid and _pid_alive(pid) else None
