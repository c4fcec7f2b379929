"""MinHash fingerprints for near-duplicate detection (the same article syndicated on several sites).

A text's word 3-shingles are summarised by 48 MinHash values (one-permutation hashing: each shingle is
hashed once and falls in one of 48 bins, each bin keeps its minimum; empty bins borrow from the next
full one, "densification"), so the cost is one hash per shingle rather than 48. The share of equal
values estimates the Jaccard similarity of two shingle sets. Locality-sensitive hashing groups the 48
values into 8 bands of 6: two texts with Jaccard 0.9 share at least one band with probability 0.996,
0.8 with 0.91, 0.6 with 0.32 and 0.5 with 0.12, so an indexed lookup on the bands finds the
candidates without fetching every loosely similar text, and the signature decides.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Sequence

import orjson

NUM_HASHES = 48
BANDS = 8
ROWS = NUM_HASHES // BANDS
# Estimated Jaccard similarity at or above which a text is a near-duplicate of another.
THRESHOLD = 0.8
# Texts with fewer words than this are too short to call near-duplicates with confidence.
MIN_WORDS = 20

_WORD = re.compile(r"\w+", re.UNICODE)
_MASK64 = (1 << 64) - 1
_EMPTY = 1 << 64
_SPAN = (1 << 64) // NUM_HASHES + 1  # values within a bin are below this


def _hash64(token: str) -> int:
    """A stable 64-bit hash (the same in every process, unlike hash()): two CRC-32s with different seeds."""
    data = token.encode()
    return (zlib.crc32(data) << 32) | zlib.crc32(data, 0x9E3779B9)


def signature(text: str) -> tuple[int, ...] | None:
    """The MinHash signature of `text`, or None when it is too short to fingerprint."""
    words = _WORD.findall(text.lower())
    if len(words) < MIN_WORDS:
        return None
    bins = [_EMPTY] * NUM_HASHES
    for i in range(len(words) - 2):
        h = _hash64(" ".join(words[i : i + 3]))
        b, v = divmod(h, _SPAN)
        if v < bins[b]:
            bins[b] = v
    # Densification: an empty bin takes the value of the next full bin to its right (circularly),
    # marked with the distance so that two texts borrow alike only when their bins are alike.
    out = []
    for b in range(NUM_HASHES):
        for step in range(NUM_HASHES):
            v = bins[(b + step) % NUM_HASHES]
            if v != _EMPTY:
                out.append(v + step * _SPAN)
                break
    return tuple(out)


def similarity(a: Sequence[int], b: Sequence[int]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def band_keys(sig: Sequence[int]) -> list[int]:
    """One 63-bit key per band (fits a signed BIGINT column), the same in every process."""
    packed = struct.pack(f">{NUM_HASHES}Q", *(v & _MASK64 for v in sig))
    width = ROWS * 8
    keys = []
    for band in range(BANDS):
        chunk = packed[band * width : (band + 1) * width]
        keys.append((zlib.crc32(chunk, band) << 31) | (zlib.crc32(chunk, 0x5BD1E995 + band) >> 1))
    return keys


def encode(sig: Sequence[int]) -> str:
    return orjson.dumps(list(sig)).decode()


def decode(value: str) -> list[int]:
    return orjson.loads(value)  # type: ignore[no-any-return]
