"""Runbook and dashboard links of alerts, rendered from the rule's URL templates."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

__all__ = ["render_url"]


class _QuotedLabels(dict[str, str]):
    """Labels for a template: one the series lacks renders empty, not a broken link."""

    def __missing__(self, key: str) -> str:
        return ""


def render_url(
    template: str | None,
    labels: Mapping[str, str],
    base: str | None,
    *,
    dashboard: bool = False,
) -> str | None:
    """A rule URL with ``{labels[x]}`` (URL-quoted) and ``{dashboard_base_url}`` filled.

    >>> render_url("{dashboard_base_url}/d/x?var-model={labels[model]}", {"model": "a b"},
    ...             "http://g")
    'http://g/d/x?var-model=a%20b'
    >>> render_url(None, {}, "http://g", dashboard=True), render_url(None, {}, "http://g")
    ('http://g', None)
    """
    if template is None:
        return base if dashboard else None
    if "{" not in template:
        return template
    if "{dashboard_base_url}" in template and base is None:
        return None
    quoted = _QuotedLabels({k: quote(v, safe="") for k, v in labels.items()})
    try:
        return template.format_map({"labels": quoted, "dashboard_base_url": base or ""})
    except (KeyError, IndexError, AttributeError, ValueError):
        return None
