"""`mention-router classify` and `evaluate`, and the metrics behind `evaluate`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from services.cli import main
from shared.classify.evaluation import format_report, score_field
from shared.settings import REPO_ROOT


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


LINES = [
    {
        "id": "a",
        "title": "Tessellate security hole",
        "text": "Found an XSS vulnerability in the embed widget.",
    },
    {"id": "b", "title": "", "text": "How do I export a board to PDF?", "author": "Ana", "source": "blog"},
    {"id": "c", "title": "Dark mode", "text": "Please add a dark mode. It would be great."},
]


def test_classify_writes_each_line_back_with_its_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in LINES) + "\n", encoding="utf-8")
    code, out, _ = _run(["classify", "--engine", "rules", str(path)], capsys)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    for row in rows:
        assert {"sentiment", "sentiment_score", "topics", "intent", "language", "urgency", "evidence"} <= set(
            row
        )
        assert "departments" not in row
    assert "security" in rows[0]["topics"]
    assert rows[1]["intent"] == "question" and rows[1]["author"] == "Ana"
    assert rows[2]["intent"] == "suggestion"


def test_classify_route_adds_the_departments_primary_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(json.dumps(line) for line in LINES) + "\n"))
    code, out, _ = _run(["classify", "--engine", "rules", "--route"], capsys)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[0]["departments"] == ["rnd", "pr"]
    assert rows[1]["departments"] == ["support"]
    assert rows[2]["departments"] == ["product"]
    assert rows[0]["routing"][0] == {
        "department": "rnd",
        "priority": "P1",
        "rules": ["security-to-rnd-and-pr"],
    }


def test_a_bad_line_is_reported_and_the_rest_classified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"id": "a", "text": "fine"}\nnot json\n[1, 2]\n{"id": "b", "text": 42}\n', encoding="utf-8"
    )
    code, out, err = _run(["classify", "--engine", "rules", str(path)], capsys)
    assert code == 1
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["a", "b"]
    assert "line 2: not JSON" in err and "line 3: expected a JSON object" in err


def test_evaluate_reports_per_label_scores_macro_f1_and_a_confusion_matrix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gold.jsonl"
    gold = [
        {**LINES[0], "sentiment": "negative", "departments": ["rnd", "pr"], "topics": ["security"]},
        {**LINES[1], "sentiment": "neutral", "departments": ["support"], "intent": "question"},
        {**LINES[2], "sentiment": "positive", "departments": ["product"], "intent": "suggestion"},
    ]
    path.write_text("\n".join(json.dumps(g) for g in gold) + "\n", encoding="utf-8")
    code, out, _ = _run(["evaluate", "--engine", "rules", str(path)], capsys)
    assert code == 0
    assert "== departments (multi-label, n=3) macro-F1" in out
    assert "== sentiment (single-label, n=3)" in out
    assert "confusion (rows gold, columns predicted)" in out
    code, out, _ = _run(["evaluate", "--engine", "rules", "--json", str(path)], capsys)
    report = json.loads(out)[str(path)]
    fields = {f["field"]: f for f in report["fields"]}
    assert fields["departments"]["macro_f1"] == 1.0
    assert fields["intent"]["n"] == 2
    assert fields["departments"]["confusion"]["rnd"] == {"pr": 1, "rnd": 1}


def test_score_field_single_label() -> None:
    report = score_field(
        "s", ["pos", "pos", "neg", "neu"], ["pos", "neg", "neg", "pos"], labels=["pos", "neg", "neu"]
    )
    scores = {s.label: s for s in report.labels}
    assert scores["pos"].precision == pytest.approx(0.5) and scores["pos"].recall == pytest.approx(0.5)
    assert scores["neg"].precision == pytest.approx(0.5) and scores["neg"].recall == pytest.approx(1.0)
    assert scores["neu"].f1 == 0.0
    assert report.macro_f1 == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)
    assert report.accuracy == pytest.approx(0.5)
    assert report.confusion == {"neg": {"neg": 1}, "neu": {"pos": 1}, "pos": {"neg": 1, "pos": 1}}
    assert "macro-F1 0.389" in format_report([report])


def test_score_field_multi_label_counts_each_label_and_empty_sets() -> None:
    report = score_field(
        "d",
        [["rnd", "pr"], ["support"], []],
        [["rnd"], ["support", "pr"], []],
        labels=["rnd", "pr", "support"],
    )
    scores = {s.label: s for s in report.labels}
    assert (scores["rnd"].f1, scores["support"].f1, scores["pr"].f1) == (1.0, 1.0, 0.0)
    assert report.accuracy == pytest.approx(1 / 3)
    assert report.confusion["(none)"] == {"(none)": 1}


def test_classify_with_no_settings_uses_the_cascade_and_keeps_the_order_of_the_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new user's `mention-router classify --route`: the default engine, lines batched for the model
    and written back in their order, a bad line refused on its own."""
    monkeypatch.delenv("MR_CLASSIFIER_ENGINE", raising=False)  # tests/conftest.py sets rules
    lines = [
        *LINES,
        {"id": "d", "title": "", "text": "The battery dies in two hours."},
        {"id": "e", "title": "", "text": "Not bad at all, the update fixed every problem I had."},
    ] * 30
    path = tmp_path / "in.jsonl"
    path.write_text(
        "\n".join(
            [*(json.dumps(line) for line in lines[:70]), "{not json", *(json.dumps(x) for x in lines[70:])]
        )
        + "\n",
        encoding="utf-8",
    )
    code, out, err = _run(["classify", "--route", str(path)], capsys)
    assert code == 1 and "line 71" in err  # the bad line, reported; the others classified
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in rows] == [x["id"] for x in lines]
    by_id = {r["id"]: r for r in rows}
    assert all(r["evidence"]["sentiment"] and r["engine"] == "cascade" for r in rows)
    assert by_id["d"]["sentiment"] == "negative" and "rnd" in by_id["d"]["departments"]
    assert by_id["e"]["sentiment"] == "positive"
    assert by_id["b"]["departments"] == ["support"]


def test_a_file_is_read_in_long_calls_and_a_pipe_in_short_ones(tmp_path: Path) -> None:
    from shared.classify.batch import BATCH_LINES, STREAM_BATCH_LINES, batch_lines_for

    path = tmp_path / "in.jsonl"
    path.write_text("{}\n", encoding="utf-8")
    with path.open(encoding="utf-8") as f:
        assert batch_lines_for(f) == BATCH_LINES
    read_end, write_end = os.pipe()
    os.close(write_end)
    with os.fdopen(read_end, encoding="utf-8") as f:
        assert batch_lines_for(f) == STREAM_BATCH_LINES < BATCH_LINES
    assert batch_lines_for(io.StringIO("{}\n")) == BATCH_LINES


def test_a_slow_stream_gets_its_answers_without_waiting_for_the_end() -> None:
    """`… | mention-router classify`: the first lines of a stream still being written are answered
    while it goes on (a pipe is classified STREAM_BATCH_LINES at a time and the answers flushed)."""
    from shared.classify.batch import STREAM_BATCH_LINES

    exe = Path(sys.executable).with_name("mention-router")
    command = [str(exe), "classify", "--engine", "rules"]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        stdout = proc.stdout
        for i in range(STREAM_BATCH_LINES):
            proc.stdin.write(json.dumps({"id": f"s{i}", "text": "The export to PDF crashes."}) + "\n")
        proc.stdin.flush()  # and the stream stays open
        answered: list[str] = []
        reader = threading.Thread(target=lambda: answered.extend(stdout.readline() for _ in range(2)))
        reader.start()
        reader.join(timeout=60)
        alive = reader.is_alive()
        proc.stdin.close()
        proc.wait(timeout=60)
    assert not alive, "no answer while the stream was still open"
    assert [json.loads(line)["id"] for line in answered] == ["s0", "s1"]
    assert proc.returncode == 0
