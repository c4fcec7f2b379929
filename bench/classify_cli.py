"""`mention-router classify` over a file of generated mentions, as a user runs it: one process, start-up
(loading the model) included, wall time from launch to exit (issue 14: >= 150 mentions/s on 2,000).

    python -m bench.classify_cli [--count 2000]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.generate import mention_text
from shared.settings import REPO_ROOT


def classify_cli(count: int, workdir: Path, *, engine: str | None = None, seed: int = 14) -> dict[str, Any]:
    """Classifies `count` generated mentions (300-1,500 characters) with the CLI; its rate and peak RSS."""
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    source = workdir / "mentions.jsonl"
    with source.open("w", encoding="utf-8") as f:
        for i in range(count):
            f.write(json.dumps({"id": f"cli-{i}", "title": "", "text": mention_text(rng)}) + "\n")
    command = [str(Path(sys.executable).with_name("mention-router")), "classify", str(source)]
    command += ["--out", str(workdir / "classified.jsonl")]
    if engine:
        command += ["--engine", engine]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"mention-router classify exited {done.returncode}: {done.stderr[-2000:]}")
    lines = (workdir / "classified.jsonl").read_text(encoding="utf-8").count("\n")
    if lines != count:
        raise RuntimeError(f"mention-router classify wrote {lines} of {count} mentions")
    return {
        "mentions": count,
        "engine": engine or "default",
        "seconds": round(elapsed, 2),
        "per_s": round(count / elapsed, 1),
        "cpu_s": round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 2),
        "peak_rss_mb": round(after.ru_maxrss / 1024, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=2_000)
    parser.add_argument("--engine", help="rules | learned | cascade (default: the configured one)")
    args = parser.parse_args(argv)
    out = classify_cli(args.count, REPO_ROOT / "var" / "bench" / "classify-cli", engine=args.engine)
    print(json.dumps(out, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
