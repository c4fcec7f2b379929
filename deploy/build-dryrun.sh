#!/usr/bin/env bash
# What `docker build -f deploy/Dockerfile .` runs in its build stage, run on this host instead (there is
# no Docker engine here): wheels of the project and its pinned dependencies, a fresh virtualenv installed
# from those wheels alone, the import smoke test, and then what the runtime image relies on — the
# console script, migrations shipped inside the wheel, config files at MR_TAXONOMY_FILE/MR_ROUTING_FILE.
# Needs python3.11 and PyPI; not part of `make lint` (it downloads every dependency).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON311:-python3.11}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
started=$SECONDS

# The build context as .dockerignore leaves it.
mkdir -p "$work/src/deploy"
cp "$ROOT"/{pyproject.toml,README.md,constraints.txt} "$work/src/"
cp "$ROOT/deploy/build-constraints.txt" "$work/src/"
cp -r "$ROOT/shared" "$ROOT/services" "$ROOT/config" "$work/src/"
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +

cd "$work/src"
"$PY" -m venv "$work/buildenv"
PIP_CONSTRAINT="$work/src/build-constraints.txt" "$work/buildenv/bin/pip" wheel -q \
    --wheel-dir "$work/wheels" --constraint constraints.txt .
"$PY" -m venv "$work/venv"
"$work/venv/bin/pip" install -q --no-index --find-links "$work/wheels" mention-router
"$work/venv/bin/python" -c "import services.cli, services.api.app, services.ingest.bootstrap, services.classifier.bootstrap, services.router.bootstrap"

# The runtime stage: only /opt/venv and /app/config, run from another directory.
mkdir -p "$work/app" && cp -r "$ROOT/config" "$work/app/config"
cd "$work/app"
export MR_TAXONOMY_FILE="$work/app/config/taxonomy.yaml" MR_ROUTING_FILE="$work/app/config/routing.yaml"
export MR_DATABASE_URL="sqlite+aiosqlite:///$work/app/db.sqlite"
"$work/venv/bin/mention-router" migrate
"$work/venv/bin/mention-router" schemas --out "$work/app/schemas" >/dev/null
"$work/venv/bin/python" - <<'PY'
import os
from services.classifier.bootstrap import build as classifier
from services.router.bootstrap import build as router
from shared.bus import MemoryBus
from shared.db import create_engine
from shared.settings import Settings

# Both load the taxonomy and the rules from MR_TAXONOMY_FILE / MR_ROUTING_FILE, as in the image.
settings = Settings()
classifier(settings, bus=MemoryBus())
router(settings, bus=MemoryBus(), engine=create_engine(settings.database_url))
print("services build from the installed wheel with", os.environ["MR_TAXONOMY_FILE"])
PY
echo "build dry run passed in $((SECONDS - started))s: $(ls "$work/wheels" | wc -l) wheels"
