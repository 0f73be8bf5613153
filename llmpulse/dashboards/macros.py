"""What Grafana and grafana-clickhouse-datasource (4.x) do to a panel's SQL before it runs.

Two stages, in the order Grafana applies them:

1. In the browser (the plugin's ``CHDatasource.applyTemplateVariables``):
   ``$__conditionalAll(condition, $var)`` becomes ``1=1`` when ``$var`` is All
   or empty, else ``condition``; then Grafana's template service replaces the
   variables (``$var``, ``${var}``, ``${var:singlequote}``), a multi-value
   selection formatted by the plugin as ``'a','b'``.
2. In the plugin's backend (``pkg/macros/macros.go``, macropro engine): the time
   macros, innermost first when nested, arguments split on top-level commas and
   trimmed; macros inside comments and quoted text are not expanded (comments
   are stripped first); unknown macros stay as they are, so ClickHouse rejects
   them, as it would in Grafana.

This is our own implementation of that documented behaviour, used by the tests
to run every panel's SQL against a real engine.

>>> from datetime import datetime, UTC
>>> ctx = QueryContext(datetime(2014, 11, 12, 11, 45, 26, 371000, tzinfo=UTC),
...                    datetime(2015, 11, 12, 11, 45, 26, 371000, tzinfo=UTC), interval_s=60)
>>> interpolate("SELECT $__timeInterval(ts) t", ctx)
'SELECT toStartOfInterval(toDateTime(ts), INTERVAL 60 second) t'
>>> interpolate("WHERE $__timeFilter(ts) AND s = '$__toTime'", ctx)
"WHERE ts >= toDateTime(1415792726) AND ts <= toDateTime(1447328726) AND s = '$__toTime'"
>>> interpolate("SELECT $__timeInterval($__fromTime) AS f, $__interval_s AS s", ctx)
'SELECT toStartOfInterval(toDateTime(toDateTime(1415792726)), INTERVAL 60 second) AS f, 60 AS s'
>>> v = {"service": Selection(["a", "b"], all_values=["a", "b", "c"])}
>>> apply_variables("$__conditionalAll(service IN (${service:singlequote}), $service)", v)
"service IN ('a','b')"
>>> apply_variables("$__conditionalAll(service IN (${service:singlequote}), $service)",
...                 {"service": Selection.all(["a", "b"])})
'1=1'
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from llmpulse.errors import ConfigError
from llmpulse.store.statements import quoted_positions, strip_comments

__all__ = [
    "ALL",
    "QueryContext",
    "Selection",
    "apply_conditional_all",
    "apply_variables",
    "interpolate",
    "render",
    "replace_variables",
]

ALL = "$__all"


@dataclass(frozen=True)
class QueryContext:
    """The dashboard's time range and the panel's interval (Grafana computes it
    from the range and the panel's width)."""

    time_from: datetime
    time_to: datetime
    interval_s: float = 60.0


@dataclass(frozen=True)
class Selection:
    """The current value of a multi-value variable: the selected values, or All."""

    values: Sequence[str]
    all_values: Sequence[str] = field(default_factory=list)
    is_all: bool = False

    @classmethod
    def all(cls, options: Sequence[str]) -> Selection:
        return cls(list(options), list(options), True)


# --- stage 1: the browser ----------------------------------------------------------------


def _macro_args(
    text: str, open_paren: int, quoted: frozenset[int] = frozenset()
) -> tuple[list[str], int] | None:
    """Arguments of the call whose ``(`` is at ``open_paren``, split on top-level commas
    (the plugin's ``getMacroArgs``), and the index after the closing ``)``.
    Positions in ``quoted`` (inside string literals) are not syntax."""
    depth, start, args = 0, open_paren + 1, []
    for i in range(open_paren, len(text)):
        c = text[i]
        if i in quoted:
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                args.append(text[start:i])
                return args, i + 1
        elif c == "," and depth == 1:
            args.append(text[start:i])
            start = i + 1
    return None


_VAR_IN_ARG = re.compile(r"(?<=\$\{)\w+(?=\})|(?<=\$)\w+")


def apply_conditional_all(sql: str, variables: Mapping[str, Selection]) -> str:
    """``$__conditionalAll(cond, $var)``: ``1=1`` when ``$var`` is All or empty."""
    macro = "$__conditionalAll("
    at = sql.rfind(macro)
    while at != -1:
        parsed = _macro_args(sql, at + len(macro) - 1)
        if parsed is None or len(parsed[0]) != 2:
            return sql  # the plugin gives up the same way
        (condition, var_arg), end = parsed
        phrase = condition
        found = _VAR_IN_ARG.search(var_arg.strip())
        if found:
            sel = variables.get(found.group(0))
            if sel is not None and (sel.is_all or not sel.values):
                phrase = "1=1"
        sql = sql[:at] + phrase + sql[end:]
        at = sql.rfind(macro)
    return sql


_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)|\[\[(\w+)\]\]")


def _quote(v: str) -> str:
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def replace_variables(sql: str, variables: Mapping[str, Selection]) -> str:
    """Grafana's template replacement with the plugin's default format."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3) or m.group(4)
        fmt = m.group(2)
        sel = variables.get(name)
        if sel is None:
            return m.group(0)  # built-ins ($__interval...) and unknown names stay
        values = list(sel.all_values if sel.is_all else sel.values)
        if fmt == "singlequote":
            return ",".join(_quote(v) for v in values)
        if fmt is not None:
            raise ConfigError(m.group(0), f"variable format {fmt!r} is not supported here")
        # The plugin formats arrays as 'a','b' and leaves a single value bare.
        if len(values) == 1 and not sel.is_all:
            return values[0]
        return "'" + "','".join(values) + "'"

    return _VARIABLE.sub(one, sql)


def apply_variables(sql: str, variables: Mapping[str, Selection]) -> str:
    return replace_variables(apply_conditional_all(sql, variables), variables)


# --- stage 2: the plugin's backend --------------------------------------------------------


def _datetime(t: datetime) -> str:
    return f"toDateTime({math.floor(t.timestamp())})"


def _datetime64(t: datetime) -> str:
    return f"fromUnixTimestamp64Milli({math.floor(t.timestamp() * 1000)})"


def _date(t: datetime) -> str:
    return f"toDate('{t.strftime('%Y-%m-%d')}')"


def _seconds(ctx: QueryContext) -> int:
    return int(max(ctx.interval_s, 1))


def _one(
    name: str, fn: Callable[[QueryContext, str], str]
) -> Callable[[QueryContext, list[str]], str]:
    def call(ctx: QueryContext, args: list[str]) -> str:
        if len(args) != 1:
            raise ConfigError(f"$__{name}", f"expected 1 argument(s), received {len(args)}")
        return fn(ctx, args[0])

    return call


def _no_args(fn: Callable[[QueryContext], str]) -> Callable[[QueryContext, list[str]], str]:
    return lambda ctx, args: fn(ctx)


def _date_time_filter(ctx: QueryContext, args: list[str]) -> str:
    if len(args) != 2:
        raise ConfigError("$__dateTimeFilter", f"expected 2 argument(s), received {len(args)}")
    d, t = args
    f, to = ctx.time_from, ctx.time_to
    return (
        f"({d} >= {_date(f)} AND {d} <= {_date(to)}) AND "
        f"({t} >= {_datetime(f)} AND {t} <= {_datetime(to)})"
    )


MACROS: dict[str, Callable[[QueryContext, list[str]], str]] = {
    "timeFilter": _one(
        "timeFilter",
        lambda c, a: f"{a} >= {_datetime(c.time_from)} AND {a} <= {_datetime(c.time_to)}",
    ),
    "timeFilter_ms": _one(
        "timeFilter_ms",
        lambda c, a: f"{a} >= {_datetime64(c.time_from)} AND {a} <= {_datetime64(c.time_to)}",
    ),
    "timeFrom": _one("timeFrom", lambda c, a: f"{a} >= {_datetime(c.time_from)}"),
    "timeTo": _one("timeTo", lambda c, a: f"{a} <= {_datetime(c.time_to)}"),
    "dateFilter": _one(
        "dateFilter", lambda c, a: f"{a} >= {_date(c.time_from)} AND {a} <= {_date(c.time_to)}"
    ),
    "dateTimeFilter": _date_time_filter,
    "dt": _date_time_filter,
    "fromTime": _no_args(lambda c: _datetime(c.time_from)),
    "toTime": _no_args(lambda c: _datetime(c.time_to)),
    "fromTime_ms": _no_args(lambda c: _datetime64(c.time_from)),
    "toTime_ms": _no_args(lambda c: _datetime64(c.time_to)),
    "timeInterval": _one(
        "timeInterval",
        lambda c, a: f"toStartOfInterval(toDateTime({a}), INTERVAL {_seconds(c)} second)",
    ),
    "timeInterval_ms": _one(
        "timeInterval_ms",
        lambda c, a: (
            f"toStartOfInterval(toDateTime64({a}, 3), "
            f"INTERVAL {int(max(c.interval_s * 1000, 1))} millisecond)"
        ),
    ),
    "interval_s": _no_args(lambda c: str(_seconds(c))),
}

_NAME = re.compile(r"\$__(\w+)")


def _expand(sql: str, ctx: QueryContext) -> str:
    quoted = quoted_positions(sql)
    out: list[str] = []
    i = 0
    while True:
        m = _NAME.search(sql, i)
        if m is None:
            out.append(sql[i:])
            return "".join(out)
        out.append(sql[i : m.start()])
        name, end = m.group(1), m.end()
        handler = MACROS.get(name)
        if handler is None or m.start() in quoted:
            out.append(m.group(0))
            i = end
            continue
        args: list[str] = []
        if end < len(sql) and sql[end] == "(":
            parsed = _macro_args(sql, end, quoted)
            if parsed is None:
                raise ConfigError(f"$__{name}", "unbalanced parentheses")
            raw_args, end = parsed
            # innermost first: a macro inside an argument expands before its caller
            args = [_expand(a, ctx).strip() for a in raw_args]
            if args == [""]:
                args = []
        out.append(handler(ctx, args))
        i = end


def interpolate(sql: str, ctx: QueryContext) -> str:
    """The backend's expansion of the ``$__`` time macros (comments stripped first)."""
    return _expand(strip_comments(sql), ctx)


def render(sql: str, ctx: QueryContext, variables: Mapping[str, Selection]) -> str:
    """A panel's SQL as the engine receives it from Grafana."""
    return interpolate(apply_variables(sql, variables), ctx)
