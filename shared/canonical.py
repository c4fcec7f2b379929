"""Canonical URLs: the same page under tracking parameters is the same page."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_TRACKING_PARAMS = re.compile(r"^(utm_\w+|fbclid|gclid|mc_cid|mc_eid|ref|ref_src)$", re.IGNORECASE)


def canonical_url(url: str) -> str:
    """The URL with its scheme and host lowercased and tracking parameters (utm_*, fbclid, …) removed.
    The fragment stays: comments without a guid are often told apart only by `#comment-N`."""
    url = url.strip()
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url  # not a URL we can take apart (e.g. a stray "["); kept as it was given
    query = urlencode(
        [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _TRACKING_PARAMS.match(k)]
    )
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, query, parts.fragment))
