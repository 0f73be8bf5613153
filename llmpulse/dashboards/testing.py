"""A stand-in for Grafana's HTTP API on loopback, for testing ``dashboards push``.

No Grafana server can be installed on this project's machines, so the push is
tested against this double: it records every request and answers the calls
push makes (data sources by uid, folders, ``POST /api/dashboards/db``, health)
the way Grafana 11/12 does, status codes and message bodies included, and
checks authentication (a bearer token or basic auth) like Grafana.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["GrafanaDouble", "RecordedRequest"]


@dataclass
class RecordedRequest:
    method: str
    path: str
    body: Any
    authorization: str


@dataclass
class _State:
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_id: int = 1


class GrafanaDouble:
    """``with GrafanaDouble(token="t") as g: ... g.url``; ``g.requests`` in order."""

    def __init__(
        self, *, token: str | None = None, user: str = "admin", password: str = "admin"
    ) -> None:
        self.token = token
        self.basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.requests: list[RecordedRequest] = []
        self.state = _State()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> GrafanaDouble:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- the API -----------------------------------------------------------------------------

    def _authorized(self, header: str) -> bool:
        if self.token is not None and header == f"Bearer {self.token}":
            return True
        return header == self.basic

    def answer(self, method: str, path: str, body: Any, auth: str) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(RecordedRequest(method, path, body, auth))
            if path == "/api/health":
                return 200, {"database": "ok", "version": "11.6.0"}
            if not self._authorized(auth):
                return 401, {"message": "Unauthorized"}
            parts = path.strip("/").split("/")[1:]
            route = getattr(self, f"_{method.lower()}_{parts[0]}", None) if parts else None
            if route is None:
                return 404, {"message": "Not found"}
            status, payload = route(parts[1:], body)
            return status, payload

    def _new_id(self) -> int:
        self.state.next_id += 1
        return self.state.next_id

    def _get_datasources(self, rest: list[str], body: Any) -> tuple[int, Any]:
        if len(rest) == 2 and rest[0] == "uid" and rest[1] in self.state.datasources:
            return 200, self.state.datasources[rest[1]]
        return 404, {"message": "Data source not found"}

    def _post_datasources(self, rest: list[str], body: Any) -> tuple[int, Any]:
        if rest or not isinstance(body, dict):
            return 404, {"message": "Not found"}
        for key in ("name", "type", "access"):
            if not body.get(key):
                return 400, {"message": f"bad request data: {key} is required"}
        uid = body.get("uid") or f"ds{self.state.next_id}"
        if uid in self.state.datasources or any(
            d["name"] == body["name"] for d in self.state.datasources.values()
        ):
            return 409, {"message": "data source with the same name already exists"}
        ds = {k: v for k, v in body.items() if k != "secureJsonData"}
        ds.update(id=self._new_id(), uid=uid, version=1, orgId=1)
        ds["secureJsonFields"] = dict.fromkeys(body.get("secureJsonData") or {}, True)
        self.state.datasources[uid] = ds
        return 200, {"datasource": ds, "id": ds["id"], "message": "Datasource added", **ds}

    def _put_datasources(self, rest: list[str], body: Any) -> tuple[int, Any]:
        if len(rest) != 2 or rest[0] != "uid" or not isinstance(body, dict):
            return 404, {"message": "Not found"}
        old = self.state.datasources.get(rest[1])
        if old is None:
            return 404, {"message": "Data source not found"}
        if body.get("version") is not None and body["version"] != old["version"]:
            return 409, {"message": "Datasource has already been updated by someone else"}
        ds = {k: v for k, v in body.items() if k != "secureJsonData"}
        ds.update(id=old["id"], uid=rest[1], version=old["version"] + 1, orgId=1)
        ds["secureJsonFields"] = dict.fromkeys(body.get("secureJsonData") or {}, True)
        self.state.datasources[rest[1]] = ds
        return 200, {"datasource": ds, "id": ds["id"], "message": "Datasource updated"}

    def _get_folders(self, rest: list[str], body: Any) -> tuple[int, Any]:
        if not rest:
            return 200, [
                {"uid": f["uid"], "title": f["title"]} for f in self.state.folders.values()
            ]
        if rest[0] in self.state.folders:
            return 200, self.state.folders[rest[0]]
        return 404, {"message": "folder not found", "status": "not-found"}

    def _post_folders(self, rest: list[str], body: Any) -> tuple[int, Any]:
        if rest or not isinstance(body, dict) or not body.get("title"):
            return 400, {"message": "folder title cannot be empty"}
        uid = body.get("uid") or f"f{self.state.next_id}"
        if uid in self.state.folders:
            return 409, {"message": "a folder with the same uid already exists"}
        if any(f["title"] == body["title"] for f in self.state.folders.values()):
            return 409, {"message": "a folder with the same name already exists"}
        folder = {"id": self._new_id(), "uid": uid, "title": body["title"], "version": 1}
        self.state.folders[uid] = folder
        return 200, folder

    def _post_dashboards(self, rest: list[str], body: Any) -> tuple[int, Any]:
        if (
            rest != ["db"]
            or not isinstance(body, dict)
            or not isinstance(body.get("dashboard"), dict)
        ):
            return 400, {"message": "bad request data"}
        dash, folder = body["dashboard"], body.get("folderUid", "")
        if not dash.get("title"):
            return 400, {"message": "Dashboard title cannot be empty", "status": "empty-name"}
        if folder and folder not in self.state.folders:
            return 400, {"message": "folder not found", "status": "folder-not-found"}
        uid = dash.get("uid") or f"d{self.state.next_id}"
        old = self.state.dashboards.get(uid)
        stale = old is not None and dash.get("version") != old["dashboard"]["version"]
        if stale and not body.get("overwrite"):
            return 412, {
                "message": "The dashboard has been changed by someone else",
                "status": "version-mismatch",
            }
        version = 1 if old is None else old["dashboard"]["version"] + 1
        ident = self._new_id() if old is None else old["dashboard"]["id"]
        stored = {**dash, "uid": uid, "id": ident, "version": version}
        self.state.dashboards[uid] = {
            "dashboard": stored,
            "meta": {"folderUid": folder, "slug": uid, "url": f"/d/{uid}/{uid}"},
        }
        return 200, {
            "id": ident,
            "uid": uid,
            "url": f"/d/{uid}/{uid}",
            "status": "success",
            "version": version,
            "slug": uid,
        }

    def _get_dashboards(self, rest: list[str], body: Any) -> tuple[int, Any]:
        if len(rest) == 2 and rest[0] == "uid" and rest[1] in self.state.dashboards:
            return 200, self.state.dashboards[rest[1]]
        return 404, {"message": "Dashboard not found", "status": "not-found"}

    # --- HTTP ---------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    self._send(400, {"message": "bad request data"})
                    return
                path = self.path.split("?", 1)[0]
                status, payload = double.answer(
                    self.command, path, body, self.headers.get("Authorization", "")
                )
                self._send(status, payload)

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
