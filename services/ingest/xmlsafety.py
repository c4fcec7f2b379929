"""How ingest reads the bytes of a feed before either parser does: decoded as feedparser decodes them, refused
when they declare XML entities, and checked for well-formedness before a large one is parsed leniently."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any
from xml.parsers import expat

from defusedxml import EntitiesForbidden, ExternalReferenceForbidden  # type: ignore[import-untyped]
from defusedxml.ElementTree import DefusedXMLParser  # type: ignore[import-untyped]
from feedparser.encodings import convert_to_utf8

# Fed to expat a piece at a time: one call on 10 MB would hold the GIL (and so the event loop) for tens of ms.
_CHUNK = 64 * 1024
# feedparser's own notion of where the document's head ends and its first element begins.
_FIRST_ELEMENT = re.compile(rb"<\w")
_ENTITY_DECLARATION = re.compile(rb"<!ENTITY", re.IGNORECASE)


def decode(body: bytes) -> tuple[bytes, str]:
    """The document in UTF-8 with its XML declaration saying so, as feedparser reads it (BOM, declaration,
    and its fallbacks: so both parsers see the same characters), and the encoding it was read in ("" when
    no encoding could read it)."""
    result: dict[str, Any] = {}
    data: bytes = convert_to_utf8({}, body, result)
    return data, str(result.get("encoding") or "")


class _PastProlog(Exception):
    """The root element began: every declaration a document can make is behind us."""


class _PrologOnly:
    """An ElementTree parser target that stops at the first element."""

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        raise _PastProlog

    def end(self, tag: str) -> None:
        return None

    def data(self, data: str) -> None:
        return None

    def close(self) -> None:
        return None


def declares_entities(data: bytes) -> bool:
    """Whether the document declares XML entities (`<!ENTITY`) in its DTD.

    The billion-laughs and external-entity attacks both need such a declaration, and feeds never do. The
    document is parsed (defusedxml over expat, in whatever encoding it is in) up to its root element, so a
    post that quotes "<!ENTITY" in its text is not mistaken for one. A prolog expat cannot read is searched
    as the lenient parser would take it: the text before the first element."""
    parser = DefusedXMLParser(
        target=_PrologOnly(), forbid_dtd=False, forbid_entities=True, forbid_external=True
    )
    try:
        for start in range(0, len(data), _CHUNK):
            parser.feed(data[start : start + _CHUNK])
        parser.close()
    except _PastProlog:
        return False
    except (EntitiesForbidden, ExternalReferenceForbidden):
        return True
    except (ET.ParseError, ValueError, LookupError):
        pass
    first = _FIRST_ELEMENT.search(data)
    return bool(_ENTITY_DECLARATION.search(data, 0, first.start() if first else len(data)))


def well_formed(data: bytes) -> bool:
    """Whether expat reads the whole document, namespaces and all, without an error (then feedparser reads
    it strictly, not leniently). No handlers: the check runs in C and builds nothing."""
    parser = expat.ParserCreate(namespace_separator=" ")
    try:
        for start in range(0, len(data), _CHUNK):
            parser.Parse(data[start : start + _CHUNK], False)
        parser.Parse(b"", True)
    except (expat.ExpatError, ValueError, LookupError):
        return False
    return True
