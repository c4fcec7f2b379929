"""`python -m bench.classifier_bench`: mentions classified per second on one core, per engine, on
300- and 1,500-character texts, with VADER alone as the baseline measured in the same run, and the
resident memory of a process holding each engine (now, and its peak while loading).

Texts are built from the project's labelled mentions (data/labelled/), joined and cut at a word
boundary to the target length, so that they carry the vocabulary and sentiment of real mentions.
Native thread pools (BLAS, tokenizers) are held to one thread, so every figure is per core. Each
engine runs in a fresh process, whose resident memory after classifying is that engine's (the peak,
ru_maxrss, also counts the model file mapped while loading).

    python -m bench.classifier_bench [--seconds 3] [--model models/minilm-v3.npz] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.settings import REPO_ROOT

LENGTHS = (300, 1500)


def texts_of(length: int, n: int, *, seed: int = 7) -> list[str]:
    rows = []
    for name in ("train.jsonl", "test.jsonl"):
        with (REPO_ROOT / "data" / "labelled" / name).open(encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts: list[str] = []
        while sum(len(p) + 1 for p in parts) < length:
            row = rng.choice(rows)
            parts.append(f"{row['title']}. {row['text']}")
        text = " ".join(parts)[:length]
        out.append(text[: text.rfind(" ")] if " " in text else text)
    return out


def _engine(kind: str, model: Path | None) -> Any:
    from shared.classify.factory import build_engine
    from shared.classify.taxonomy import Taxonomy
    from shared.settings import ClassifierEngineKind, Settings

    settings = Settings()
    taxonomy = Taxonomy.from_file(settings.taxonomy_file)
    return build_engine(settings, taxonomy, kind=ClassifierEngineKind(kind), model_path=model)


def rate(classify: Any, items: list[Any], seconds: float) -> float:
    """Calls per second over at least `seconds` (after a warm-up pass over ten items)."""
    for item in items[:10]:
        classify(item)
    done = 0
    start = time.perf_counter()
    while True:
        for item in items:
            classify(item)
        done += len(items)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def _mentions(texts: list[str]) -> list[Any]:
    from shared.events import Mention

    at = datetime(2026, 11, 1, tzinfo=UTC)
    return [Mention(id=f"b{i}", source_id="bench", text=t, published_at=at) for i, t in enumerate(texts)]


def measure(kind: str, model: Path | None, seconds: float, n: int) -> dict[str, Any]:
    """One engine (or `vader`) in this process: rates per length, the cascade's escalation share, RSS."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    out: dict[str, Any] = {"engine": kind}
    with threadpool_limits(limits=1):
        if kind == "vader":
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            vader = SentimentIntensityAnalyzer()
            for length in LENGTHS:
                out[f"per_s_{length}"] = round(rate(vader.polarity_scores, texts_of(length, n), seconds))
        else:
            engine = _engine(kind, model)
            out["version"] = engine.version
            for length in LENGTHS:
                items = _mentions(texts_of(length, n))
                if kind == "cascade":
                    engine.escalated = engine.classified = 0
                batches = [items[i : i + 32] for i in range(0, len(items), 32)]
                per_batch = len(items) / len(batches)
                out[f"per_s_{length}"] = round(rate(engine.classify_many, batches, seconds) * per_batch)
                if kind == "cascade":
                    out[f"escalated_{length}"] = round(engine.escalated / max(1, engine.classified), 3)
    out["rss_mb"] = round(_rss_kb() / 1024, 1)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def _one_core_env() -> dict[str, str]:
    """The environment of a measuring process: every native thread pool held to one thread."""
    env = dict(os.environ)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[name] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def _rss_kb() -> int:
    """Resident memory now (the peak, ru_maxrss, also counts the model file mapped while loading)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per engine and length")
    parser.add_argument("--n", type=int, default=200, help="distinct texts per length")
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "minilm-v3.npz")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one engine and print JSON
    args = parser.parse_args(argv)
    if args.one:
        kind, _, model = args.one.partition(":")
        print(json.dumps(measure(kind, Path(model) if model else None, args.seconds, args.n)))  # noqa: T201
        return
    runs = [("vader", None), ("rules", None), ("learned", args.model), ("cascade", args.model)]
    results = []
    for kind, model in runs:
        one = f"{kind}:{model or ''}"
        cmd = [sys.executable, "-m", "bench.classifier_bench", "--one", one, "--seconds", str(args.seconds)]
        cmd += ["--n", str(args.n)]
        # A fresh process per engine: its RSS is that engine's alone.
        done = subprocess.run(
            cmd, capture_output=True, text=True, check=True, cwd=REPO_ROOT, env=_one_core_env()
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["model"] = model.name if model else None
        results.append(result)
    header = (
        f"{'engine':<10}{'model':<15}{'300 chars/s':>12}{'1500 chars/s':>13}{'escalated':>10}"
        f"{'RSS MB':>8}{'peak MB':>9}"
    )
    print(header)  # noqa: T201
    for r in results:
        esc = r.get("escalated_300")
        print(  # noqa: T201
            f"{r['engine']:<10}{(r['model'] or '-'):<15}{r['per_s_300']:>12}{r['per_s_1500']:>13}"
            f"{(f'{esc:.0%}' if esc is not None else '-'):>10}{r['rss_mb']:>8}{r['peak_rss_mb']:>9}"
        )
    if args.json:
        args.json.write_text(json.dumps({"at": datetime.now(UTC).isoformat(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
