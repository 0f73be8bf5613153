"""Reading recorded traffic: JSON Lines files, plain or gzip-compressed."""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from llmpulse.processors.traces import RawMessage


def _open(path: Path) -> tuple[BinaryIO, BinaryIO]:
    """Returns (reader, raw file); the raw file's position measures progress."""
    raw = path.open("rb")
    head = raw.read(2)
    raw.seek(0)
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw), raw  # type: ignore[return-value]
    return raw, raw


def read_jsonl(
    path: Path, *, on_progress: Callable[[int], None] | None = None
) -> Iterator[RawMessage]:
    """One ``RawMessage`` per non-blank line, sourced ``replay:<abs path>:<line>``.

    ``on_progress`` receives the bytes of the file consumed so far (compressed
    bytes for .gz), so a progress bar can use the file size as its total.
    """
    reader, raw = _open(path)
    prefix = f"replay:{path.resolve()}:"
    try:
        for lineno, line in enumerate(reader, start=1):
            stripped = line.strip()
            if stripped:
                yield RawMessage(stripped, prefix + str(lineno))
            if on_progress is not None and lineno % 1000 == 0:
                on_progress(raw.tell())
        if on_progress is not None:
            on_progress(raw.tell())
    finally:
        reader.close()
        raw.close()
