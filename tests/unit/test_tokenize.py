"""tokenize gives exactly the regex's tokens (runs of word characters, single other characters) of the
folded text, whatever the white space, scripts, marks and underscores."""

from __future__ import annotations

import random

import pytest

from shared.classify.matcher import TOKEN_RE, fold, tokenize

CASES = [
    "",
    "   ",
    "word",
    "Word, word. WORD!",
    "don't can\u2019t",
    "new-pricing pricing_v2 _lead trail_ __",
    "a.b.c ...?! (x) [y]",
    "price: $12.50 — 30% off…",
    "e\u0301te\u0301 café naïve",
    "日本語のテキスト、句読点。",
    "Ünïcødé ß ΣΊΣΥΦΟΣ",
    "tab\tnew\nline\r\x0bform\x0cfeed",
    "\x1cfile\x1dgroup\x1erecord\x1funit",
    "nbsp\u00a0thin\u2009ideographic\u3000space\u0085next",
    "x²³ ⅧⅫ ٣٤ ১২",
    "\x00nul\x07bell\x7f",
    "emoji 👍🏽 ok 🙂!",
    "word,",
    ",word",
    "w_,",
    "a'",
    "!",
]


def _regex(text: str) -> list[str]:
    return TOKEN_RE.findall(fold(text))


@pytest.mark.parametrize("text", CASES)
def test_tokens_are_the_regexs(text: str) -> None:
    assert tokenize(text) == _regex(text)


def test_tokens_are_the_regexs_on_random_text() -> None:
    rng = random.Random(18)
    alphabet = "aZ9_ é\u0301\u00a0\x1c\t\n.,'!?-\u3000日\u00b2\u2167\u2019👍"
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        assert tokenize(text) == _regex(text), repr(text)
