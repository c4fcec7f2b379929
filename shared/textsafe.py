"""Text that PostgreSQL can store: no NUL character, no lone UTF-16 surrogate.

PostgreSQL's `text` and `jsonb` refuse U+0000 (`invalid byte sequence for encoding "UTF8": 0x00`,
`unsupported Unicode escape sequence`), and a lone surrogate (U+D800..U+DFFF, which a JSON `\\ud800`
escape decodes to) cannot be encoded as UTF-8 at all. Either one reaching a query is a database or
driver error; found at the edge, it is the caller's mistake, said as such.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

Location = tuple[str | int, ...]


def unstorable(text: str) -> str | None:
    """Why `text` cannot be stored (the first offending character and where it is), or None."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    char = found.group()
    what = "a NUL character (U+0000)" if char == "\x00" else f"a lone surrogate (U+{ord(char):04X})"
    return f"contains {what} at offset {found.start()}, which cannot be stored"


def find_unstorable(value: object, location: Location = ()) -> tuple[Location, str] | None:
    """The first string in `value` (JSON-like: dicts, lists, strings; keys included) that cannot be
    stored, as (where, why: "the text contains ..." or "the key contains ..."); None when every string
    can be."""
    if isinstance(value, str):
        why = unstorable(value)
        return (location, f"the text {why}") if why is not None else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and (why := unstorable(key)) is not None:
                return (*location, key), f"the key {why}"
            found = find_unstorable(item, (*location, key))
            if found is not None:
                return found
        return None
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        for index, item in enumerate(value):
            found = find_unstorable(item, (*location, index))
            if found is not None:
                return found
    return None


def check_storable(text: str) -> str:
    """`text` itself, or ValueError saying why it cannot be stored (a pydantic AfterValidator)."""
    why = unstorable(text)
    if why is not None:
        raise ValueError(f"the text {why}")
    return text
