"""What the benchmark stands on: the broker and database, fresh topics and databases, the machine, /proc."""

from __future__ import annotations

import asyncio
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy.engine import make_url

from shared.settings import REPO_ROOT, Settings

LOCAL = REPO_ROOT / "deploy" / "local"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def script_env(script: str) -> dict[str, str]:
    """Start a service with its deploy/local script (idempotent) and return the MR_* it exports."""
    subprocess.run([str(LOCAL / script), "start"], check=True, timeout=600)
    out = subprocess.run([str(LOCAL / script), "env"], check=True, capture_output=True, text=True).stdout
    env: dict[str, str] = {}
    for line in out.splitlines():
        line = line.removeprefix("export ").strip()
        if "=" in line:
            key, value = line.split("=", 1)
            env[key] = value.strip("'\"")
    return env


def backing_services() -> tuple[str, str]:
    """The broker and a PostgreSQL server URL: from MR_* when set, else started by deploy/local/ (as
    `make test` does)."""
    bootstrap = (
        os.environ.get("MR_KAFKA_BOOTSTRAP_SERVERS") or script_env("kafka.sh")["MR_KAFKA_BOOTSTRAP_SERVERS"]
    )
    database = os.environ.get("MR_DATABASE_URL", "")
    if not database.startswith("postgresql"):
        database = script_env("postgres.sh")["MR_DATABASE_URL"]
    return bootstrap, database


# --- PostgreSQL: one fresh database per run ------------------------------------------------------------


async def _admin_connection(server_url: str) -> Any:
    import asyncpg  # type: ignore[import-untyped]

    url = make_url(server_url)
    return await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, database=url.database
    )


async def create_database(server_url: str, name: str) -> str:
    conn = await _admin_connection(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(server_url: str, name: str) -> None:
    conn = await _admin_connection(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def postgres_version(server_url: str) -> str:
    conn = await _admin_connection(server_url)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


# --- Kafka: fresh topics per run, removed afterwards ---------------------------------------------------


async def create_topics(bootstrap: str, topics: list[str], *, partitions: int, **security: Any) -> None:
    """`security`: shared.kafkaauth.client_options of a user allowed to (none on a plaintext broker)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="mention-router.bench", **security)
    await admin.start()
    try:
        response: Any = await admin.create_topics(
            [NewTopic(name=t, num_partitions=partitions, replication_factor=1) for t in topics]
        )
        for error in response.topic_errors:
            if error[1] not in (0, 36):  # 36: already exists
                raise RuntimeError(f"could not create topic {error[0]!r}: error code {error[1]}")
    finally:
        await admin.close()
    # A topic is usable once its leaders are known; metadata can lag the creation for a moment.
    await asyncio.sleep(0.5)


async def delete_topics(bootstrap: str, prefix: str, **security: Any) -> None:
    """Remove every topic of this run: a full run writes several hundred MB."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="mention-router.bench", **security)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if topics:
            await admin.delete_topics(topics)
    finally:
        await admin.close()


async def group_members(bootstrap: str, group: str, **security: Any) -> tuple[str, int]:
    """(state, number of members) of a consumer group."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="mention-router.bench", **security)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    for response in responses:
        for g in response.groups:
            # (error_code, group_id, state, protocol_type, protocol, members, ...)
            if g[1] == group:
                return str(g[2]), len(g[5])
    return "Dead", 0


def kafka_version() -> str:
    """The running broker's version, read from its class path (deploy/local/kafka.sh keeps it there)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "kafka.Kafka" in cmdline:
            found = re.search(r"kafka[-_](?:2\.1[23]-)?(\d+\.\d+\.\d+)", cmdline)
            if found:
                return found.group(1)
    return "unknown"


# --- The machine and its processes ---------------------------------------------------------------------


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text()
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))  # type: ignore[union-attr]
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    import aiokafka
    import sqlalchemy

    return {
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "cpu_model": model.group(1).strip() if model else platform.processor() or "unknown",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "aiokafka": aiokafka.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "kafka": kafka_version(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MB from /proc/<pid>/status."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0, 0.0
    rss = re.search(r"VmRSS:\s+(\d+)", status)
    hwm = re.search(r"VmHWM:\s+(\d+)", status)
    return (int(rss.group(1)) / 1024 if rss else 0.0, int(hwm.group(1)) / 1024 if hwm else 0.0)


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # without guest time, which is already in user
    return (total - idle) / _CLK_TCK, total / _CLK_TCK


def backing_pids() -> dict[str, list[int]]:
    """The broker's and PostgreSQL's processes, to account for their share of the CPU."""
    out: dict[str, list[int]] = {"kafka": [], "postgres": []}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            comm = (proc / "comm").read_text().strip()
            if comm == "postgres":
                out["postgres"].append(int(proc.name))
            elif comm == "java" and b"kafka.Kafka" in (proc / "cmdline").read_bytes():
                out["kafka"].append(int(proc.name))
        except OSError:
            continue
    return out


@dataclass
class CpuMeter:
    """CPU seconds spent by named groups of processes between `start` and `stop`."""

    groups: dict[str, list[int]]
    _start: dict[str, float] = field(default_factory=dict)
    _busy: tuple[float, float] = (0.0, 0.0)
    _wall: float = 0.0

    def _read(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.groups.items()}

    def start(self) -> None:
        self._start = self._read()
        self._busy = machine_busy_seconds()
        self._wall = time.monotonic()

    def stop(self) -> dict[str, Any]:
        now = self._read()
        busy, total = machine_busy_seconds()
        wall = time.monotonic() - self._wall
        used = {name: round(now[name] - self._start.get(name, 0.0), 2) for name in now}
        machine_busy = busy - self._busy[0]
        return {
            "wall_s": round(wall, 2),
            "cpu_s": used,
            "machine_busy_cpu_s": round(machine_busy, 2),
            "machine_capacity_cpu_s": round(total - self._busy[1], 2),
            "other_cpu_s": round(max(0.0, machine_busy - sum(used.values())), 2),
        }


def python() -> str:
    return sys.executable


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a service process of the run gets: its broker, topic prefix and partitions."""
    return {
        **os.environ,
        "MR_BUS": "kafka",
        "MR_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "MR_TOPIC_PREFIX": settings.topic_prefix,
        "MR_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "MR_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
