"""Readable text from HTML, and the feed links of an HTML page, in time linear in the input.

The standard library's html.parser scans ahead from every "<" to find where a tag ends, and again from the
next one when it cannot tell, so markup such as "<a<a<a…" (which a feed carries escaped as "&lt;a&lt;a…")
costs time quadratic in its length: 200 kB took 11 s, on the event loop. Here a tag runs from "<" to the
next ">" and may not contain another "<" (not even inside a quoted attribute value), so no match attempt
reads past a "<" and each character is looked at a bounded number of times. A comment, script or style
that is never closed runs to the end of the input, as in a browser.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urljoin

# Long strings are worked on a piece at a time where one C call would otherwise hold the GIL (and so the
# event loop, which shares it with the parsing thread) for tens of milliseconds.
_PIECE = 64 * 1024
# One regex search finds the next markup token; the "<"s that start none (a stray "<" or "a < b") are
# skipped inside the search, at C speed. Possessive repetition: a failed tag gives nothing back to retry.
_TOKEN = re.compile(
    r"<!--"  # a comment: its end is found with str.find
    r"|<(/?)([A-Za-z][^\s/<>]*)((?:[^<>\"']|\"[^\"<]*\"|'[^'<]*')*+)>"  # a start or end tag
    r"|<[!?][^<>]*>"  # a declaration, CDATA or processing instruction: dropped
)
# Raw text (as html.parser has it): no markup inside, up to the end tag, and never shown.
_RAW_TEXT_END = {name: re.compile(rf"</{name}[^<>]*>", re.IGNORECASE) for name in ("script", "style")}
_HIDDEN = {"noscript", "template"}
_BLOCK = {"p", "br", "div", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "tr", "pre"}
_ATTRIBUTE = re.compile(r"""([^\s=/>"']+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?""")
_LINK_TAG = re.compile(r"<link(?=[\s/>])((?:[^<>\"']|\"[^\"<]*\"|'[^'<]*')*+)>", re.IGNORECASE)
_FEED_TYPES = ("application/rss+xml", "application/atom+xml", "application/rdf+xml")
# Feed links sit in <head>: a page that has not announced one after this many <link> tags never will.
_MAX_LINK_TAGS = 1_000


def _unescape(text: str) -> str:
    return html.unescape(text) if "&" in text else text


def html_to_text(value: str) -> str:
    """Readable text from HTML: entities decoded, scripts and styles dropped, whitespace folded."""
    if "<" not in value:
        return fold_whitespace(_unescape(value))
    parts: list[str] = []
    hidden = 0  # depth inside <noscript>/<template>, whose content a reader does not see
    pos = 0
    while (match := _next_token(value, pos)) is not None:
        if not hidden:
            # Entities are decoded per run of text, once: "&amp;lt;" stays "&lt;".
            parts.append(_unescape(value[pos : match.start()]))
        pos = match.end()
        name = (match.group(2) or "").lower()
        if match.group(0) == "<!--":
            end = value.find("-->", pos)
            if end < 0:
                return fold_whitespace("".join(parts))
            pos = end + 3
        elif not name:
            continue  # a declaration or processing instruction
        elif match.group(1):  # an end tag
            if name in _HIDDEN and hidden:
                hidden -= 1
            elif name in _BLOCK:
                parts.append(" ")
        elif name in _RAW_TEXT_END and not match.group(3).rstrip().endswith("/"):
            end_match = _RAW_TEXT_END[name].search(value, pos)
            pos = len(value) if end_match is None else end_match.end()
        elif name in _HIDDEN:
            hidden += 1
        elif name in _BLOCK:
            parts.append(" ")
    if not hidden:
        parts.append(_unescape(value[pos:]))
    return fold_whitespace("".join(parts))


def _next_token(value: str, pos: int) -> re.Match[str] | None:
    """The next markup token at or after `pos`. Searched a window at a time: one search through half a
    megabyte of "<a<a<a…" holds the GIL for tens of milliseconds."""
    while pos < len(value):
        end = min(len(value), pos + _PIECE)
        match = _TOKEN.search(value, pos, end)
        if match is not None or end == len(value):
            return match
        # No token lies wholly in the window. Only one that starts at its last "<" can run past its end
        # (a token holds no other "<"), so the search goes on from there.
        last = value.rfind("<", pos, end)
        if last > pos:
            pos = last
        elif last == pos:
            # A token longer than the window, if it is one; it ends before the next "<" in any case.
            match = _TOKEN.match(value, pos)
            if match is not None:
                return match
            pos += 1
        else:
            pos = end
    return None


def fold_whitespace(text: str) -> str:
    """`text` with each run of whitespace made one space, and none at either end (`re.sub(r"\\s+", " ")`
    and `strip()`, which on "a a a …" held the GIL for 80 ms per 500 kB)."""
    if len(text) <= _PIECE:
        return " ".join(text.split())
    out: list[str] = []
    space_before = False
    for start in range(0, len(text), _PIECE):
        piece = text[start : start + _PIECE]
        words = piece.split()
        if words:
            if out and (space_before or piece[0].isspace()):
                out.append(" ")
            out.append(" ".join(words))
        space_before = piece[-1].isspace() or (space_before and not words)
    return "".join(out)


def translate(text: str, table: dict[int, str]) -> str:
    """`text.translate(table)` a piece at a time (one call on 10 MB holds the GIL for 60 ms)."""
    if len(text) <= _PIECE:
        return text.translate(table)
    return "".join(text[i : i + _PIECE].translate(table) for i in range(0, len(text), _PIECE))


def _attributes(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, double, single, bare in _ATTRIBUTE.findall(text):
        out.setdefault(name.lower(), html.unescape(double or single or bare))
    return out


def discover_feed_url(html_body: bytes, base_url: str) -> str | None:
    """The first RSS/Atom feed an HTML page announces with <link rel="alternate">, as an absolute URL.

    Reads the first megabyte and at most a thousand <link> tags: it runs on the event loop."""
    page = html_body[:1_000_000].decode("utf-8", "replace")
    for count, match in enumerate(_LINK_TAG.finditer(page)):
        if count >= _MAX_LINK_TAGS:
            break
        attributes = _attributes(match.group(1))
        rel = attributes.get("rel", "").lower().split()
        if (
            "alternate" in rel
            and attributes.get("type", "").lower() in _FEED_TYPES
            and attributes.get("href")
        ):
            return urljoin(base_url, attributes["href"])
    return None
