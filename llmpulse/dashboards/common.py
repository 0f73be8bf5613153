"""Building blocks of the dashboards: the ClickHouse query target, panels, variables, SQL.

Dashboards are built with grafana-foundation-sdk (its 11.6 flavour); the SDK has
no ClickHouse query type, so :class:`ClickHouseQuery` is ours, in the plugin's
v4 model. Every panel is declared through :class:`PanelSpec`, which also names
the columns its SQL must return: the tests run each panel's SQL against the
migrated schema and check them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

DATASOURCE_TYPE: Final = "grafana-clickhouse-datasource"
DATASOURCE_UID: Final = "llmpulse-clickhouse"
DATASOURCE_NAME: Final = "llmpulse ClickHouse"
# The plugin migrates queries without a v4 pluginVersion on load; ours are v4.
PLUGIN_VERSION: Final = "4.20.0"
# Panels carry the Grafana version they were written for (no panel migration).
GRAFANA_VERSION: Final = "11.6.0"
FORMAT_TIME_SERIES: Final = 0
FORMAT_TABLE: Final = 1
DS_REF: Final = dm.DataSourceRef(type_val=DATASOURCE_TYPE, uid="${datasource}")

Kind = Literal["timeseries", "bars", "table", "stat", "bargauge"]

# --- SQL fragments ---------------------------------------------------------------------------

# window_tiles keeps the windows that tile time (each event counted once); the
# 300 s tiles serve intervals of 5 minutes and more, the 60 s tiles the rest.
TILE_SECONDS: Final = "if($__interval_s >= 300, 300, 60)"
SERIES_GROUPING: Final = "grouping = 'service+endpoint+model'"


def cond(column: str, variable: str) -> str:
    """A filter that disappears when the variable is All (``$__conditionalAll``)."""
    return f"$__conditionalAll({column} IN (${{{variable}:singlequote}}), ${variable})"


def conds(**columns: str) -> str:
    """``conds(service="service", tenant="labels['tenant']")`` joined with AND."""
    return " AND ".join(cond(column, var) for var, column in columns.items())


SEM: Final = conds(service="service", endpoint="endpoint", model="model")
TRACE_FILTERS: Final = conds(
    service="service", endpoint="endpoint", model="model", tenant="tenant", team="team"
)


def quantile(q: float, prefix: str = "latency") -> str:
    """Percentile of the merged sketches of the grouped rows (1 % relative accuracy)."""
    return (
        f"llmpulse_quantile({q}, {prefix}_sketch_keys, {prefix}_sketch_counts,"
        f" {prefix}_sketch_zeros)"
    )


def labels_text(column: str = "labels") -> str:
    """``service=chat-api endpoint=/v1/chat``: an alert's series without bookkeeping keys."""
    return (
        f"arrayStringConcat(arrayMap(k -> concat(k, '=', {column}[k]), "
        f"arrayFilter(k -> k NOT IN ('grouping', 'category'), mapKeys({column}))), ' ')"
    )


LATEST_ALERTS: Final = (
    "SELECT * FROM alerts ORDER BY dedup_key, wall_time DESC, event_time DESC LIMIT 1 BY dedup_key"
)
ALERT_LABEL_FILTERS: Final = conds(
    service="labels['service']",
    endpoint="labels['endpoint']",
    model="labels['model']",
    tenant="labels['tenant']",
)

# --- the query target ----------------------------------------------------------------------


class ClickHouseQuery(cogvariants.Dataquery):
    """A raw-SQL target of grafana-clickhouse-datasource (v4 query model)."""

    def __init__(self, ref_id: str, sql: str, fmt: int) -> None:
        self.ref_id = ref_id
        self.sql = sql
        self.fmt = fmt

    def to_json(self) -> dict[str, Any]:
        return {
            "refId": self.ref_id,
            "datasource": {"type": DATASOURCE_TYPE, "uid": "${datasource}"},
            "editorType": "sql",
            "rawSql": self.sql,
            "format": self.fmt,
            "queryType": "timeseries" if self.fmt == FORMAT_TIME_SERIES else "table",
            "pluginVersion": PLUGIN_VERSION,
        }


class _Target(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, query: ClickHouseQuery) -> None:
        self.query = query

    def build(self) -> cogvariants.Dataquery:
        return self.query


# --- panels --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PanelSpec:
    """One panel: its SQL (Grafana macros and variables), what it must return, its look."""

    title: str
    sql: str
    columns: tuple[str, ...]
    kind: Kind = "timeseries"
    unit: str = ""
    description: str = ""
    width: int = 12
    height: int = 8
    decimals: int | None = None
    thresholds: tuple[tuple[float, str], ...] = ()
    stacked: bool = False
    max_value: float | None = None
    overrides: dict[str, str] = field(default_factory=dict)  # column -> unit

    @property
    def format(self) -> int:
        return FORMAT_TIME_SERIES if self.kind in ("timeseries", "bars") else FORMAT_TABLE


def stat_tile(
    title: str,
    sql: str,
    column: str,
    description: str,
    *,
    unit: str = "short",
    decimals: int | None = None,
    thresholds: tuple[tuple[float, str], ...] = (),
    width: int = 6,
) -> PanelSpec:
    """One number (``column``, the query's only one) in a short tile of a dashboard's top row."""
    return PanelSpec(
        title,
        sql,
        (column,),
        kind="stat",
        unit=unit,
        description=description,
        width=width,
        height=4,
        decimals=decimals,
        thresholds=thresholds,
    )


@dataclass(frozen=True)
class RowSpec:
    title: str
    panels: Sequence[PanelSpec]


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    rows: Sequence[RowSpec]
    time_from: str = "now-6h"
    tags: tuple[str, ...] = ("llmpulse",)

    @property
    def panels(self) -> list[PanelSpec]:
        return [p for r in self.rows for p in r.panels]


def _thresholds(steps: Sequence[tuple[float, str]]) -> db.ThresholdsConfig:
    built = [dm.Threshold(value=None, color="green")]
    built += [dm.Threshold(value=v, color=c) for v, c in steps]
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(built)


def _unit_override(column: str, unit: str) -> tuple[str, list[dm.DynamicConfigValue]]:
    return column, [dm.DynamicConfigValue(id_val="unit", value=unit)]


def build_panel(spec: PanelSpec, panel_id: int) -> cogbuilder.Builder[dm.Panel]:
    target = _Target(ClickHouseQuery("A", spec.sql, spec.format))
    p: Any
    if spec.kind in ("timeseries", "bars"):
        p = (
            timeseries.Panel()
            .line_width(1 if spec.kind == "timeseries" else 0)
            .fill_opacity(12 if spec.kind == "timeseries" else 80)
            .show_points(cm.VisibilityMode.NEVER)
            .span_nulls(False)
            .legend(
                cb.VizLegendOptions()
                .show_legend(True)
                .display_mode(cm.LegendDisplayMode.LIST)
                .placement(cm.LegendPlacement.BOTTOM)
            )
            .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI))
        )
        if spec.kind == "bars":
            p = p.draw_style(cm.GraphDrawStyle.BARS)
        if spec.stacked or spec.kind == "bars":
            p = p.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    elif spec.kind == "table":
        p = table.Panel().filterable(True)
    elif spec.kind == "stat":
        p = (
            stat.Panel()
            .graph_mode(cm.BigValueGraphMode.NONE)
            .color_mode(cm.BigValueColorMode.VALUE)
            .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        )
    else:
        p = (
            bargauge.Panel()
            .display_mode(cm.BarGaugeDisplayMode.GRADIENT)
            .orientation(cm.VizOrientation.HORIZONTAL)
            .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(True))
        )
    p = (
        p.id(panel_id)
        .title(spec.title)
        .datasource(DS_REF)
        .with_target(target)
        .height(spec.height)
        .span(spec.width)
    )
    if spec.description:
        p = p.description(spec.description)
    if spec.unit:
        p = p.unit(spec.unit)
    if spec.decimals is not None:
        p = p.decimals(spec.decimals)
    if spec.max_value is not None:
        p = p.min(0).max(spec.max_value)
    if spec.thresholds:
        p = p.thresholds(_thresholds(spec.thresholds))
    for column, unit in spec.overrides.items():
        p = p.override_by_name(*_unit_override(column, unit))
    built: cogbuilder.Builder[dm.Panel] = p
    return built


# --- variables -----------------------------------------------------------------------------


def _query_variable(name: str, label: str, sql: str) -> db.QueryVariable:
    return (
        db.QueryVariable(name)
        .label(label)
        .query(sql)
        .datasource(DS_REF)
        .multi(True)
        .include_all(True)
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
    )


def _dimension_sql(column: str, where: str = "") -> str:
    extra = f" AND {where}" if where else ""
    return (
        f"SELECT DISTINCT {column} FROM window_stats WHERE $__timeFilter(window_start)"
        f" AND {column} != ''{extra} ORDER BY {column}"
    )


VARIABLES: Final[tuple[tuple[str, str, str], ...]] = (
    ("service", "service", _dimension_sql("service")),
    ("endpoint", "endpoint", _dimension_sql("endpoint", cond("service", "service"))),
    ("model", "model", _dimension_sql("model")),
    ("tenant", "tenant", _dimension_sql("tenant")),
    (
        "team",
        "team",
        "SELECT DISTINCT team FROM traces WHERE $__timeFilter(timestamp) AND team != ''"
        " ORDER BY team",
    ),
)


def build_dashboard(spec: DashboardSpec) -> dict[str, Any]:
    """The dashboard JSON (a plain dict, ready for json.dumps)."""
    import json

    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    d = (
        db.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(list(spec.tags))
        .editable()
        .timezone("browser")
        .time(spec.time_from, "now")
        .refresh("1m")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            db.DatasourceVariable("datasource")
            .label("data source")
            .type(DATASOURCE_TYPE)
            .current(dm.VariableOption(selected=True, text=DATASOURCE_NAME, value=DATASOURCE_UID))
        )
    )
    for name, label, sql in VARIABLES:
        d = d.with_variable(_query_variable(name, label, sql))
    panel_id = 1
    for row in spec.rows:
        d = d.with_row(db.Row(row.title).id(panel_id))
        panel_id += 1
        for panel in row.panels:
            d = d.with_panel(build_panel(panel, panel_id))
            panel_id += 1
    data: dict[str, Any] = json.loads(json.dumps(d.build(), cls=JSONEncoder))
    for p in data["panels"]:
        if p.get("type") != "row":
            p["pluginVersion"] = GRAFANA_VERSION
    return data
