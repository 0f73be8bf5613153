"""``llmpulse alerts``: check rules files, send test alerts, list alert history."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llmpulse.cli.context import console, out, reports_errors, state
from llmpulse.cli.output import as_json, as_table

if TYPE_CHECKING:
    from pydantic import SecretStr

    from llmpulse.alerts.config import AlertSinkSettings
    from llmpulse.alerts.rules import Rule, RuleSet
    from llmpulse.alerts.sinks import Sink
    from llmpulse.alerts.state import Transition
    from llmpulse.settings import Settings

app = typer.Typer(help="Alert rules, test notifications and alert history.", no_args_is_help=True)
rules_app = typer.Typer(help="Alert rules files.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")

RulesOpt = Annotated[
    Path | None,
    typer.Option("--rules", help="Rules file (default: alerts.rules_file, else the shipped rules)"),
]


# --- settings access -----------------------------------------------------------------------


def alert_settings(settings: Settings) -> AlertSinkSettings:
    """The ``alerts`` section, or its defaults where the tree has none."""
    from llmpulse.alerts.config import AlertSinkSettings

    section = getattr(settings, "alerts", None)
    return section if isinstance(section, AlertSinkSettings) else AlertSinkSettings()


def pagerduty_overrides(settings: Settings) -> tuple[str | None, SecretStr | None]:
    """(url, routing key) of the ``pagerduty`` section (LLMPULSE_PAGERDUTY_*), if mounted."""
    section = getattr(settings, "pagerduty", None)
    return getattr(section, "url", None), getattr(section, "routing_key", None)


def _load(path: Path | None, settings: Settings | None = None) -> RuleSet:
    from llmpulse.alerts.rules import load_rules

    if path is None and settings is not None:
        path = alert_settings(settings).rules_file
    return load_rules(path)


def _print_problems(source: str, problems: list[str]) -> None:
    console.print(f"[red]{len(problems)} problem(s) in {source}:[/red]")
    for p in problems:
        # markup off: "rules[2]" would otherwise read as a style tag
        console.print(f"  {p}", markup=False, highlight=False)


def _rules_table(rules: RuleSet) -> Any:
    rows = [
        [
            r.name,
            r.kind,
            r.condition,
            r.effective_window or "",
            r.for_,
            r.effective_min_requests,
            r.grouping or "any",
            r.severity,
            ", ".join(r.actions),
        ]
        for r in rules
    ]
    cols = ["rule", "kind", "condition", "window s", "for", "min req", "grouping", "severity"]
    return as_table([*cols, "actions"], rows)


# --- rules -----------------------------------------------------------------------------------


@rules_app.command("check")
@reports_errors
def rules_check(
    file: Annotated[Path, typer.Argument(help="Rules YAML file to validate")],
) -> None:
    """Validate a rules file: list its rules, or every problem (exit 1)."""
    from llmpulse.alerts.rules import RuleError

    try:
        rules = _load(file)
    except RuleError as exc:
        _print_problems(exc.source, exc.problems)
        raise typer.Exit(1) from None
    out.print(_rules_table(rules))
    out.print(f"{len(rules)} rules OK in {file}")


@rules_app.command("show")
@reports_errors
def rules_show(ctx: typer.Context, rules_file: RulesOpt = None) -> None:
    """Show the rules in effect (the configured file, else the shipped defaults)."""
    from llmpulse.alerts.rules import RuleError

    try:
        rules = _load(rules_file, state(ctx).settings())
    except RuleError as exc:
        _print_problems(exc.source, exc.problems)
        raise typer.Exit(1) from None
    out.print(_rules_table(rules))
    out.print(f"{len(rules)} rules from {rules.source}")


# --- test ------------------------------------------------------------------------------------


def _send(sinks: list[Sink], t: Transition) -> int:
    """Send ``t`` to every sink at once (no retries); print each outcome; count failures."""
    from llmpulse.alerts.sinks import ControlSink, SinkError

    failures = 0
    for sink in sinks:
        if isinstance(sink, ControlSink) and not sink.events(t):
            out.print(f"  {sink.name}: no control action for {t.rule} when {t.to_state}")
            continue
        try:
            sink.send(t)
        except SinkError as exc:
            failures += 1
            console.print(f"  {sink.name}: [red]failed[/red] ", end="")
            console.print(exc.problem, markup=False, highlight=False)
        else:
            done = "handed to the Kafka producer" if isinstance(sink, ControlSink) else "sent"
            out.print(f"  {sink.name}: {t.to_state} {done}")
    return failures


def _publish_control(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> str | None:
    """Publish the collected control events; the error text, or None on success."""
    import asyncio

    from llmpulse.client import KafkaOptions, KafkaTransport
    from llmpulse.errors import KafkaError

    async def run() -> None:
        transport = KafkaTransport(bootstrap, KafkaOptions(client_id="llmpulse-alerts-test"))
        await transport.start()
        try:
            for topic, key, value in records:
                await transport.send_batch(topic, [(key, value)])
        finally:
            await transport.close()

    try:
        asyncio.run(asyncio.wait_for(run(), timeout=20))
    except (KafkaError, TimeoutError) as exc:
        return str(exc) or "timed out"
    return None


@app.command("test")
@reports_errors
def test_rule(
    ctx: typer.Context,
    rule_name: Annotated[str, typer.Argument(metavar="RULE", help="Name of the rule to test")],
    rules_file: RulesOpt = None,
    resolve: Annotated[
        bool, typer.Option("--resolve/--no-resolve", help="Resolve the test alert afterwards")
    ] = True,
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="Send to a local PagerDuty stand-in that validates the payload,"
            " instead of the configured sinks",
        ),
    ] = False,
) -> None:
    """Send a synthetic firing alert of RULE to the configured sinks (then resolve it)."""
    from llmpulse.alerts.rules import RuleError
    from llmpulse.alerts.sinks import PagerDutySink, build_sinks, pagerduty_event
    from llmpulse.alerts.state import AlertState
    from llmpulse.alerts.synthetic import synthetic_transition
    from llmpulse.alerts.testing import PagerDutyReceiver
    from llmpulse.errors import ConfigError

    settings = state(ctx).settings()
    conf = alert_settings(settings)
    try:
        rules = _load(rules_file, settings)
    except RuleError as exc:
        _print_problems(exc.source, exc.problems)
        raise typer.Exit(1) from None
    rule: Rule | None = rules.get(rule_name)
    if rule is None:
        raise ConfigError("RULE", f"no rule {rule_name!r} in {rules.source}; rules: {rules.names}")
    now = datetime.now(UTC)
    fired = synthetic_transition(rule, now, dashboard_base_url=conf.dashboard_base_url)
    steps = [fired]
    if resolve:
        steps.append(
            synthetic_transition(
                rule,
                now,
                to_state=AlertState.RESOLVED,
                dashboard_base_url=conf.dashboard_base_url,
            )
        )
    pd_url, pd_key = pagerduty_overrides(settings)

    if local:
        key = pd_key or conf.pagerduty_routing_key or "0" * 32
        with PagerDutyReceiver() as receiver:
            sink = PagerDutySink(key, receiver.url, timeout=conf.http_timeout_s)
            failures = sum(_send([sink], t) for t in steps)
        for t in steps:
            out.print_json(json.dumps(pagerduty_event(t, "<routing key>")))
        for req in receiver.rejected:
            _print_problems("the PagerDuty payload", req.errors)
        raise typer.Exit(1 if failures else 0)

    control: list[tuple[str, bytes, bytes]] = []
    sinks = build_sinks(
        conf,
        pd_url,
        pd_key,
        publish=lambda topic, k, v: control.append((topic, k, v)),
        control_topic=settings.topics.control,
    )
    if not sinks:
        console.print(
            "no alert sink configured: set LLMPULSE_PAGERDUTY_ROUTING_KEY,"
            " LLMPULSE_ALERTS_WEBHOOK_URL or LLMPULSE_ALERTS_SLACK_WEBHOOK_URL"
            " (or try --local)"
        )
        raise typer.Exit(1)
    out.print(f"test alert of {rule.name}: {fired.summary}", markup=False, highlight=False)
    failures = 0
    for t in steps:
        failures += _send(sinks, t)
    if control:
        problem = _publish_control(settings.kafka.bootstrap, control)
        if problem is None:
            out.print(f"  control: {len(control)} event(s) published to {settings.topics.control}")
        else:
            failures += 1
            console.print("  control: [red]failed[/red] ", end="")
            console.print(problem, markup=False, highlight=False)
    raise typer.Exit(1 if failures else 0)


# --- list --------------------------------------------------------------------------------------


def _labels_text(labels: Any) -> str:
    if not isinstance(labels, dict):
        return str(labels)
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "grouping")


def latest_by_state_sql(alert_state: str, limit: int) -> str:
    """Alerts whose latest transition is ``alert_state`` (a validated state name)."""
    from llmpulse.alerts.state import LATEST_ALERTS_SQL

    return (
        "SELECT dedup_key, rule, severity, state, labels, value, threshold, event_time,"
        f" wall_time, summary FROM ({LATEST_ALERTS_SQL}) WHERE state = '{alert_state}'"
        f" ORDER BY wall_time DESC LIMIT {int(limit)}"
    )


def recent_sql(limit: int) -> str:
    return (
        "SELECT wall_time, event_time, rule, from_state, state, severity, labels, value,"
        " threshold, notified FROM alerts ORDER BY wall_time DESC, event_time DESC"
        f" LIMIT {int(limit)}"
    )


# Short label keys: the labels column is the one that must fit an 80-column terminal.
_LABEL_ABBREV = {
    "service": "svc",
    "endpoint": "ep",
    "provider": "prov",
    "prompt_version": "pv",
    "variant": "var",
    "environment": "env",
}


def compact_labels(labels: Any) -> str:
    """``svc=chat-api ep=/v1/chat model=gpt-4o``: series labels without ``grouping``.

    >>> compact_labels({"grouping": "service", "service": "chat-api", "model": "gpt-4o"})
    'svc=chat-api model=gpt-4o'
    """
    if not isinstance(labels, dict):
        return str(labels)
    from llmpulse.schemas.event import DIMENSIONS

    order = {d: i for i, d in enumerate(DIMENSIONS)}  # service first, as people read them
    keys = sorted((k for k in labels if k != "grouping"), key=lambda k: (order.get(k, 99), k))
    return " ".join(f"{_LABEL_ABBREV.get(k, k)}={labels[k]}" for k in keys)


def compact_time(value: Any) -> str:
    """``12-03 08:15:02`` (UTC): the date and second are enough to find it again."""
    t = value
    if isinstance(value, str):  # through the worker's /sql endpoint: ISO text
        try:
            t = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(t, datetime):
        t = t if t.tzinfo is None else t.astimezone(UTC)
        return t.strftime("%m-%d %H:%M:%S")
    return str(value)


def compact_number(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):  # no value
            return ""
        return f"{value:.4g}"
    return str(value)


def compact_rows(name: str, columns: list[str], rows: list[tuple[Any, ...]]) -> Any:
    """The narrow table of one ``alerts list`` section (firing/pending/... or recent)."""
    from rich.table import Table

    at = {c: i for i, c in enumerate(columns)}
    table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("rule", overflow="fold")
    if name == "recent":
        table.add_column("change", no_wrap=True)
    else:
        table.add_column("sev", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("series", overflow="fold", ratio=1)
    for r in rows:
        value = f"{compact_number(r[at['value']])}/{compact_number(r[at['threshold']])}"
        third = f"{r[at['from_state']]}>{r[at['state']]}" if name == "recent" else r[at["severity"]]
        when = r[at["wall_time"]] if name == "recent" else r[at["event_time"]]
        table.add_row(
            compact_time(when),
            str(r[at["rule"]]),
            str(third),
            value,
            compact_labels(r[at["labels"]]),
        )
    return table


@app.command("list")
@reports_errors
def list_alerts(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Rows per section")] = 20,
    alert_state: Annotated[
        str | None,
        typer.Option(
            "--state",
            help="Only alerts now in this state (firing, pending, resolved, inactive)",
        ),
    ] = None,
    wide: Annotated[
        bool, typer.Option("--wide", help="Every column (dedup key, summary, both times...)")
    ] = False,
    output_format: Annotated[
        str, typer.Option("--format", "-f", help="table or json (every column)")
    ] = "table",
    as_json_flag: Annotated[bool, typer.Option("--json", help="Same as --format json")] = False,
) -> None:
    """Alerts firing now, and the most recent transitions (from the alerts table).

    The table fits 80 columns: time, rule, severity or change, value/threshold
    and the series; --wide shows every column, --format json everything as JSON.
    """
    from llmpulse.alerts.state import AlertState
    from llmpulse.errors import ConfigError
    from llmpulse.store.query import query_store

    if alert_state is not None and alert_state not in {s.value for s in AlertState}:
        raise ConfigError(
            "--state", f"must be firing, pending, resolved or inactive, got {alert_state!r}"
        )
    if output_format not in ("table", "json"):
        raise ConfigError("--format", f"must be table or json, got {output_format!r}")
    settings = state(ctx).settings()
    sections: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
    current = alert_state or AlertState.FIRING.value
    sections[current] = query_store(settings, latest_by_state_sql(current, limit))
    if alert_state is None:
        sections["recent"] = query_store(settings, recent_sql(limit))
    if as_json_flag or output_format == "json":
        payload = {name: json.loads(as_json(cols, rows)) for name, (cols, rows) in sections.items()}
        print(json.dumps(payload))
        return
    for name, (cols, rows) in sections.items():
        title = f"alerts {name} now" if name != "recent" else "recent transitions"
        out.print(f"[bold]{title}[/bold] ({len(rows)})")
        if not rows:
            continue
        if wide:
            shown = [
                [_labels_text(v) if c == "labels" else v for c, v in zip(cols, r, strict=True)]
                for r in rows
            ]
            out.print(as_table(cols, shown))
        else:
            out.print(compact_rows(name, cols, rows))
