// The llmpulse live status page: polls GET /api/status and redraws in place.
// Plain DOM and hand-drawn SVG sparklines: no library, no build step.
// Text from the store is always set with textContent (never parsed as HTML).
"use strict";

(function () {
  const params = new URLSearchParams(window.location.search);
  const REFRESH_MS = Math.max(1000, Number(params.get("refresh") || 5) * 1000);
  const SPARK_W = 168;
  const SPARK_H = 30;
  const SVG = "http://www.w3.org/2000/svg";
  let refreshes = 0;
  let lastOk = 0;

  function $(id) { return document.getElementById(id); }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  function ms(v) {
    if (v === null || v === undefined) return "–";
    if (v >= 10000) return (v / 1000).toFixed(1) + " s";
    if (v >= 1000) return (v / 1000).toFixed(2) + " s";
    return Math.round(v) + " ms";
  }

  function rate(v) {
    if (v === null || v === undefined) return "–";
    if (v >= 100) return v.toFixed(0);
    if (v >= 10) return v.toFixed(1);
    return v.toFixed(2);
  }

  function pct(v) {
    if (v === null || v === undefined) return "–";
    const p = v * 100;
    return (p >= 10 ? p.toFixed(0) : p.toFixed(1)) + " %";
  }

  function usd(v) {
    if (v === null || v === undefined) return "–";
    if (v >= 100) return "$" + v.toFixed(0);
    if (v >= 1) return "$" + v.toFixed(2);
    return "$" + v.toFixed(3);
  }

  function shortNumber(v) {
    if (v === null || v === undefined) return "–";
    if (Math.abs(v) >= 1000) return (v / 1000).toFixed(1) + "k";
    if (Math.abs(v) >= 10 || Number.isInteger(v)) return v.toFixed(0);
    return v.toFixed(3);
  }

  function ago(iso) {
    if (!iso) return "";
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 90) return Math.round(s) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }

  // One polyline per run of known points, so gaps stay gaps; a lone point
  // becomes a short dash.
  function lines(values, max, cls) {
    const g = document.createElementNS(SVG, "g");
    const n = values.length;
    let run = [];
    const flush = function () {
      if (run.length === 1) run.push([run[0][0] + 2, run[0][1]]);
      if (run.length > 1) {
        const p = document.createElementNS(SVG, "polyline");
        p.setAttribute("class", cls);
        p.setAttribute("points", run.map(function (xy) {
          return xy[0].toFixed(1) + "," + xy[1].toFixed(1);
        }).join(" "));
        g.appendChild(p);
      }
      run = [];
    };
    values.forEach(function (v, i) {
      if (v === null || v === undefined) { flush(); return; }
      const x = (i / Math.max(1, n - 1)) * (SPARK_W - 4) + 1;
      const y = SPARK_H - 2 - (v / max) * (SPARK_H - 4);
      run.push([x, y]);
    });
    flush();
    return g;
  }

  function sparkline(spark) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", SPARK_W);
    svg.setAttribute("height", SPARK_H);
    svg.setAttribute("viewBox", "0 0 " + SPARK_W + " " + SPARK_H);
    const known = spark.p99.concat(spark.p50).filter(function (v) { return v !== null; });
    const max = Math.max.apply(null, known.concat([1])) * 1.08;
    const base = document.createElementNS(SVG, "line");
    base.setAttribute("class", "base");
    base.setAttribute("x1", 0); base.setAttribute("x2", SPARK_W);
    base.setAttribute("y1", SPARK_H - 1); base.setAttribute("y2", SPARK_H - 1);
    svg.appendChild(base);
    svg.appendChild(lines(spark.p50, max, "p50"));
    svg.appendChild(lines(spark.p99, max, "p99"));
    const title = document.createElementNS(SVG, "title");
    title.textContent = "p50 and p99 per minute, last hour; max " + ms(max / 1.08);
    svg.appendChild(title);
    return svg;
  }

  function driftBadge(drift) {
    const label = {
      drifting: "drifting",
      recent: "drift " + ago(drift.since),
      stable: "stable",
      learning: "learning baseline",
    }[drift.state] || drift.state;
    const b = el("span", "badge " + drift.state, label);
    if (drift.signals && drift.signals.length) b.title = drift.signals.join(", ");
    return b;
  }

  function renderTiles(t) {
    $("t-rps").textContent = rate(t.rps);
    $("t-err").textContent = pct(t.error_rate);
    $("t-cost").textContent = usd(t.cost_per_hour);
    $("t-series").textContent = String(t.series);
    $("t-firing").textContent = String(t.firing);
    $("t-drift").textContent = String(t.drifting);
    $("tile-firing").classList.toggle("bad", t.firing > 0);
    $("tile-drift").classList.toggle("bad", t.drifting > 0);
    const errTile = $("t-err").parentElement;
    errTile.classList.toggle("bad", t.error_rate !== null && t.error_rate >= 0.05);
    errTile.classList.toggle("warn", t.error_rate !== null && t.error_rate >= 0.01 && t.error_rate < 0.05);
  }

  const SEVERITY_ORDER = { critical: 0, error: 1, warning: 2, info: 3 };
  const SHOWN_PER_RULE = 4;

  // One entry per rule and severity: dozens of series burning the same SLO
  // read as one line with its worst series first.
  function renderAlerts(alerts) {
    const groups = new Map();
    alerts.forEach(function (a) {
      const key = a.severity + "|" + a.rule;
      if (!groups.has(key)) groups.set(key, { rule: a.rule, severity: a.severity, items: [] });
      groups.get(key).items.push(a);
    });
    const ordered = Array.from(groups.values()).sort(function (x, y) {
      return ((SEVERITY_ORDER[x.severity] ?? 9) - (SEVERITY_ORDER[y.severity] ?? 9))
        || (y.items.length - x.items.length) || x.rule.localeCompare(y.rule);
    });
    const list = $("alerts");
    list.replaceChildren();
    ordered.forEach(function (g) {
      g.items.sort(function (a, b) {
        return ((b.value ?? 0) / (b.threshold || 1)) - ((a.value ?? 0) / (a.threshold || 1));
      });
      const li = el("li");
      li.dataset.rule = g.rule;
      const head = el("div", "head");
      head.appendChild(el("span", "sev " + g.severity, g.severity));
      head.appendChild(el("span", "rule", g.rule));
      if (g.items.length > 1) head.appendChild(el("span", "times", "×" + g.items.length));
      const newest = g.items.map(function (a) { return a.since; }).sort().pop();
      head.appendChild(el("span", "since", "since " + ago(newest)));
      li.appendChild(head);
      const where = el("ul", "where");
      g.items.slice(0, SHOWN_PER_RULE).forEach(function (a) {
        const row = el("li");
        row.title = a.summary;
        row.appendChild(el("span", "series", a.series));
        row.appendChild(el("span", "val", shortNumber(a.value) + " / " + shortNumber(a.threshold)));
        where.appendChild(row);
      });
      li.appendChild(where);
      if (g.items.length > SHOWN_PER_RULE) {
        li.appendChild(el("div", "more", "+ " + (g.items.length - SHOWN_PER_RULE) + " more series"));
      }
      list.appendChild(li);
    });
    $("alert-count").textContent = alerts.length ? "(" + alerts.length + ")" : "";
    $("no-alerts").hidden = alerts.length > 0;
  }

  function renderSeries(series) {
    const body = document.querySelector("#series tbody");
    const rows = series.slice().sort(function (a, b) {
      return (b.alerts - a.alerts) || (b.rps - a.rps) || (b.calls_last_hour - a.calls_last_hour);
    });
    body.replaceChildren();
    rows.forEach(function (s) {
      const tr = el("tr");
      tr.dataset.series = s.service + "|" + s.endpoint + "|" + s.model;
      if (s.alerts > 0) tr.classList.add("alerting");
      const name = el("td", "name");
      name.appendChild(el("span", "svc", s.service));
      name.appendChild(el("span", "rest", s.endpoint + " · " + s.model));
      tr.appendChild(name);
      tr.appendChild(el("td", "num rps", rate(s.rps)));
      const err = el("td", "num err", pct(s.error_rate));
      if (s.error_rate !== null && s.error_rate >= 0.05) err.classList.add("bad");
      else if (s.error_rate !== null && s.error_rate >= 0.01) err.classList.add("warn");
      tr.appendChild(err);
      tr.appendChild(el("td", "num p50", ms(s.p50_ms)));
      const p99 = el("td", "num p99", ms(s.p99_ms));
      if (s.p99_ms !== null && s.p99_ms > 800) p99.classList.add("bad");
      tr.appendChild(p99);
      const sp = el("td", "spark");
      sp.appendChild(sparkline(s.spark));
      tr.appendChild(sp);
      tr.appendChild(el("td", "num cost", usd(s.cost_per_hour)));
      const drift = el("td", "drift");
      drift.appendChild(driftBadge(s.drift));
      tr.appendChild(drift);
      const al = el("td", "alerts");
      al.appendChild(s.alerts > 0 ? el("span", "badge firing", s.alerts + " firing") : el("span", "badge ok", "–"));
      tr.appendChild(al);
      const cols = ["name", "rps", "err", "p50", "p99", "spark", "cost", "drift", "alerts"];
      Array.from(tr.cells).forEach(function (td, i) { td.dataset.col = cols[i]; });
      body.appendChild(tr);
    });
    $("no-series").hidden = series.length > 0;
  }

  function setState(text, cls) {
    const s = $("state");
    s.textContent = text;
    s.className = cls || "";
  }

  async function refresh() {
    try {
      // With worker.token set, the page is opened as /?token=<token> (a navigation
      // cannot send a header; /#token=<token> is moved there by the 401 page); the
      // data requests carry it as a bearer token, never in their URL.
      const token = new URLSearchParams(location.search).get("token") ||
        new URLSearchParams(location.hash.slice(1)).get("token");
      const headers = token ? { Authorization: "Bearer " + token } : {};
      const r = await fetch("/api/status", { cache: "no-store", headers });
      const doc = await r.json();
      if (!r.ok) throw new Error(doc.error || ("HTTP " + r.status));
      renderTiles(doc.totals);
      renderAlerts(doc.alerts);
      renderSeries(doc.series);
      refreshes += 1;
      lastOk = Date.now();
      document.body.dataset.refreshes = String(refreshes);
      document.body.dataset.generatedAt = doc.generated_at;
      $("live-dot").className = "dot live";
      setState("updated " + new Date(doc.generated_at).toLocaleTimeString());
    } catch (e) {
      $("live-dot").className = "dot down";
      const since = lastOk ? " (last update " + ago(new Date(lastOk).toISOString()) + ")" : "";
      setState("worker unreachable" + since, "offline");
    }
  }

  $("refresh").textContent = (REFRESH_MS / 1000) + " s";
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
