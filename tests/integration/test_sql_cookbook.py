"""docs/sql.md as a new user runs it: every query, exactly as written, through `llmpulse sql`.

The store is seeded with the showcase hour by `llmpulse replay` (budgets from a
config file, a few malformed lines for rejected_events), then each fenced sql
block of the doc runs in its own `llmpulse sql` process.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from llmpulse.synth.malformed import malformed_events
from llmpulse.synth.scenarios import showcase_events
from llmpulse.synth.traffic import write_jsonl
from tests.helpers import llmpulse
from tests.seed import budgets_toml

REPO = Path(__file__).resolve().parents[2]
FENCED_SQL = re.compile(r"```sql\n(.*?)```", re.S)


def blocks(doc: str) -> list[str]:
    return FENCED_SQL.findall((REPO / "docs" / doc).read_text())


COOKBOOK = blocks("sql.md")


def cli(
    args: list[str], env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return llmpulse(args, env, timeout=180, stdin=stdin)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cookbook")
    config = root / "llmpulse.toml"
    config.write_text(budgets_toml())
    stream = root / "showcase.jsonl"
    write_jsonl(stream, showcase_events(int(time.time() * 1000)))
    with stream.open("ab") as f:
        f.write(b"\n".join(malformed_events(5, seed=1)) + b"\n")
    env = {
        "LLMPULSE_DATA_DIR": str(root / "data"),
        "LLMPULSE_CLICKHOUSE_DSN": f"chdb://{root / 'store'}",
    }
    proc = cli(["--config", str(config), "replay", str(stream), "--json"], env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rejected"] == 5
    return env


def test_the_doc_has_the_cookbook() -> None:
    text = "\n".join(COOKBOOK)
    for needle in ("llmpulse_quantile(0.99", "prompt_version", "per 1k tokens", "drift_events",
                   "resolved_at", "top tenants by cost this week",
                   "JOIN traces AS t ON t.event_id = s.call_event_id"):  # fmt: skip
        assert needle.lower() in text.lower(), needle


def test_agent_runs_link_to_the_otlp_cookbook() -> None:
    doc = (REPO / "docs" / "sql.md").read_text()
    assert "### Agent runs" in doc and "(otlp.md#cookbook-agent-runs)" in doc
    # the anchor GitHub derives from the heading of docs/otlp.md
    assert "\n## Cookbook: agent runs\n" in (REPO / "docs" / "otlp.md").read_text()


@pytest.mark.parametrize("query", COOKBOOK, ids=[q.splitlines()[0][:60] for q in COOKBOOK])
def test_cookbook_query_runs_as_written(seeded: dict[str, str], query: str) -> None:
    proc = cli(["sql", query, "-f", "json"], seeded)
    assert proc.returncode == 0, f"{query}\n{proc.stderr}"
    rows = json.loads(proc.stdout)
    assert rows, f"no rows for:\n{query}"


def test_first_query_of_windows_md_pasted_as_is(seeded: dict[str, str]) -> None:
    """The report of issue 10: this query starts with '-- p50/p95/p99 per service per hour'."""
    first = blocks("windows.md")[0]
    assert first.startswith("-- p50/p95/p99")
    proc = cli(["sql", first], seeded)
    assert proc.returncode == 0, proc.stderr
    assert "chat-api" in proc.stdout and "p99_ms" in proc.stdout


def test_queries_from_a_file_and_from_stdin(seeded: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / "report.sql"
    script.write_text(
        "-- two queries; the ';' inside the string is not a separator\n"
        "SELECT count() AS calls FROM traces;\n"
        "SELECT 'a;b' AS s, count() AS rejected FROM rejected_events;\n"
    )
    proc = cli(["sql", "--file", str(script), "-f", "json"], seeded)
    assert proc.returncode == 0, proc.stderr
    first, second = (json.loads(line) for line in proc.stdout.splitlines())
    assert first[0]["calls"] > 10_000 and second == [{"s": "a;b", "rejected": 5}]

    proc = cli(["sql", "-", "-f", "csv"], seeded, stdin=COOKBOOK[0])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "tenant,cost_usd,calls,unpriced_calls"

    empty = cli(["sql", "-"], seeded, stdin="-- nothing but a comment\n")
    assert empty.returncode == 2 and "no SQL statement" in empty.stderr
    missing = cli(["sql", "--file", str(tmp_path / "nope.sql")], seeded)
    assert missing.returncode == 2 and "does not exist" in " ".join(missing.stderr.split())


def test_every_table_and_column_is_documented(seeded: dict[str, str]) -> None:
    doc = (REPO / "docs" / "sql.md").read_text()
    proc = cli(
        ["sql", "SELECT table, name FROM system.columns WHERE database = currentDatabase()"
         " ORDER BY table, position", "-f", "json"], seeded,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    missing = []
    for row in json.loads(proc.stdout):
        section = re.search(rf"^### {re.escape(row['table'])}\b.*?(?=^### |\Z)", doc, re.M | re.S)
        if section is None:
            missing.append(row["table"])
        elif row["table"] != "window_tiles" and f"`{row['name']}`" not in section.group(0):
            missing.append(f"{row['table']}.{row['name']}")
    assert not missing, f"undocumented in docs/sql.md: {sorted(set(missing))}"
