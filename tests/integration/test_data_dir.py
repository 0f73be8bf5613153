"""An unwritable or full data directory at start: one clear line naming the path and
the rule, not a traceback, for every command that writes state."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from typer.testing import CliRunner

from llmpulse.cli import datadir
from llmpulse.cli.main import app

COMMANDS = {
    "worker": ["worker"],
    "replay": ["replay", "{events}"],
    "demo": ["demo", "--duration", "1"],
    "kafka start": ["kafka", "start", "--timeout", "5"],
}


class Run(NamedTuple):
    code: int
    stderr: str


def run(args: list[str], data: Path, tmp: Path) -> Run:
    events = tmp / "events.jsonl"
    events.write_text("")
    argv = [a.replace("{events}", str(events)) for a in args]
    env = {
        **os.environ,
        "LLMPULSE_DATA_DIR": str(data),
        # Nothing may be reached before the check: a bootstrap nobody answers on.
        "LLMPULSE_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "COLUMNS": "300",  # one line per message, whatever the path's length
    }
    env.pop("LLMPULSE_CLICKHOUSE_DSN", None)  # the store under the data directory
    proc = subprocess.run(
        [sys.executable, "-m", "llmpulse", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Run(proc.returncode, proc.stderr + proc.stdout)


def assert_clear_error(r: Run, path: Path, rule: str) -> None:
    assert r.code != 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert str(path) in r.stderr, r.stderr
    assert rule in r.stderr, r.stderr


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_data_dir_under_a_regular_file(tmp_path: Path, command: str) -> None:
    """A path whose parent is a regular file fails for root too (ENOTDIR)."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    data = blocker / "data"
    r = run(COMMANDS[command], data, tmp_path)
    target = data / "kafka" if command == "kafka start" else data
    assert_clear_error(r, target, "not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through mode 0o500")
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_read_only_data_dir(tmp_path: Path, command: str) -> None:
    data = tmp_path / "ro"
    data.mkdir()
    data.chmod(0o500)
    try:
        r = run(COMMANDS[command], data, tmp_path)
    finally:
        data.chmod(0o700)
    target = data / "kafka" if command == "kafka start" else data
    assert_clear_error(r, target, "not writable")


# A tiny full filesystem is not available here (no loop mounts, no tmpfs with a
# size for this user): ENOSPC is simulated at the seam, the probe write.


def test_disk_full_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(directory: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(datadir, "_write_probe", full)
    events = tmp_path / "events.jsonl"
    events.write_text("")
    data = tmp_path / "data"
    monkeypatch.setenv("LLMPULSE_DATA_DIR", str(data))
    monkeypatch.delenv("LLMPULSE_CLICKHOUSE_DSN", raising=False)
    monkeypatch.setenv("COLUMNS", "300")
    result = CliRunner().invoke(app, ["replay", str(events)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # typer.Exit, not a crash
    assert f"data directory {data}: no space left on device" in result.output


def test_almost_full_disk_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Usage(NamedTuple):
        total: int
        used: int
        free: int

    monkeypatch.setattr(datadir.shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(datadir.DataDirError) as exc:
        datadir.check_writable(tmp_path / "d")
    assert exc.value.rule == "no space left on device" and exc.value.path == tmp_path / "d"
    assert "4 KiB free" in str(exc.value)


def test_store_directory_checked_too(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    env_store = blocker / "store"
    proc = subprocess.run(
        [sys.executable, "-m", "llmpulse", "replay", str(blocker)],
        env={
            **os.environ,
            "LLMPULSE_DATA_DIR": str(tmp_path / "data"),
            "LLMPULSE_CLICKHOUSE_DSN": f"chdb://{env_store}",
            "COLUMNS": "300",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert f"store directory {env_store}: not a directory" in proc.stderr, proc.stderr


def test_writable_dir_passes_and_leaves_nothing(tmp_path: Path) -> None:
    d = tmp_path / "new" / "data"
    datadir.check_writable(d)
    assert d.is_dir() and list(d.iterdir()) == []
