"""``llmpulse dashboards``: write the Grafana dashboards, or push them to a Grafana."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmpulse.cli.context import console, out, reports_errors, state

app = typer.Typer(help="Grafana dashboards (grafana-clickhouse-datasource).", no_args_is_help=True)


@app.command("export")
@reports_errors
def export(
    directory: Annotated[Path, typer.Argument(help="Folder to write (json/ and provisioning/)")],
) -> None:
    """Write the dashboards' JSON and Grafana provisioning files into DIRECTORY."""
    from llmpulse.dashboards import write_files

    for path in write_files(directory):
        out.print(str(path), highlight=False)


@app.command("push")
@reports_errors
def push(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url", help="Grafana base URL, http://host:3000")],
    token: Annotated[
        str | None, typer.Option("--token", help="Service account token", envvar="GRAFANA_TOKEN")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="Basic auth user")] = None,
    password: Annotated[str | None, typer.Option("--password", help="Basic auth password")] = None,
    folder: Annotated[str, typer.Option("--folder", help="Folder of the dashboards")] = "llmpulse",
    clickhouse: Annotated[
        str | None,
        typer.Option(
            "--clickhouse",
            help="ClickHouse as Grafana reaches it, http(s)://user:pass@host:8123/db"
            " (default: the configured server DSN)",
        ),
    ] = None,
    no_datasource: Annotated[
        bool, typer.Option("--no-datasource", help="Leave the data source alone")
    ] = False,
) -> None:
    """Create or update the data source, the folder and the dashboards (idempotent)."""
    from llmpulse.dashboards.push import connect, datasource_from_dsn
    from llmpulse.dashboards.push import push as push_all

    datasource = None
    if not no_datasource:
        dsn = clickhouse or state(ctx).settings().clickhouse_dsn
        datasource = datasource_from_dsn(dsn)
    api = connect(url, token=token, user=user, password=password)
    report = push_all(api, datasource=datasource, folder_title=folder)
    console.print(f"data source llmpulse-clickhouse: {report.datasource}")
    console.print(f"folder {folder!r}: {report.folder}")
    for uid, version in report.dashboards:
        out.print(f"{url.rstrip('/')}/d/{uid}  (version {version})", highlight=False)
