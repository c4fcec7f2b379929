"""schemathesis hooks of the API's fuzz run (SCHEMATHESIS_HOOKS=tests.fuzz.hooks, set by
tests/fuzz/test_openapi_fuzz.py), read from the environment it passes:

- MR_FUZZ_SINK: a local HTTP receiver (`http://127.0.0.1:PORT`). A generated URL that the API would accept
  in a source or a webhook gets its scheme and host replaced by the receiver's (its path and query kept),
  so that registrations succeed (the API allows loopback in this run) and the stateful phase reaches the
  operations on the resources made, and a webhook's test ping lands on the receiver. URLs the API would
  refuse anyway are left alone (a negative case stays negative); whatever is left, the API process cannot
  send anywhere but loopback (tests/fuzz/jail/sitecustomize.py).
- MR_FUZZ_KEEP_KEY_ID: the id of the key the run authenticates with. Revoking it would turn every later
  request into a 401 and end the run's reach; a DELETE of it is sent for a key that does not exist.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import schemathesis
from pydantic import AnyHttpUrl, TypeAdapter, ValidationError

_URL = TypeAdapter(AnyHttpUrl)
# The bodies whose `url` the API resolves or dials.
_URL_BODIES = {
    ("POST", "/v1/sources"),
    ("PATCH", "/v1/sources/{source_id}"),
    ("POST", "/v1/webhooks"),
    ("PATCH", "/v1/webhooks/{webhook_id}"),
}


def _valid(url: str) -> bool:
    try:
        _URL.validate_python(url)
    except ValidationError:
        return False
    return True


def local_url(url: object, sink: str) -> object:
    """`url` pointed at the sink, when it is a URL the API would take and stays one; else `url`."""
    if not isinstance(url, str) or not _valid(url):
        return url
    parts = urlsplit(url)
    target = urlsplit(sink)
    local = urlunsplit((target.scheme, target.netloc, parts.path or "/", parts.query, ""))
    return local if _valid(local) else url


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    operation = (case.method.upper(), case.path)
    sink = os.environ.get("MR_FUZZ_SINK")
    if sink and operation in _URL_BODIES and isinstance(case.body, dict) and "url" in case.body:
        case.body["url"] = local_url(case.body["url"], sink)
    keep = os.environ.get("MR_FUZZ_KEEP_KEY_ID")
    parameters = case.path_parameters or {}
    if keep and operation == ("DELETE", "/v1/keys/{key_id}") and parameters.get("key_id") == keep:
        case.path_parameters["key_id"] = "not-the-run-key"
