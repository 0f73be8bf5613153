"""Splitting a text of SQL statements on ``;``, like clickhouse-client's --queries-file.

A ``;`` inside a string literal, a quoted identifier or a comment does not end a
statement. Statements keep their comments (they run exactly as written); a
piece holding only comments and whitespace is not a statement.

>>> split_statements("-- p99 per hour\\nSELECT 1;\\nSELECT ';' AS semi -- a ; b\\n;\\n-- the end")
['-- p99 per hour\\nSELECT 1', "SELECT ';' AS semi -- a ; b"]
>>> split_statements("/* only a comment; really */  ")
[]
"""

from __future__ import annotations

__all__ = ["quoted_positions", "split_statements", "strip_comments"]


def _scan(text: str) -> list[tuple[str, int, int]]:
    """Regions of ``text`` as (kind, start, end): ``code``, ``quoted``, ``comment``, ``semi``."""
    out: list[tuple[str, int, int]] = []
    i, n, code_start = 0, len(text), 0

    def flush(upto: int) -> None:
        if upto > code_start:
            out.append(("code", code_start, upto))

    while i < n:
        c = text[i]
        if c in "'\"`":
            flush(i)
            j = i + 1
            while j < n:
                if text[j] == "\\":  # ClickHouse's C-style escapes
                    j += 2
                    continue
                if text[j] == c:
                    if j + 1 < n and text[j + 1] == c:  # doubled quote
                        j += 2
                        continue
                    break
                j += 1
            end = min(j + 1, n)
            out.append(("quoted", i, end))
            i = code_start = end
        elif text.startswith("--", i):
            flush(i)
            j = text.find("\n", i)
            end = n if j < 0 else j
            out.append(("comment", i, end))
            i = code_start = end
        elif text.startswith("/*", i):
            flush(i)
            j = text.find("*/", i + 2)
            end = n if j < 0 else j + 2
            out.append(("comment", i, end))
            i = code_start = end
        elif c == ";":
            flush(i)
            out.append(("semi", i, i + 1))
            i = code_start = i + 1
        else:
            i += 1
    flush(n)
    return out


def split_statements(text: str) -> list[str]:
    """The statements of ``text``, stripped, without their ``;``."""
    statements: list[str] = []
    start, has_code = 0, False
    for kind, s, e in _scan(text):
        if kind == "semi":
            if has_code:
                statements.append(text[start:s].strip())
            start, has_code = e, False
        elif kind == "quoted" or (kind == "code" and text[s:e].strip()):
            has_code = True
    if has_code:
        statements.append(text[start:].strip())
    return statements


def strip_comments(text: str) -> str:
    """``text`` without its comments (string literals untouched).

    >>> strip_comments("SELECT '--x' AS a -- note\\nFROM t /* b */")
    "SELECT '--x' AS a \\nFROM t "
    """
    return "".join(text[s:e] for kind, s, e in _scan(text) if kind != "comment")


def quoted_positions(text: str) -> frozenset[int]:
    """Indexes of ``text`` inside string literals and quoted identifiers.

    >>> sorted(quoted_positions("a 'b' c"))
    [2, 3, 4]
    """
    return frozenset(i for kind, s, e in _scan(text) if kind == "quoted" for i in range(s, e))
