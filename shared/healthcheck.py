"""`python -m shared.healthcheck [--ready]`: the container healthcheck, for every service of the one image.

A stage (ingest, classifier, router) answers on its metrics port, the API on its own port; whichever
answers /healthz (with --ready: /readyz, i.e. connected to Kafka, or to the database for the API) with
200 makes the container healthy. Exit status 0 = healthy, 1 = not.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def _ok(port: str, path: str) -> bool:
    if not port or port == "0":
        return False
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    path = "/readyz" if "--ready" in (sys.argv[1:] if argv is None else argv) else "/healthz"
    # Read the two ports straight from the environment: the check runs every few seconds and must not
    # fail on an unrelated setting that the service itself would report.
    ports = (os.environ.get("MR_METRICS_PORT", "9100"), os.environ.get("MR_API_PORT", "8000"))
    return 0 if any(_ok(p, path) for p in ports) else 1


if __name__ == "__main__":
    sys.exit(main())
