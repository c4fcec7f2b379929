"""The rule engine: topics, lexicon sentiment, intent, urgency and language, each with a confidence and
its evidence; and bad input (empty, 1 MB, binary garbage, mixed scripts) handled without an exception."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime

import pytest

from shared.classify import RuleEngine, Taxonomy, detect_language
from shared.classify.language import guess_language
from shared.events import Classification, Intent, Mention, MentionKind, Sentiment
from shared.settings import REPO_ROOT


def _mention(
    text: str,
    *,
    title: str = "",
    language_hint: str | None = None,
    influence: int = 1,
    kind: MentionKind = MentionKind.POST,
) -> Mention:
    return Mention(
        id="m1",
        source_id="s1",
        title=title,
        text=text,
        kind=kind,
        published_at=datetime(2026, 1, 1, tzinfo=UTC),
        language_hint=language_hint,
        influence=influence,
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
    assert (c.engine, c.engine_version) == ("rules", "rules-2+taxonomy-3")


def test_the_shipped_taxonomy_has_the_sixteen_topics() -> None:
    taxonomy = Taxonomy.from_file(REPO_ROOT / "config" / "taxonomy.yaml")
    assert {
        "bug",
        "outage",
        "security",
        "feature_request",
        "usability",
        "pricing",
        "account",
        "order",
        "how_to",
        "praise",
        "competitor",
        "press",
        "crisis",
        "partnership",
        "hiring",
        "research",
    } <= set(taxonomy.topics)


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
    assert c.sentiment_evidence[0].startswith("lexicon:")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Not bad at all.", Sentiment.POSITIVE),
        ("No problems at all, it just works.", Sentiment.POSITIVE),
        ("It never crashed once in two weeks.", Sentiment.POSITIVE),
        ("The new release is not great.", Sentiment.NEGATIVE),
        ("The export doesn't work.", Sentiment.NEGATIVE),
        ("Gar nicht schlecht, wirklich.", Sentiment.POSITIVE),
    ],
)
def test_negation_turns_a_word_around(engine: RuleEngine, text: str, expected: Sentiment) -> None:
    assert engine.classify(_mention(text)).sentiment is expected


def test_an_intensifier_strengthens_and_capitals_emphasise(engine: RuleEngine) -> None:
    plain = engine.classify(_mention("The sync is good.")).sentiment_score
    assert engine.classify(_mention("The sync is very good.")).sentiment_score > plain
    assert engine.classify(_mention("The sync is GOOD.")).sentiment_score > plain
    assert engine.classify(_mention("The sync is good!!!")).sentiment_score > plain


def test_after_but_counts_more_than_before(engine: RuleEngine) -> None:
    c = engine.classify(_mention("I love the templates, but the sync is awful and slow."))
    assert c.sentiment is Sentiment.NEGATIVE
    assert "contrast:but" in c.sentiment_evidence
    c = engine.classify(_mention("The sync is awful, but I love the templates and the pen."))
    assert c.sentiment is Sentiment.POSITIVE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("New board for the offsite :)", Sentiment.POSITIVE),
        ("New board for the offsite :-(", Sentiment.NEGATIVE),
        ("New board for the offsite 😍🎉", Sentiment.POSITIVE),
        ("New board for the offsite 😡", Sentiment.NEGATIVE),
        ("See https://example.org/a:b for the board", Sentiment.NEUTRAL),
    ],
)
def test_emoticons_and_emoji(engine: RuleEngine, text: str, expected: Sentiment) -> None:
    assert engine.classify(_mention(text)).sentiment is expected


def test_sarcasm_phrases_are_negative(engine: RuleEngine) -> None:
    c = engine.classify(_mention("Great, another outage. Just what I needed before the board meeting."))
    assert c.sentiment is Sentiment.NEGATIVE


def test_words_that_are_false_friends_in_other_languages_do_not_count(engine: RuleEngine) -> None:
    # German "die" and French "l'" are VADER words in English.
    c = engine.classify(_mention("Die Vorlagen sind toll und die Anwendung läuft stabil."))
    assert c.language == "de"
    assert c.sentiment is Sentiment.POSITIVE


# --- intent and urgency -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("How do I export a board to PDF with one frame per page?", Intent.QUESTION),
        ("Charged twice and still waiting for my refund. Unacceptable.", Intent.COMPLAINT),
        ("Please add a dark mode, it would be great for late workshops.", Intent.SUGGESTION),
        ("Thank you for the lovely templates, our retros are fantastic now.", Intent.PRAISE),
        ("Tessellate announced a partnership with a university today.", Intent.INFORMATION),
    ],
)
def test_intent(engine: RuleEngine, text: str, expected: Intent) -> None:
    c = engine.classify(_mention(text))
    assert c.intent is expected
    assert c.intent_evidence
    assert 0 < c.intent_confidence <= 1


def test_urgency_grows_with_negativity_reach_and_crisis(engine: RuleEngine) -> None:
    calm = engine.classify(_mention("We drew the office floor plan on a board today."))
    crisis = engine.classify(
        _mention(
            "Data breach: customer boards leaked, and a lawsuit is coming. This is a disaster.", influence=3
        )
    )
    assert calm.urgency < 0.2
    assert crisis.urgency >= 0.8
    assert any(e.startswith("reach:") for e in crisis.urgency_evidence)
    assert any(e.startswith("topics:") for e in crisis.urgency_evidence)


def test_an_open_question_in_a_comment_is_more_urgent(engine: RuleEngine) -> None:
    text = "How can I restore a deleted board?"
    post = engine.classify(_mention(text))
    comment = engine.classify(_mention(text, kind=MentionKind.COMMENT))
    assert comment.urgency > post.urgency > 0
    assert "open question" in comment.urgency_evidence


# --- language ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The board is slow and it is not what we were promised for the team.", "en"),
        ("Die Anwendung ist nicht schnell und ich bin mit der Lösung auf dem Weg.", "de"),
        ("Le produit est une catastrophe pour les équipes et nous avons des problèmes.", "fr"),
        ("El producto es muy bueno para los equipos y no tiene problemas con la red.", "es"),
        ("How do I export a board to PDF?", "en"),
        ("ボードがまた落ちました。Tessellate のサポートに連絡しました。", "ja"),
        ("Доска снова не работает, поддержка молчит.", "ru"),
    ],
)
def test_language_detection(text: str, expected: str) -> None:
    assert detect_language(text) == expected
    # Enough evidence outvotes the source's hint.
    assert detect_language(text, hint="it") == expected


@pytest.mark.parametrize("text", ["", "Tessellate", "12345 67890", "Tessellate v2.1 released"])
def test_too_little_text_falls_back_to_the_hint_or_und(text: str) -> None:
    assert detect_language(text, hint="de") == "de"
    assert detect_language(text) == "und"
    assert guess_language(text).confidence == 0.0


def test_the_engine_uses_the_sources_language_hint(engine: RuleEngine) -> None:
    assert engine.classify(_mention("Tessellate", language_hint="fr")).language == "fr"
    assert engine.classify(_mention("Tessellate")).language == "und"


# --- every label carries its evidence ---------------------------------------------------------


def test_every_label_has_a_confidence_and_evidence(engine: RuleEngine) -> None:
    c = engine.classify(
        _mention("The board crashes every time I export, and support has not answered. Unacceptable!")
    )
    assert c.sentiment is Sentiment.NEGATIVE and c.sentiment_evidence and c.sentiment_confidence > 0.5
    assert c.topics and all(t.evidence and 0 < t.confidence <= 1 for t in c.topics)
    assert c.intent is Intent.COMPLAINT and c.intent_evidence
    assert c.language == "en" and c.language_evidence and c.language_confidence > 0
    assert c.urgency > 0 and c.urgency_evidence


# --- bad input: bounded, low confidence, no exception -----------------------------------------


def test_empty_text_is_a_low_confidence_neutral_classification(engine: RuleEngine) -> None:
    c = engine.classify(_mention(""))
    assert c.sentiment is Sentiment.NEUTRAL
    assert c.sentiment_confidence <= 0.5
    assert c.topics == []
    assert c.language == "und"
    assert c.language_confidence == 0.0
    assert c.urgency == 0.0


def test_a_one_megabyte_text_is_classified_from_its_beginning(engine: RuleEngine) -> None:
    sentence = "It doesn't work and the toolbar is confusing, but I love the templates. "
    text = (sentence * (1_000_000 // len(sentence) + 1))[:1_000_000]
    c = engine.classify(_mention(text))
    assert isinstance(c, Classification)
    assert {"bug", "praise"} <= set(_topics(c))
    assert c.language == "en"
    assert all(len(t.evidence) <= 10 for t in c.topics)
    assert len(c.sentiment_evidence) <= 12


def test_a_one_megabyte_text_without_spaces_does_not_break_the_engine(engine: RuleEngine) -> None:
    c = engine.classify(_mention("x" * 1_000_000))
    assert c.sentiment is Sentiment.NEUTRAL
    assert c.topics == []


def test_binary_garbage_is_a_low_confidence_label() -> None:
    engine = RuleEngine(Taxonomy.from_file(REPO_ROOT / "config" / "taxonomy.yaml"))
    rng = random.Random(7)
    for _ in range(20):
        blob = os.urandom(rng.randint(1, 5000)).decode("latin-1")
        c = engine.classify(_mention(blob, title=os.urandom(50).decode("utf-8", "replace")))
        assert c.sentiment_confidence <= 0.75
        assert c.language_confidence <= 0.95
        assert 0.0 <= c.urgency <= 1.0
        # The event must still serialise (no lone surrogates or other unencodable text in the evidence).
        Classification.model_validate_json(c.model_dump_json())


def test_control_characters_and_surrogates_do_not_break_the_engine(engine: RuleEngine) -> None:
    c = engine.classify(_mention("\x00\x01\x02 \ud800 broken \udfff text \x7f"))
    assert isinstance(c, Classification)


def test_mixed_scripts_get_the_majority_script_with_lower_confidence(engine: RuleEngine) -> None:
    mixed = "Tessellate のボードが遅い。 The board is slow today and the sync is broken. Доска тормозит."
    c = engine.classify(_mention(mixed))
    assert c.language in {"ja", "en", "ru"}
    assert c.language_confidence < 0.95
    assert "bug" in _topics(c) or "outage" in _topics(c)
    assert c.sentiment is Sentiment.NEGATIVE


def test_one_pass_over_several_vocabularies_finds_what_each_would_alone() -> None:
    import json

    from shared.classify.intent import CUE_TERMS, URGENCY_CUES
    from shared.classify.matcher import PhraseMatcher, VocabularyMatcher, tokenize
    from shared.classify.sentiment import PHRASES

    taxonomy = Taxonomy.from_file(REPO_ROOT / "config" / "taxonomy.yaml")
    vocabularies = {
        "topics": taxonomy.terms,
        "phrases": list(PHRASES),
        "cues": CUE_TERMS,
        "urgency": URGENCY_CUES,
    }
    combined = VocabularyMatcher(vocabularies)
    alone = {name: PhraseMatcher(terms) for name, terms in vocabularies.items()}
    lines = (REPO_ROOT / "data" / "labelled" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [f"{r['title']}. {r['text']}" for r in map(json.loads, lines)]
    texts += [
        "how do i how do you how to",
        "i'd like to see i'd love i wish",
        "not working not bad no problems",
    ]
    for text in texts:
        tokens = tokenize(text)
        found = combined.find(tokens)
        for name, matcher in alone.items():
            assert found.get(name, []) == list(matcher.find(tokens)), (name, text)
