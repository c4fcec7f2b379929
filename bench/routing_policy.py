"""The routing rules' departments on the training data's validation tenth, as configured and with every
topic rule adding its department (`departments_none` removed): how `config/routing.yaml`'s choice that the
topic rules defer to a learned model was made, on validation rows, never on the test sets.

    python -m bench.routing_policy [--engine cascade|learned]

The validation tenth is the one `mention-router train` draws (same seed); the heads were refitted on all
rows after their choices, so the figures are optimistic in absolute terms — compare the two columns."""

from __future__ import annotations

import argparse
import random
from typing import Any

from shared.classify.batch import to_mention
from shared.classify.corpus import load_corpus
from shared.classify.evaluation import score_field
from shared.classify.factory import build_engine
from shared.classify.taxonomy import Taxonomy
from shared.classify.training import TrainingOptions
from shared.events import Department
from shared.routing import RuleSet
from shared.settings import REPO_ROOT, ClassifierEngineKind, Settings


def _without_deferral(rules: RuleSet, topics: Any) -> RuleSet:
    data: dict[str, Any] = rules.to_dict()
    for rule in data["rules"]:
        rule.get("when", {}).pop("departments_none", None)
    return RuleSet.from_dict(data, known_topics=topics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["cascade", "learned"], default="cascade")
    args = parser.parse_args()
    options = TrainingOptions(
        public_data=REPO_ROOT.parent / "shared" / "data",
        labelled=[REPO_ROOT / "data" / "labelled" / "train.jsonl"],
        corrections=[],
        database_url=None,
    )
    corpus = load_corpus(options)
    rng = random.Random(options.seed)  # the draw `train` makes
    is_val = [rng.random() < 0.1 for _ in corpus.examples]
    val = [ex for ex, v in zip(corpus.examples, is_val, strict=True) if v and ex.departments is not None]
    settings = Settings()
    taxonomy = Taxonomy.from_file(settings.taxonomy_file)
    engine = build_engine(settings, taxonomy, kind=ClassifierEngineKind(args.engine))
    configured = RuleSet.from_file(settings.routing_file, known_topics=taxonomy.topics)
    every = _without_deferral(configured, taxonomy.topics)
    mentions = [to_mention({"title": e.title, "text": e.text}, i) for i, e in enumerate(val, 1)]
    classifications = [
        c for s in range(0, len(mentions), 64) for c in engine.classify_many(mentions[s : s + 64])
    ]
    labels = [d.value for d in Department]
    table: dict[str, dict[str, list[list[str]]]] = {}
    for ex, m, c in zip(val, mentions, classifications, strict=True):
        for key in (ex.corpus or ex.source, "all"):
            row = table.setdefault(key, {"gold": [], "configured": [], "every": []})
            row["gold"].append(list(ex.departments or []))
            row["configured"].append([d.value for d in configured.evaluate(m, c).departments])
            row["every"].append([d.value for d in every.evaluate(m, c).departments])
    print(f"engine {engine.version}; departments macro-F1 on the validation tenth")  # noqa: T201
    print(f"{'corpus':<22}{'n':>6}{'configured':>12}{'every rule':>12}")  # noqa: T201
    for key, row in sorted(table.items()):
        f1 = {
            p: score_field("departments", row["gold"], row[p], labels=labels).macro_f1
            for p in row
            if p != "gold"
        }
        print(f"{key:<22}{len(row['gold']):>6}{f1['configured']:>12.3f}{f1['every']:>12.3f}")  # noqa: T201


if __name__ == "__main__":
    main()
