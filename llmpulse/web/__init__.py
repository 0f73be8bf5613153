"""The live status page the worker serves at ``/`` (plain HTML, CSS and JS, no build step).

``register_pages(app, client)`` adds three routes to the worker's Faust web
server: ``/`` (the page), ``/status.css``, ``/status.js`` (its assets, shipped
as package data) and ``GET /api/status`` (the JSON the page polls every few
seconds, built by :func:`llmpulse.web.status.status_document` through
``run_readonly``, the read-only path of ``POST /sql``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from importlib import resources
from typing import Any, Final
from urllib.parse import quote

from llmpulse.access import Access
from llmpulse.errors import StoreError
from llmpulse.store.client import SerialClient
from llmpulse.store.readonly import run_readonly
from llmpulse.web.status import status_document

__all__ = ["ASSETS", "asset", "register_pages", "with_token"]

ASSETS: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/status.css": ("status.css", "text/css; charset=utf-8"),
    "/status.js": ("status.js", "text/javascript; charset=utf-8"),
}


def asset(name: str) -> bytes:
    return resources.files("llmpulse.web").joinpath("static", name).read_bytes()


def with_token(page: bytes, token: str) -> bytes:
    """The page with ``?token=`` on its asset URLs (``/status.css``, ``/status.js``).

    >>> with_token(b'<script src="/status.js"></script>', "a b&c").decode()
    '<script src="/status.js?token=a%20b%26c"></script>'
    """
    # Percent-encoded with nothing kept: only [A-Za-z0-9_.~%-], safe in an attribute.
    q = quote(token, safe="").encode()
    for path in (b"/status.css", b"/status.js"):
        page = page.replace(b'"' + path + b'"', b'"' + path + b"?token=" + q + b'"')
    return page


def register_pages(
    app: Any, client: SerialClient, *, guard: Callable[[type[Any]], type[Any]] | None = None
) -> None:
    """Serve the status page on a Faust app's web server (call before the app starts).

    ``guard`` wraps every route, the page and its assets as well as the data
    endpoint (``/api/status``), in the worker's token check: with a token set,
    nothing but ``/health`` answers without it. A browser navigation carries no
    header, so the page takes the token as ``?token=`` (``access.PAGE_PATHS``),
    hands it on to its assets' URLs, and status.js sends it as the bearer token.
    """
    import json

    from faust.web import Request, Response, View

    def static_view(name: str, content_type: str) -> type[View]:
        body = asset(name)

        class Static(View):
            async def get(self, request: Request) -> Response:
                headers = {"Content-Type": content_type}
                token = request.query.get("token")
                if name == "index.html" and token:
                    # The guard let this token in; the assets need it in their URLs
                    # too, and a page with a secret in its URL is not cached.
                    headers["Cache-Control"] = "no-store"
                    return self.bytes(with_token(body, token), headers=headers)
                # aiohttp refuses a charset inside content_type; a header may carry it
                return self.bytes(body, headers=headers)

            def denied(self, access: Access) -> Response:
                # HTML, not JSON: a person reads this; its script keeps the older
                # /#token=<token> links working (the server never sees a fragment).
                return self.bytes(
                    asset("denied.html"),
                    status=access.status,
                    headers={"Content-Type": "text/html; charset=utf-8", **access.headers},
                )

        return Static

    class Status(View):
        async def get(self, request: Request) -> Response:
            now_ms = int(time.time() * 1000)
            try:
                doc = await asyncio.to_thread(
                    status_document, lambda sql: run_readonly(client, sql), now_ms
                )
            except StoreError as exc:
                return self.json({"error": exc.problem}, status=503)
            return self.bytes(json.dumps(doc).encode(), content_type="application/json")

    for path, (name, content_type) in ASSETS.items():
        view = static_view(name, content_type)
        app.page(path)(guard(view) if guard is not None else view)
    app.page("/api/status")(guard(Status) if guard is not None else Status)
