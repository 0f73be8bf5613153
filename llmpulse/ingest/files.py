"""Reading recorded traffic: JSON Lines files, plain or gzip-compressed."""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from llmpulse.processors.traces import RawMessage
from llmpulse.schemas.event import DEFAULT_MAX_EVENT_BYTES

_READ_CHUNK = 1 << 22


def _open(path: Path) -> tuple[BinaryIO, BinaryIO]:
    """Returns (reader, raw file); the raw file's position measures progress."""
    raw = path.open("rb")
    head = raw.read(2)
    raw.seek(0)
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw), raw  # type: ignore[return-value]
    return raw, raw


def _lines(reader: BinaryIO, max_line_bytes: int) -> Iterator[bytes]:
    """Every line, stripped, of at most ``max_line_bytes + 1`` bytes: a longer line
    is cut there (the validator then rejects it by its size) and its rest skipped,
    so one huge line never sits in memory whole. Read in large chunks: a call per
    line costs more than parsing the line."""
    limit = max_line_bytes + 1
    pending = b""
    skipping = False  # inside a line already cut
    while chunk := reader.read(_READ_CHUNK):
        parts = chunk.split(b"\n")
        if skipping:
            if len(parts) == 1:
                continue
            parts, skipping = parts[1:], False
        parts[0] = pending + parts[0]
        pending = parts.pop()
        for line in parts:
            # unstripped when cut: it must stay over the limit
            yield line[:limit] if len(line) >= limit else line.strip()
        if len(pending) >= limit:
            yield pending[:limit]
            pending, skipping = b"", True
    if pending and not skipping:
        yield pending[:limit] if len(pending) >= limit else pending.strip()


def read_jsonl(
    path: Path,
    *,
    on_progress: Callable[[int], None] | None = None,
    max_line_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> Iterator[RawMessage]:
    """One ``RawMessage`` per non-blank line, sourced ``replay:<abs path>:<line>``.

    ``on_progress`` receives the bytes of the file consumed so far (compressed
    bytes for .gz), so a progress bar can use the file size as its total. Lines
    longer than ``max_line_bytes`` (pass ``limits.max_event_bytes``) arrive cut
    to one byte over it.
    """
    reader, raw = _open(path)
    prefix = f"replay:{path.resolve()}:"
    try:
        for lineno, line in enumerate(_lines(reader, max_line_bytes), start=1):
            if line:
                yield RawMessage(line, prefix + str(lineno))
            if on_progress is not None and lineno % 1000 == 0:
                on_progress(raw.tell())
        if on_progress is not None:
            on_progress(raw.tell())
    finally:
        reader.close()
        raw.close()
