"""Checks that the directories a command writes to can be written, before it starts.

Without them an unwritable or full data directory surfaces as a traceback from
deep inside chDB, Faust or the broker start, sometimes minutes into a run. Each
command that writes state (``worker``, ``replay``, ``demo``, ``kafka start``)
checks its directories first and stops with one line that names the path and
the rule it breaks:

* ``not a directory``: the path, or one of its parents, is a regular file;
* ``not writable``: permissions, a read-only mount;
* ``no space left on device``: the probe write failed with ENOSPC, or less than
  :data:`MIN_FREE_BYTES` are free for this user.

The probe creates, writes, syncs and deletes one small file: the only way to
learn what the kernel will actually allow (root ignores permission bits, quotas
and read-only mounts do not show in the mode).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from llmpulse.errors import LlmpulseError

if TYPE_CHECKING:
    from llmpulse.settings import Settings

__all__ = [
    "MIN_FREE_BYTES",
    "DataDirError",
    "check_dirs",
    "check_state_dirs",
    "check_writable",
    "store_dir",
]

MIN_FREE_BYTES: Final = 16 * 1024 * 1024  # less than this and the first batch fails
_PROBE: Final = b"llmpulse write probe\n" * 64


class DataDirError(LlmpulseError):
    """A directory llmpulse must write to cannot be used; ``rule`` says why."""

    def __init__(self, what: str, path: Path, rule: str, detail: str = "") -> None:
        self.what = what
        self.path = path
        self.rule = rule
        hint = f" ({detail})" if detail and detail.lower() != rule else ""
        super().__init__(f"{what} {path}: {rule}{hint}")


def _rule_of(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on device"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return "not a directory"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "not writable"
    return "cannot be used"


def _write_probe(directory: Path) -> None:
    """Create, write, sync and remove a small file in ``directory`` (the seam tests
    replace to simulate a full disk)."""
    fd, name = tempfile.mkstemp(prefix=".llmpulse-probe-", dir=directory)
    try:
        os.write(fd, _PROBE)
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(name)


def check_writable(path: Path, what: str = "data directory") -> None:
    """Create ``path`` if needed and prove it writable with room left; raise
    :class:`DataDirError` naming the path and the rule otherwise."""
    path = path.expanduser()
    if path.exists() and not path.is_dir():
        raise DataDirError(what, path, "not a directory", "it is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        rule = _rule_of(exc)
        detail = exc.strerror or str(exc)
        if rule == "not a directory":
            blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
            detail = f"{blocker} is a file" if blocker is not None else ""
        raise DataDirError(what, path, rule, detail) from None
    try:
        _write_probe(path)
    except OSError as exc:
        raise DataDirError(what, path, _rule_of(exc), exc.strerror or str(exc)) from None
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return  # nothing more to learn: the probe went through
    if free < MIN_FREE_BYTES:
        raise DataDirError(
            what,
            path,
            "no space left on device",
            f"{free // 1024} KiB free, at least {MIN_FREE_BYTES // (1024 * 1024)} MiB needed",
        )


def store_dir(dsn: str) -> Path | None:
    """The directory of an embedded store (``chdb:///path``), None for a server or
    the in-memory store.

    >>> store_dir("chdb:///var/lib/llmpulse/store"), store_dir("chdb://memory")
    (PosixPath('/var/lib/llmpulse/store'), None)
    >>> store_dir("http://db:8123") is None
    True
    """
    if not dsn.startswith("chdb://"):
        return None
    rest = dsn.removeprefix("chdb://").split("?", 1)[0]
    if rest in ("", "memory", ":memory:"):
        return None
    return Path(rest)


def check_dirs(dirs: Iterable[tuple[str, Path | None]]) -> None:
    """``check_writable`` over (what, path) pairs, skipping None."""
    for what, path in dirs:
        if path is not None:
            check_writable(path, what)


def check_state_dirs(settings: Settings) -> None:
    """The data directory, and the embedded store's directory when it is elsewhere."""
    store = store_dir(settings.clickhouse_dsn)
    check_dirs(
        [
            ("data directory", settings.data_dir),
            ("store directory", store),
        ]
    )
