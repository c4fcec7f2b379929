"""Where a webhook may be sent: checked when an endpoint is registered and again on every request."""

from __future__ import annotations

from urllib.parse import urlsplit

from shared.netguard import NetPolicy, UnsafeURL, check_url
from shared.settings import Settings


def net_policy(settings: Settings) -> NetPolicy:
    return NetPolicy.from_setting(settings.webhook_allowed_networks, setting="MR_WEBHOOK_ALLOWED_NETWORKS")


def check_scheme(url: str, settings: Settings) -> None:
    scheme = urlsplit(url).scheme
    if scheme == "https" or (scheme == "http" and settings.webhook_allow_http):
        return
    raise UnsafeURL(
        f"a webhook URL must use https, not {scheme or 'nothing'!r}"
        + (" (http is allowed only with MR_WEBHOOK_ALLOW_HTTP)" if scheme == "http" else "")
    )


async def check_endpoint_url(url: str, settings: Settings) -> None:
    """Raise UnsafeURL unless `url` may receive webhooks: https (http only with MR_WEBHOOK_ALLOW_HTTP), and a
    host whose addresses are all public unless MR_WEBHOOK_ALLOWED_NETWORKS allows them. The sender checks
    the address again when it connects (DNS may have changed)."""
    check_scheme(url, settings)
    await check_url(url, net_policy(settings))
