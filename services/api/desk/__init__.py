"""The desk: the web page where the social media desk and the departments work their queues.

Static files (services/api/desk/static/: HTML, CSS, plain ES modules; no build step, nothing fetched from
elsewhere) served at /desk/, and / redirects there. The page is a client of the public REST API and its
event stream with the user's own key (sent as `Authorization`, never in a URL): it has no routes of its own.

Every answer under /desk/ carries a strict Content-Security-Policy: scripts, styles and connections from
this origin only, no inline script or style, no frames around it, and Trusted Types required, so that
the browser itself refuses any assignment of a string to innerHTML and the like (the page builds its DOM
from text nodes; docs/desk.md).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # The page's address never reaches the sites its links open.
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    # Revalidated on every load (ETag): a new release is seen at once, an unchanged file costs a 304.
    "Cache-Control": "no-cache",
}


class DeskFiles(StaticFiles):
    """The desk's files with the security headers on every answer, found or not."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException as exc:  # 404, 405: answered by the app's problem handlers, with the headers
            headers = {**(exc.headers or {}), **SECURITY_HEADERS}
            raise HTTPException(exc.status_code, exc.detail, headers=headers) from exc
        response.headers.update(SECURITY_HEADERS)
        return response


def install_desk(app: FastAPI) -> None:
    """Serve the desk at /desk/ and send / there."""

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/desk/", status_code=302, headers={"Cache-Control": "no-store"})

    app.mount("/desk", DeskFiles(directory=STATIC, html=True, check_dir=True), name="desk")
