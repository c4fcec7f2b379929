"""Every shell example in README.md and docs/*.md runs here, against the embedded stack (`make run`), so
an example that answers 401, names a file that does not exist or uses an option that was removed fails
`make test` instead of a reader.

The conventions (docs/development.md, "Examples in the docs"):

- A ```sh block runs: in bash with `set -euo pipefail`, from a scratch directory laid out like the
  repository (its `var/` is the stack's own), with `KEY` (the instance's admin key, also in
  `var/admin-api-key`), `H` (its Authorization header), `MENTION` (a routed mention's id) and
  `ASSIGNMENT` (an open assignment's id) set, and `localhost:8000` reaching the stack. Each `curl` must
  answer 2xx, unless the line after its command is `# → NNN …`: then it must answer NNN.
- A ```shell block is shown, not run: commands that start servers, build images or run for minutes.
  Every command in it must begin with one of `SHOWN_ONLY`, so an API call cannot hide there.

Names in examples resolve to loopback here (the machine has no DNS for the outside world): registering
`https://blog.example.org/feed/` works as it would for a user; polling it later fails, in the source's
health, as it would for a host that does not answer.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devsupport.processes import free_port
from devsupport.scenario import wait_for
from services.embedded import EXAMPLE_SOURCES, embedded_settings, run_embedded
from shared import netguard
from shared.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.e2e

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
SHOWN_ONLY = (
    "make ",
    "docker ",
    "helm ",
    "kubectl ",
    "git clone",
    "cd ",
    "eval ",
    "deploy/local/",
    ".venv/bin/python -m services.",
    "MR_METRICS_PORT=",
    ".venv/bin/mention-router run",
    "mention-router run",
    "mention-router train",
    ".venv/bin/python -m bench",
    "python -m bench",
    "kafka-",
    "export MR_",
    ".venv/bin/mention-router migrate",
    ".venv/bin/mention-router sources import",
)
# A shown command's file arguments must exist (an example that names a missing file fails here).
_PATH_ARG = re.compile(r"(?<![\w/.:-])((?:[\w.-]+/)*[\w.-]+\.(?:ya?ml|json|sh|py|md|toml|txt|csv))\b")
_FENCE = re.compile(r"^( *)```(sh|shell)\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
_CURL = re.compile(r"(?:^|[;&|(]\s*|\$\(\s*|&&\s*)curl\s")
_EXPECT = re.compile(r"^#\s*→\s*(\d{3})\b")
# The scratch directory's view of the repository (var/ is not among them: it is the stack's own).
_LINKED = ("examples", "config", "models", "data", "docs", "deploy", ".venv", "Makefile", "pyproject.toml")

_PRELUDE = """set -euo pipefail
curl() {
  local body status rc=0
  body=$(mktemp)
  status=$(command curl -sS -o "$body" -w '%{http_code}' "$@") || rc=$?
  cat "$body"; rm -f "$body"
  echo "$status" >> "$MR_STATUS_LOG"
  return $rc
}
"""


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    language: str
    text: str

    def commands(self) -> list[tuple[str, str | None]]:
        """(command, expected status or None) per logical line, continuations joined, comments dropped."""
        out: list[tuple[str, str | None]] = []
        pending = ""
        for raw in self.text.splitlines():
            line = raw.strip()
            expect = _EXPECT.match(line)
            if expect and out:
                out[-1] = (out[-1][0], expect.group(1))
                continue
            if not line or line.startswith("#"):
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            out.append((pending + line, None))
            pending = ""
        return out

    def expected_statuses(self) -> list[str]:
        return [want or "2xx" for command, want in self.commands() for _ in _CURL.finditer(command)]

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    found = []
    for m in _FENCE.finditer(text):
        indent = len(m.group(1))
        body = "\n".join(line[indent:] for line in m.group(3).splitlines())
        found.append(
            Block(
                path.relative_to(REPO_ROOT).as_posix(), text.count("\n", 0, m.start()) + 1, m.group(2), body
            )
        )
    return found


def test_every_shown_only_block_holds_only_commands_that_cannot_run_in_a_test() -> None:
    shown = [b for path in DOCS for b in blocks(path) if b.language == "shell"]
    for block in shown:
        for command, _ in block.commands():
            assert command.startswith(SHOWN_ONLY), (
                f"{block}: `{command}` belongs in a ```sh block, which runs"
            )
            arguments = command.split("#")[0].split(maxsplit=1)[1:]  # (the program may be on PATH)
            for path in _PATH_ARG.findall(" ".join(arguments)):
                assert (REPO_ROOT / path).exists(), f"{block}: `{command}` names {path}, which does not exist"


_ANY_FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.MULTILINE | re.DOTALL)


def test_commands_are_never_hidden_in_other_fences_and_python_examples_compile() -> None:
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for m in _ANY_FENCE.finditer(text):
            where = f"{path.name}:{text.count(chr(10), 0, m.start()) + 1}"
            language, body = m.group(2), m.group(3)
            if language == "python":
                compile(body.replace("\n" + m.group(1), "\n"), where, "exec")
            elif language not in ("sh", "shell"):
                assert not re.search(r"(?m)^\s*(\$ )?(curl|mention-router|\.venv/bin/|make) ", body), (
                    f"{where}: a command in a ```{language} block: make it ```sh (run) or ```shell (shown)"
                )


def test_every_make_target_is_in_the_development_page() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    targets = re.findall(r"^([a-z-]+):.*## ", makefile, re.MULTILINE)
    page = (REPO_ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    missing = [t for t in targets if f"`make {t}`" not in page and f"`make {t} " not in page]
    assert not missing, f"docs/development.md does not describe make {', make '.join(missing)}"


def test_the_parser_pairs_each_curl_with_its_expected_status() -> None:
    block = Block(
        "x.md",
        1,
        "sh",
        'A=$(curl -s x) && curl -s y \\\n   -d "{}"\n# → 409 taken\n'
        "curl -s z   # a comment, not an expectation\n",
    )
    assert block.expected_statuses() == ["409", "409", "2xx"]


@dataclass
class Stack:
    settings: Settings
    home: Path
    key: str
    env: dict[str, str]


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> AsyncIterator[Stack]:
    home = tmp_path_factory.mktemp("docs")
    (home / "var").mkdir()
    for name in _LINKED:
        (home / name).symlink_to(REPO_ROOT / name)
    port = free_port()
    settings = embedded_settings(
        database_url=f"sqlite+aiosqlite:///{home / 'var' / 'mention-router.db'}",
        embedded_key_file=home / "var" / "admin-api-key",
        api_port=port,
        api_auth=True,  # (the test suite turns keys off by default; a user has them on)
        metrics_port=0,
        # What a user gets (the suite's conftest picks the rules engine for speed elsewhere).
        classifier_engine=Settings.model_fields["classifier_engine"].default,
        ingest_allowed_networks="127.0.0.0/8,::1",
        webhook_allowed_networks="127.0.0.0/8,::1",
    )
    original = netguard.lookup

    async def loopback(host: str, port: int) -> list[str]:
        # Only loopback may be dialled from this machine: every name an example uses resolves there.
        return await original(host, port) if host in ("localhost", "127.0.0.1") else ["127.0.0.1"]

    netguard.lookup = loopback
    stop = asyncio.Event()
    runner = asyncio.create_task(run_embedded(settings, stop=stop, sources_file=EXAMPLE_SOURCES))
    try:
        key_file = settings.embedded_key_file

        async def routed() -> bool:
            if runner.done():
                runner.result()
            if not key_file.exists():
                return False
            headers = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as api:
                try:
                    page = (await api.get("/v1/mentions", params={"limit": 1})).json()
                except httpx.TransportError:
                    return False
            return bool(page.get("items"))

        await wait_for(routed, within=120, what="the examples routed")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("MR_") or k == "MR_KAFKA_BOOTSTRAP_SERVERS"
        }
        env.update(
            PATH=f"{REPO_ROOT / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
            MR_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
            MR_TOPIC_PREFIX=f"docs{uuid.uuid4().hex[:8]}.",
            MR_DATABASE_URL=settings.database_url,
            MR_EMBEDDED_KEY_FILE=str(key_file),
            MR_INGEST_ALLOW_FILE_URLS="true",
            MR_CLASSIFIER_ENGINE=settings.classifier_engine.value,
        )
        yield Stack(settings, home, key_file.read_text().strip(), env)
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)
        netguard.lookup = original


async def _ids(stack: Stack) -> dict[str, str]:
    """A routed mention and one of its open assignments, fresh for every block (examples change them):
    one that no example has touched, of a mention that has no product assignment (the workflow example
    reassigns to product, which a mention already at product refuses with 409)."""
    base = f"http://127.0.0.1:{stack.settings.api_port}"
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {stack.key}"}) as api:
        page = (await api.get("/v1/mentions", params={"status": "new", "limit": 100})).json()
    for mention in page["items"]:
        assignments = mention["assignments"]
        untouched = [a for a in assignments if a["status"] == "new" and a["assignee"] is None]
        if untouched and all(a["department"] != "product" for a in assignments):
            return {"MENTION": str(mention["id"]), "ASSIGNMENT": str(untouched[0]["id"])}
    raise AssertionError("no routed mention with an untouched assignment outside product")


async def _run(stack: Stack, block: Block) -> None:
    log = stack.home / "var" / f"statuses-{uuid.uuid4().hex[:8]}"
    port = str(stack.settings.api_port)
    script = re.sub(r"\b(localhost|127\.0\.0\.1):8000\b", rf"\1:{port}", block.text)
    env = {
        **stack.env,
        **await _ids(stack),
        "KEY": stack.key,
        "H": f"Authorization: Bearer {stack.key}",
        "MR_STATUS_LOG": str(log),
    }
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        _PRELUDE + script,
        cwd=stack.home,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    shown = out.decode(errors="replace")[-3000:]
    assert proc.returncode == 0, f"{block}: exit {proc.returncode}\n{shown}"
    statuses = log.read_text().split() if log.exists() else []
    want = block.expected_statuses()
    assert len(statuses) == len(want), (
        f"{block}: {len(statuses)} curl calls answered, {len(want)} expected\n{shown}"
    )
    for got, expected in zip(statuses, want, strict=True):
        ok = got.startswith("2") if expected == "2xx" else got == expected
        assert ok, (
            f"{block}: a curl answered {got}, the example says {expected} "
            f"(all: {statuses}, expected: {want})\n{shown}"
        )


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
async def test_the_examples_of_each_page_run(doc: Path, stack: Stack) -> None:
    for block in blocks(doc):
        if block.language == "sh":
            await _run(stack, block)
