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

from llmpulse.errors import StoreError
from llmpulse.store.client import SerialClient
from llmpulse.store.readonly import run_readonly
from llmpulse.web.status import status_document

__all__ = ["ASSETS", "asset", "register_pages"]

ASSETS: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/status.css": ("status.css", "text/css; charset=utf-8"),
    "/status.js": ("status.js", "text/javascript; charset=utf-8"),
}


def asset(name: str) -> bytes:
    return resources.files("llmpulse.web").joinpath("static", name).read_bytes()


def register_pages(
    app: Any, client: SerialClient, *, guard: Callable[[type[Any]], type[Any]] | None = None
) -> None:
    """Serve the status page on a Faust app's web server (call before the app starts).

    ``guard`` wraps the data endpoint (``/api/status``) in the worker's token check;
    the page's own files hold no data and stay open, so a browser can load them.
    """
    import json

    from faust.web import Request, Response, View

    def static_view(name: str, content_type: str) -> type[View]:
        body = asset(name)

        class Static(View):
            async def get(self, request: Request) -> Response:
                # aiohttp refuses a charset inside content_type; a header may carry it
                return self.bytes(body, headers={"Content-Type": content_type})

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
        app.page(path)(static_view(name, content_type))
    app.page("/api/status")(guard(Status) if guard is not None else Status)
