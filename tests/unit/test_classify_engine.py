"""The rule engine: topics with evidence, VADER sentiment and stop-word language detection."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.classify import RuleEngine, Taxonomy, detect_language
from shared.events import Classification, Mention, Sentiment
from shared.settings import REPO_ROOT


def _mention(text: str, *, title: str = "", language_hint: str | None = None) -> Mention:
    return Mention(
        id="m1",
        source_id="s1",
        title=title,
        text=text,
        published_at=datetime(2026, 1, 1, tzinfo=UTC),
        language_hint=language_hint,
    )


@pytest.fixture(scope="module")
def engine() -> RuleEngine:
    return RuleEngine(Taxonomy.from_file(REPO_ROOT / "config" / "taxonomy.yaml"))


@pytest.fixture(scope="module")
def small() -> RuleEngine:
    return RuleEngine(
        Taxonomy.from_dict(
            {
                "version": 3,
                "topics": {
                    "bug": {"department": "rnd", "terms": ["bug", "crash", "doesn't work", "data loss"]},
                    "security": {"department": "rnd", "terms": ["xss"], "regexes": [r"CVE-\d{4}-\d{4,}"]},
                    "pricing": {"department": "marketing", "terms": ["pricing"]},
                },
            }
        )
    )


def _topics(c: Classification) -> dict[str, list[str]]:
    return {t.name: t.evidence for t in c.topics}


# --- topics -----------------------------------------------------------------------------------


@pytest.mark.parametrize("apostrophe", ["'", "\u2019"])
def test_a_curly_apostrophe_matches_like_a_straight_one(small: RuleEngine, apostrophe: str) -> None:
    c = small.classify(_mention(f"The export doesn{apostrophe}t work since Monday"))
    assert _topics(c) == {"bug": ["term:doesn't work"]}


def test_evidence_lists_each_matched_term_once(small: RuleEngine) -> None:
    c = small.classify(_mention("Crash after crash, then data loss. Another CRASH."))
    assert _topics(c) == {"bug": ["term:crash", "term:data loss"]}


def test_a_cve_identifier_is_security_with_the_identifier_as_evidence(small: RuleEngine) -> None:
    c = small.classify(_mention("Patched CVE-2026-12345 today"))
    assert _topics(c) == {"security": ["regex:CVE-2026-12345"]}


def test_the_title_is_classified_too(small: RuleEngine) -> None:
    c = small.classify(_mention("nothing else to say", title="Pricing"))
    assert _topics(c) == {"pricing": ["term:pricing"]}


def test_confidence_grows_with_distinct_hits_and_orders_the_topics(small: RuleEngine) -> None:
    c = small.classify(_mention("A bug, a crash and data loss; also pricing"))
    assert [t.name for t in c.topics] == ["bug", "pricing"]
    bug, price = c.topics
    assert bug.confidence == pytest.approx(0.85)
    assert price.confidence == pytest.approx(0.55)


def test_confidence_is_capped_and_evidence_is_bounded() -> None:
    words = [f"w{i}" for i in range(20)]
    taxonomy = Taxonomy.from_dict({"topics": {"many": {"department": "rnd", "terms": words}}})
    c = RuleEngine(taxonomy).classify(_mention(" ".join(words)))
    assert c.topics[0].confidence == 0.95
    assert len(c.topics[0].evidence) == 10


def test_the_shipped_taxonomy_labels_a_cve_as_security(engine: RuleEngine) -> None:
    c = engine.classify(_mention("Researchers published CVE-2026-12345 for the embed widget."))
    assert "security" in _topics(c)
    assert "regex:CVE-2026-12345" in _topics(c)["security"]


def test_the_engine_names_itself_and_the_taxonomy_version(small: RuleEngine) -> None:
    c = small.classify(_mention("hello"))
    assert (c.engine, c.engine_version) == ("rules", "rules-1+taxonomy-3")


# --- sentiment --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I love this app, the new templates are amazing and wonderful!", Sentiment.POSITIVE),
        ("This is terrible. Awful support, I hate it and I am furious.", Sentiment.NEGATIVE),
        ("The meeting is on Tuesday in the office on the second floor.", Sentiment.NEUTRAL),
    ],
)
def test_sentiment_on_clear_examples(engine: RuleEngine, text: str, expected: Sentiment) -> None:
    c = engine.classify(_mention(text))
    assert c.sentiment is expected
    if expected is Sentiment.POSITIVE:
        assert c.sentiment_score >= 0.5
        assert c.sentiment_confidence > 0.5
    elif expected is Sentiment.NEGATIVE:
        assert c.sentiment_score <= -0.5
        assert c.sentiment_confidence > 0.5
    else:
        assert c.sentiment_score == 0.0
        assert c.sentiment_confidence == 0.5
    assert c.sentiment_evidence[0].startswith("vader:compound=")


# --- language ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The board is slow and it is not what we were promised for the team.", "en"),
        ("Die Anwendung ist nicht schnell und ich bin mit der Lösung auf dem Weg.", "de"),
        ("Le produit est une catastrophe pour les équipes et nous avons des problèmes.", "fr"),
        ("El producto es muy bueno para los equipos y no tiene problemas con la red.", "es"),
    ],
)
def test_language_detection(text: str, expected: str) -> None:
    assert detect_language(text) == expected
    # Enough stop words outvote the source's hint.
    assert detect_language(text, hint="it") == expected


@pytest.mark.parametrize("text", ["", "Tessellate", "12345 67890", "Tessellate v2.1 released"])
def test_too_little_text_falls_back_to_the_hint_or_und(text: str) -> None:
    assert detect_language(text, hint="de") == "de"
    assert detect_language(text) == "und"


def test_the_engine_uses_the_sources_language_hint(engine: RuleEngine) -> None:
    assert engine.classify(_mention("Tessellate", language_hint="fr")).language == "fr"
    assert engine.classify(_mention("Tessellate")).language == "und"


# --- edge cases -------------------------------------------------------------------------------


def test_empty_text_is_a_neutral_classification(engine: RuleEngine) -> None:
    c = engine.classify(_mention(""))
    assert c.sentiment is Sentiment.NEUTRAL
    assert c.topics == []
    assert c.language == "und"


def test_a_one_megabyte_text_is_classified_from_its_beginning(engine: RuleEngine) -> None:
    sentence = "It doesn't work and the toolbar is confusing, but I love the templates. "
    text = (sentence * (1_000_000 // len(sentence) + 1))[:1_000_000]
    c = engine.classify(_mention(text))
    assert isinstance(c, Classification)
    assert {"bug", "praise"} <= set(_topics(c))
    assert c.language == "en"


def test_a_one_megabyte_text_without_spaces_does_not_break_the_engine(engine: RuleEngine) -> None:
    c = engine.classify(_mention("x" * 1_000_000))
    assert c.sentiment is Sentiment.NEUTRAL
    assert c.topics == []
