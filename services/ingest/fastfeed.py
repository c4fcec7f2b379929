"""A fast path for plain RSS 2.0, RSS 1.0 and Atom 1.0: ElementTree (expat, in C) instead of feedparser's
SAX handlers, which cost about three quarters of ingest's CPU.

It returns entries shaped like feedparser's (the keys `normalise` reads), and for every document it accepts
they must be the entries feedparser would give. So it reads what feedparser reads (the caller passes the
document as `xmlsafety.decode` gives it: feedparser's own decoding) and does to each value what feedparser
does: strips it, repairs UTF-8 read as Latin-1, maps Windows-1252 punctuation out of the C1 controls,
resolves links against xml:base as feedparser tracks it, lets a permalink guid or an Atom id stand in for a
missing link and the last alternate link win, formats an Atom author as "name (email)", and reads dates
with feedparser's date parser.

Everything else it declines (None), and feedparser reads the document: an element in an entry that is not
in the tables below, an element twice where feedparser would keep one of the two, child elements inside a
text, attributes that change how feedparser reads a value (`mode`, a `type` other than text or html, `src`,
`base`, attributes of elements feedparser turns into dictionaries), entries anywhere but where we look,
namespace prefixes feedparser would map differently, an undecodable document. The parity tests
(tests/unit/test_fastfeed.py, with the fixtures in tests/fixtures/parity/) hold it to that.
"""

from __future__ import annotations

import contextlib
import io
import re
import xml.etree.ElementTree as ET
from typing import Any

from feedparser.datetimes import _parse_date  # feedparser's own date parser: the same dates either way
from feedparser.html import _cp1252
from feedparser.mixin import _FeedParserMixin
from feedparser.urls import _urljoin, make_safe_absolute_uri

from services.ingest import xmlsafety
from services.ingest.htmltext import translate

ATOM = "{http://www.w3.org/2005/Atom}"
CONTENT = "{http://purl.org/rss/1.0/modules/content/}"
DC = "{http://purl.org/dc/elements/1.1/}"
DCTERMS = "{http://purl.org/dc/terms/}"
WFW = "{http://wellformedweb.org/CommentAPI/}"
SLASH = "{http://purl.org/rss/1.0/modules/slash/}"
THR_URI = "http://purl.org/syndication/thread/1.0"
THR = "{" + THR_URI + "}"
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
RSS1 = "{http://purl.org/rss/1.0/}"
MEDIA = ("{http://search.yahoo.com/mrss/}", "{http://search.yahoo.com/mrss}")
FEEDBURNER = "{http://rssnamespace.org/feedburner/ext/1.0}"
GD_URI = "http://schemas.google.com/g/2005"
GD = "{" + GD_URI + "}"
XML = "{http://www.w3.org/XML/1998/namespace}"
XML_BASE = XML + "base"

# feedparser names an element of a namespace it knows by its standard prefix, whatever the document calls
# it; an element of any other namespace by the prefix the document declared for it.
_KNOWN_NAMESPACES = {uri.lower(): prefix for uri, prefix in _FeedParserMixin.namespaces.items()}
_STANDARD_PREFIXES = {prefix for prefix in _KNOWN_NAMESPACES.values() if prefix}
# The namespaces feedparser does not know that we read: only under the prefix `normalise` expects.
_OWN_PREFIXES = {THR_URI: "thr", GD_URI: "gd"}
_OWN_URIS = {prefix: uri for uri, prefix in _OWN_PREFIXES.items()}
_XLINK = "http://www.w3.org/1999/xlink"
_FIRST_ELEMENT = re.compile(rb"<\w")
_DOCTYPE = re.compile(rb"<!DOCTYPE", re.IGNORECASE)
_LINK_ENTITY = re.compile("&([A-Za-z0-9_]+);")
_TEXT_TYPES = {"text", "plain", "html", "text/plain", "text/html"}
_HTML_TYPES = {"application/xhtml+xml", "text/html"}


class _Decline(Exception):
    """Leave this document to feedparser."""


# What each element of an entry is. TEXT, CONTENT, DATE, URI: a value under a key; LINK: RSS's <link>
# text; GUID: RSS's <guid> (a permalink unless it says otherwise) or Atom's <id> (always one); ATOM_LINK:
# an Atom <link href>; AUTHOR: an Atom <author> block; REPLY: thr:in-reply-to; IGNORED: read by feedparser
# into keys `normalise` does not read, and must have no child elements.
TEXT, CONTENT_, DATE, URI, LINK, GUID, ATOM_LINK, AUTHOR, REPLY, IGNORED = range(10)
_Role = tuple[int, str]

_COMMON: dict[str, _Role] = {
    f"{CONTENT}encoded": (CONTENT_, "content"),
    f"{DC}title": (TEXT, "title"),
    f"{DC}description": (TEXT, "summary"),
    f"{DC}creator": (TEXT, "author"),
    f"{DC}date": (DATE, "updated_parsed"),
    f"{DC}subject": (IGNORED, ""),
    f"{DCTERMS}issued": (DATE, "published_parsed"),
    f"{DCTERMS}modified": (DATE, "updated_parsed"),
    f"{DCTERMS}created": (DATE, "created_parsed"),
    f"{WFW}commentRss": (URI, "wfw_commentrss"),
    f"{WFW}comment": (IGNORED, ""),
    f"{SLASH}comments": (TEXT, "slash_comments"),
    f"{FEEDBURNER}origLink": (IGNORED, ""),
    **{f"{media}{name}": (IGNORED, "") for media in MEDIA for name in ("thumbnail", "content")},
}
_RSS2: dict[str, _Role] = {
    **_COMMON,
    "title": (TEXT, "title"),
    "description": (TEXT, "summary"),
    "link": (LINK, "link"),
    "guid": (GUID, "id"),
    "author": (TEXT, "author"),
    "pubDate": (DATE, "published_parsed"),
    "category": (IGNORED, ""),
    "comments": (IGNORED, ""),
    "enclosure": (IGNORED, ""),
    "source": (IGNORED, ""),
}
_RSS1: dict[str, _Role] = {
    **_COMMON,
    f"{RSS1}title": (TEXT, "title"),
    f"{RSS1}description": (TEXT, "summary"),
    f"{RSS1}link": (LINK, "link"),
}
_ATOM: dict[str, _Role] = {
    **_COMMON,
    f"{ATOM}id": (GUID, "id"),
    f"{ATOM}title": (TEXT, "title"),
    f"{ATOM}summary": (TEXT, "summary"),
    f"{ATOM}content": (CONTENT_, "content"),
    f"{ATOM}link": (ATOM_LINK, ""),
    f"{ATOM}author": (AUTHOR, "author"),
    f"{ATOM}published": (DATE, "published_parsed"),
    f"{ATOM}updated": (DATE, "updated_parsed"),
    f"{ATOM}category": (IGNORED, ""),
    f"{ATOM}rights": (IGNORED, ""),
    f"{THR}in-reply-to": (REPLY, "thr_in-reply-to"),
    f"{THR}total": (TEXT, "thr_total"),
}
# Elements feedparser has no handler for: with any attribute at all it stores the attributes instead of
# the text.
_ATTRIBUTES_BECOME_THE_VALUE = {f"{WFW}commentRss", f"{SLASH}comments", f"{THR}total"}
# Elements whose `type` feedparser reads (and base64-decodes the text of when it is not text or html).
_TYPED = {"title", "summary", "content"}
_AUTHOR_PARTS = {f"{ATOM}name": "name", f"{ATOM}uri": "href", f"{ATOM}email": "email", f"{GD}image": ""}
_ATOM_LINK_ATTRIBUTES = {"rel", "type", "href", "hreflang", "title", "length", f"{THR}count", f"{THR}updated"}


def entries(data: bytes) -> tuple[list[dict[str, Any]], str] | None:
    """(entries, version) for a plain, well-formed feed; None to fall back to feedparser."""
    if xmlsafety.declares_entities(data):
        return None  # refused by the caller; never expanded here
    first = _FIRST_ELEMENT.search(data)
    if _DOCTYPE.search(data, 0, first.start() if first else len(data)):
        return None  # feedparser drops the DOCTYPE, and with it any default attributes expat would add
    try:
        root, declarations = _tree(data)
    except (ET.ParseError, ValueError, LookupError):
        return None
    try:
        _check_namespaces(declarations)
        version, table, entry_tag, items = _items(root)
        based = _check_no_other_entries(root, entry_tag, len(items))
        bases = _bases(root) if based else {}
        return [_entry(item, table, version, bases) for item in items], version
    except _Decline:
        return None


def _tree(data: bytes) -> tuple[ET.Element, list[tuple[str, str]]]:
    # Read 16 kB at a time (iterparse): the GIL is let go between pieces, so the event loop runs.
    events = ET.iterparse(io.BytesIO(data), events=("start-ns",))
    declarations = [declaration for _, declaration in events]
    root: ET.Element = events.root  # type: ignore[attr-defined]
    return root, declarations


def _check_namespaces(declarations: list[tuple[str, str]]) -> None:
    for prefix, uri in declarations:
        known = _KNOWN_NAMESPACES.get(uri.lower())
        own = _OWN_PREFIXES.get(uri)
        if own is not None and prefix != own:
            raise _Decline  # feedparser would file thr:/gd: elements under another name
        if prefix in _OWN_URIS and uri != _OWN_URIS[prefix]:
            raise _Decline
        if own is None and known in _OWN_URIS:
            raise _Decline  # a known namespace (RSS threading) that would take over the prefix "thr"
        if prefix in _STANDARD_PREFIXES and known is not None and known != prefix and own is None:
            raise _Decline  # feedparser would read this prefix's elements as another namespace's
        if uri == _XLINK:
            raise _Decline  # feedparser adds xlink declarations to the next element's attributes


def _items(root: ET.Element) -> tuple[str, dict[str, _Role], str, list[ET.Element]]:
    if root.tag == "rss" and root.get("version", "").startswith("2."):
        channel = root.find("channel")
        if channel is not None:
            return "rss20", _RSS2, "item", channel.findall("item")
    elif root.tag == f"{ATOM}feed":
        return "atom10", _ATOM, f"{ATOM}entry", root.findall(f"{ATOM}entry")
    elif root.tag == f"{RDF}RDF" and root.find(f"{RSS1}channel") is not None:
        return "rss10", _RSS1, f"{RSS1}item", root.findall(f"{RSS1}item")
    raise _Decline


def _check_no_other_entries(root: ET.Element, entry_tag: str, count: int) -> bool:
    """feedparser takes any element named item or entry, in any case and namespace, anywhere, for an entry.
    Returns whether any element has an attribute named like "base" (then links need _bases)."""
    tags: set[str] = set()
    based = False
    for element in root.iter():
        tags.add(element.tag)
        if element.attrib and not based:
            based = any(name.rpartition("}")[2].lower() == "base" for name in element.attrib)
    for tag in tags:
        if tag != entry_tag and tag.rpartition("}")[2].lower() in ("item", "entry"):
            raise _Decline
    if sum(1 for _ in root.iter(entry_tag)) != count:
        raise _Decline
    return based


def _bases(root: ET.Element) -> dict[ET.Element, str]:
    """The base URI feedparser resolves each element's links against, replaying its bookkeeping in document
    order (quirks included: leaving an element does not restore an empty base)."""
    bases: dict[ET.Element, str] = {}
    base = ""
    stack: list[str] = []
    todo: list[tuple[ET.Element, bool]] = [(root, False)]
    while todo:
        element, leaving = todo.pop()
        if leaving:
            stack.pop()
            if stack and stack[-1]:
                base = stack[-1]
            continue
        attributes = element.attrib
        for name in attributes:
            if name.rpartition("}")[2].lower() == "base" and name not in (XML_BASE, "base"):
                raise _Decline
        given = attributes[XML_BASE] if XML_BASE in attributes else attributes.get("base")
        value = given or base
        base = (make_safe_absolute_uri(base, value) or base) if base else _urljoin(base, value)
        stack.append(base)
        bases[element] = base
        todo.append((element, True))
        todo.extend((child, False) for child in reversed(element))
    return bases


def _value(element: ET.Element, base: str = "", *, uri: bool = False) -> str:
    """An element's text as feedparser's `pop` leaves it."""
    out = (element.text or "").strip()
    if uri and out:
        out = _urljoin(base, out)
    with contextlib.suppress(UnicodeError):
        # feedparser's repair of UTF-8 that was read as Latin-1 somewhere upstream
        out = out.encode("iso-8859-1").decode("utf-8")
    return translate(out, _cp1252)


def _check_attributes(element: ET.Element, kind: int, key: str) -> None:
    if element.attrib and element.tag in _ATTRIBUTES_BECOME_THE_VALUE:
        raise _Decline
    for name, value in element.attrib.items():
        if name.startswith(XML):
            continue  # xml:lang, xml:space; xml:base is replayed by _bases
        if kind == IGNORED and not name.startswith("{") and name.lower() != "base":
            continue
        if kind == ATOM_LINK and name in _ATOM_LINK_ATTRIBUTES:
            continue
        if kind == REPLY and not name.startswith("{"):
            continue
        if kind == GUID and name == "isPermaLink" and element.tag == "guid":
            continue
        if name == "type" and key in _TYPED and value.lower() in _TEXT_TYPES:
            continue
        raise _Decline


def _entry(
    item: ET.Element, table: dict[str, _Role], version: str, bases: dict[ET.Element, str]
) -> dict[str, Any]:
    for name in item.attrib:
        if not name.startswith(XML) and not (version == "rss10" and name == f"{RDF}about"):
            raise _Decline  # feedparser reads an item's href and lastmod (CDF)
    entry: dict[str, Any] = {}
    if version == "rss10" and (about := item.get(f"{RDF}about")):
        entry["id"] = about
    seen: set[str] = set()
    links: list[dict[str, str]] = []
    link_element: str | None = None
    alternate: str | None = None
    permalink: str | None = None
    for child in item:
        role = table.get(child.tag)
        if role is None:
            raise _Decline
        kind, key = role
        if key:
            if key in seen:
                raise _Decline  # feedparser keeps the first of some, the last of others, mixes a third
            seen.add(key)
        _check_attributes(child, kind, key)
        if kind != AUTHOR and len(child):
            raise _Decline  # markup inside a text: feedparser serialises it
        base = bases.get(child, "")
        if kind == TEXT:
            entry[key] = _value(child)
        elif kind == CONTENT_:
            if child.get("src") is not None:
                raise _Decline
            entry["content"] = [{"value": _value(child)}]
        elif kind == DATE:
            entry[key] = _parse_date(_value(child))
        elif kind == URI:
            entry[key] = _value(child, base, uri=True)
        elif kind == LINK:
            # feedparser undoes "&amp;" left in a link, and "&name;" that look like entities
            link_element = _LINK_ENTITY.sub(r"&\g<1>", _value(child, base, uri=True).replace("&amp;", "&"))
        elif kind == GUID:
            is_link = child.get("isPermaLink", "true") == "true"
            entry["id"] = _value(child, base, uri=is_link)
            if is_link:
                permalink = entry["id"]
        elif kind == ATOM_LINK:
            alternate = _atom_link(child, base, links, alternate)
        elif kind == AUTHOR:
            _atom_author(child, bases, entry)
        elif kind == REPLY:
            entry[key] = (
                {name.lower(): _lower_rel_type(name, value) for name, value in child.attrib.items()}
                if child.attrib
                else _value(child)
            )
    if version == "atom10":
        entry["links"] = links
    link = link_element if link_element is not None else alternate
    if link is None:
        link = permalink
    if link is not None:
        entry["link"] = link
    return entry


def _lower_rel_type(name: str, value: str) -> str:
    return value.lower() if name.lower() in ("rel", "type") else value


def _atom_link(link: ET.Element, base: str, links: list[dict[str, str]], alternate: str | None) -> str | None:
    href = link.get("href")
    if href is None:
        raise _Decline  # feedparser takes the element's text for the link
    rel = link.get("rel", "alternate").lower()
    kind = link.get("type", "application/atom+xml" if rel == "self" else "text/html").lower()
    href = str(_urljoin(base, href))
    links.append({"rel": rel, "type": kind, "href": href})
    mapped = {
        "text": "text/plain",
        "plain": "text/plain",
        "html": "text/html",
        "xhtml": "application/xhtml+xml",
    }
    if rel == "alternate" and mapped.get(kind, kind) in _HTML_TYPES:
        return href  # the last alternate link wins, as in feedparser
    return alternate


def _atom_author(author: ET.Element, bases: dict[ET.Element, str], entry: dict[str, Any]) -> None:
    if (author.text or "").strip() or any(
        name != XML_BASE and not name.startswith(XML) for name in author.attrib
    ):
        raise _Decline
    detail: dict[str, str] = {}
    for part in author:
        key = _AUTHOR_PARTS.get(part.tag)
        if key is None or len(part) or (part.tail or "").strip():
            raise _Decline
        if not key:
            continue  # Blogger's gd:image: feedparser stores its attributes under a key nobody reads
        if key in detail or any(not name.startswith(XML) or name == XML_BASE for name in part.attrib):
            raise _Decline
        # feedparser reads a name and an email without the repairs it makes to other texts.
        text = (part.text or "").strip()
        detail[key] = _value(part, bases.get(part, ""), uri=True) if key == "href" else text
    name, email = detail.get("name", ""), detail.get("email", "")
    if name and email:
        entry["author"] = f"{name} ({email})"
    else:
        entry["author"] = name or email
    entry["author_detail"] = detail
