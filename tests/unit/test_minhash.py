"""MinHash signatures for near-duplicate detection."""

from __future__ import annotations

from devsupport.factories import make_entries
from services.ingest import minhash

ARTICLE = " ".join(
    f"Sentence {i} of the article talks about the whiteboard company and its plans for year {2000 + i}."
    for i in range(20)
)


def test_short_texts_are_not_fingerprinted() -> None:
    assert minhash.signature("Great post, thanks!") is None


def test_signatures_are_stable_and_well_formed() -> None:
    sig = minhash.signature(ARTICLE)
    assert sig is not None and len(sig) == minhash.NUM_HASHES
    assert minhash.signature(ARTICLE) == sig
    assert minhash.decode(minhash.encode(sig)) == list(sig)
    keys = minhash.band_keys(sig)
    assert len(keys) == minhash.BANDS and all(0 <= k < 2**63 for k in keys), "keys fit a signed BIGINT"


def test_syndicated_copies_are_near_duplicates_and_different_texts_are_not() -> None:
    sig = minhash.signature(ARTICLE)
    copy = minhash.signature("Republished from The Stackline. " + ARTICLE + " Read more on our site.")
    assert sig is not None and copy is not None
    assert minhash.similarity(sig, copy) >= minhash.THRESHOLD
    assert any(a == b for a, b in zip(minhash.band_keys(sig), minhash.band_keys(copy), strict=True))
    half = minhash.signature(ARTICLE[: len(ARTICLE) // 2])
    assert half is not None and minhash.similarity(sig, half) < minhash.THRESHOLD


def test_the_test_feeds_entries_are_not_near_duplicates_of_each_other() -> None:
    # The end-to-end tests expect every generated entry to be routed.
    sigs = [minhash.signature(e.text) for e in make_entries(200, prefix="x")]
    assert all(s is not None for s in sigs)
    worst = max(
        minhash.similarity(a, b)
        for i, a in enumerate(sigs)
        for b in sigs[i + 1 :]
        if a is not None and b is not None
    )
    assert worst < minhash.THRESHOLD
