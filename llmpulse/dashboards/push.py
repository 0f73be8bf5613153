"""``llmpulse dashboards push``: the data source, folder and dashboards through Grafana's API.

Idempotent: the data source is created or updated by its fixed uid, the folder
created once, and each dashboard saved with ``overwrite`` (Grafana bumps its
version). Uses grafana-client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from llmpulse.dashboards import DASHBOARDS, DATASOURCE_UID, FOLDER, dashboard_json, datasource_model
from llmpulse.errors import ConfigError, LlmpulseError

__all__ = ["GrafanaError", "PushReport", "connect", "datasource_from_dsn", "folder_uid", "push"]


def folder_uid(title: str) -> str:
    """A stable uid for a folder title, so a second push finds the folder again.

    >>> folder_uid("LLM observability")
    'llm-observability'
    """
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40] or "llmpulse"


class GrafanaError(LlmpulseError):
    """Grafana refused or could not be reached."""

    def __init__(self, url: str, step: str, problem: str) -> None:
        self.url = url
        self.step = step
        self.problem = problem
        super().__init__(f"grafana {url}: {step}: {problem}")


@dataclass
class PushReport:
    datasource: str = "skipped"  # created, updated or skipped
    folder: str = ""  # created or exists
    dashboards: list[tuple[str, int]] = field(default_factory=list)  # (uid, version)


def connect(
    url: str,
    *,
    token: str | None = None,
    user: str | None = None,
    password: str | None = None,
    timeout: float = 10.0,
) -> GrafanaApi:
    if token and (user or password):
        raise ConfigError("--token", "use a token or --user/--password, not both")
    if not token and not (user and password):
        raise ConfigError("--token", "give --token T, or --user U and --password P")
    if urlsplit(url).scheme not in ("http", "https"):
        raise ConfigError("--url", f"must be an http(s) URL, got {url!r}")
    credential: str | tuple[str, str] = token if token else (str(user), str(password))
    api: GrafanaApi = GrafanaApi.from_url(url, credential=credential, timeout=timeout)
    return api


def datasource_from_dsn(dsn: str) -> dict[str, Any]:
    """The data source model for the ClickHouse server of an ``http(s)://`` DSN."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            "--clickhouse",
            "Grafana needs a ClickHouse server (http://user:pass@host:8123/db); "
            f"an embedded store cannot be shared, got {dsn.rsplit('@', maxsplit=1)[-1]!r}",
        )
    return datasource_model(
        host=parts.hostname,
        port=parts.port or (8443 if parts.scheme == "https" else 8123),
        protocol="http",
        secure=parts.scheme == "https",
        username=unquote(parts.username or "default"),
        password=unquote(parts.password or ""),
        database=parts.path.strip("/") or "default",
    )


def _call(api: GrafanaApi, step: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except GrafanaException as exc:
        raise GrafanaError(str(api.url), step, exc.message or type(exc).__name__) from exc


def _exists(api: GrafanaApi, step: str, fn: Any, *args: Any) -> Any | None:
    try:
        return fn(*args)
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise GrafanaError(str(api.url), step, exc.message) from exc
    except GrafanaException as exc:
        raise GrafanaError(str(api.url), step, exc.message or type(exc).__name__) from exc


def push(
    api: GrafanaApi, *, datasource: dict[str, Any] | None, folder_title: str = FOLDER
) -> PushReport:
    """Create or update ``datasource`` (unless None), the folder and every dashboard."""
    report = PushReport()
    if datasource is not None:
        ds = api.datasource
        found = _exists(api, "read data source", ds.get_datasource_by_uid, DATASOURCE_UID)
        if found is None:
            _call(api, "create data source", ds.create_datasource, datasource)
            report.datasource = "created"
        else:
            body = {**datasource, "id": found.get("id"), "version": found.get("version")}
            _call(api, "update data source", ds.update_datasource_by_uid, DATASOURCE_UID, body)
            report.datasource = "updated"
    uid = folder_uid(folder_title)
    folder = _exists(api, "read folder", api.folder.get_folder, uid)
    if folder is None:
        _call(api, "create folder", api.folder.create_folder, folder_title, uid)
        report.folder = "created"
    else:
        report.folder = "exists"
    for spec in DASHBOARDS:
        body = {
            "dashboard": {**dashboard_json(spec), "id": None},
            "folderUid": uid,
            "overwrite": True,
            "message": "llmpulse dashboards push",
        }
        saved = _call(api, f"save dashboard {spec.uid}", api.dashboard.update_dashboard, body)
        report.dashboards.append((spec.uid, int(saved.get("version", 0))))
    return report
