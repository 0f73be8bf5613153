"""The live status page in a real browser (Debian's chromium, driven by selenium).

A store is seeded with the showcase hour (`llmpulse replay`), then a real
`llmpulse worker` serves it while live traffic flows through Kafka. The page must
load without console errors, show the seeded series and a firing alert, and
update when events of a new service arrive. The test saves a screenshot (in its
tmp dir, and in $LLMPULSE_SCREENSHOT_DIR when set).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmpulse.devkafka.topics import ensure_topics_sync
from llmpulse.synth.scenarios import SHOWCASE_CONFIG, showcase_events
from llmpulse.synth.traffic import Incident, TrafficConfig, TrafficGenerator, write_jsonl
from llmpulse.web.status import status_document
from tests.helpers import llmpulse, worker_env, worker_process
from tests.seed import budgets_toml, opened

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def browser_or_skip() -> None:
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    if os.environ.get("CI"):
        pytest.fail(".ci/run installs chromium and chromium-driver; they are missing")
    pytest.skip("no /usr/bin/chromium and /usr/bin/chromedriver (apt-get install them)")


class LiveTraffic:
    """Showcase-like calls with current timestamps, emitted to Kafka until stopped."""

    def __init__(self, bootstrap: str, topic: str, config: TrafficConfig, rate: float) -> None:
        from llmpulse.client import kafka_emitter

        start = int(time.time() * 1000)
        self.gen = TrafficGenerator(
            config,
            seed=11,
            start_ms=start,
            rate_per_s=rate,
            incidents=[Incident("error_burst", 0, 3600, service="search", magnitude=0.4)],
        )
        self.emitter = kafka_emitter(bootstrap, topic)
        self.cursor = start
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopping.is_set():
            now = int(time.time() * 1000)
            for e in self.gen.events_between(self.cursor, now):
                self.emitter.emit(e)
            self.cursor = now
            self.stopping.wait(0.25)

    def __enter__(self) -> LiveTraffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(10)
        self.emitter.close(timeout=10)


@pytest.fixture(scope="module")
def served(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("status")
    config = root / "llmpulse.toml"
    config.write_text(budgets_toml())
    stream = root / "showcase.jsonl"
    write_jsonl(stream, showcase_events(int(time.time() * 1000)))
    topic = f"traces-{uuid.uuid4().hex[:8]}"
    ensure_topics_sync(kafka_bootstrap, {topic: 3, topic + ".dlq": 1})
    env = worker_env(
        kafka_bootstrap,
        topic,
        root,
        partitions=3,
        app_id=f"llmpulse-status-{topic}",
        worker_flush_interval_s=0.3,
        alerts_control_enabled="false",
    )
    seeded = llmpulse(["--config", str(config), "replay", str(stream), "--json"], env, timeout=600)
    assert seeded.returncode == 0, seeded.stderr
    worker = worker_process(env, root / "worker.log")
    worker.start()
    try:
        worker.wait_healthy()
        with LiveTraffic(kafka_bootstrap, topic, SHOWCASE_CONFIG, rate=15.0) as traffic:
            yield {"url": worker.url, "traffic": traffic, "topic": topic, "env": env}
    finally:
        worker.stop()


@pytest.fixture
def browser(served: dict[str, Any]) -> Iterator[Any]:
    browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1440,1300", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def refreshes(driver: Any) -> int:
    return int(driver.execute_script("return Number(document.body.dataset.refreshes || 0)"))


def rows(driver: Any) -> dict[str, dict[str, str]]:
    """The series table as {service|endpoint|model: {column: text}}, read in one go
    (the page redraws it every second)."""
    data: dict[str, dict[str, str]] = driver.execute_script(
        """const out = {};
        document.querySelectorAll('#series tbody tr').forEach(function (tr) {
          const cells = {};
          Array.from(tr.cells).forEach(function (td) { cells[td.dataset.col] = td.textContent; });
          out[tr.dataset.series] = cells;
        });
        return out;"""
    )
    return data


def firing_rules(driver: Any) -> list[str]:
    rules: list[str] = driver.execute_script(
        "return Array.from(document.querySelectorAll('#alerts li[data-rule]'))"
        ".map(function (li) { return li.dataset.rule; })"
    )
    return rules


def save_screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    driver.save_screenshot(str(path))
    target = os.environ.get("LLMPULSE_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / name)
    return path


@pytest.mark.kafka
def test_status_document_over_the_worker(served: dict[str, Any]) -> None:
    """GET /api/status answers the document the page renders, from the worker's store."""
    with urllib.request.urlopen(served["url"] + "/api/status", timeout=30) as r:
        doc = json.loads(r.read())
    services = {s["service"] for s in doc["series"]}
    assert {"chat-api", "search", "support-bot"} <= services
    assert doc["alerts"] and doc["totals"]["firing"] == len(doc["alerts"])
    assert any(s["spark"]["p99"].count(None) < 60 for s in doc["series"])
    assert any(s["drift"]["state"] in ("drifting", "recent") for s in doc["series"])
    with urllib.request.urlopen(served["url"] + "/", timeout=30) as r:
        assert b"/status.js" in r.read()


def test_status_document_at_an_injected_time(showcase: tuple[Any, int]) -> None:
    settings, end_ms = showcase
    with opened(settings) as client:
        check_document(client, end_ms)


def check_document(client: Any, end_ms: int) -> None:
    from llmpulse.store.readonly import run_readonly

    doc = status_document(lambda sql: run_readonly(client, sql), end_ms)
    assert doc["generated_at"].startswith(time.strftime("%Y-%m-%dT", time.gmtime(end_ms / 1000)))
    by_key = {(s["service"], s["endpoint"], s["model"]): s for s in doc["series"]}
    top = by_key[("chat-api", "/v1/chat", "gpt-4o-mini")]
    assert top["rps"] > 0 and top["cost_per_hour"] > 0 and len(top["spark"]["p99"]) == 60
    exact = run_readonly(
        client,
        "SELECT count() FROM traces WHERE service = 'chat-api' AND endpoint = '/v1/chat'"
        f" AND model = 'gpt-4o-mini' AND timestamp >= fromUnixTimestamp64Milli({end_ms})"
        f" - INTERVAL 60 SECOND AND timestamp <= fromUnixTimestamp64Milli({end_ms})",
    )[1][0][0]
    assert top["rps"] == exact / 60
    assert any(a["rule"] in ("error-rate-high", "slo-error-burn") for a in doc["alerts"])


@pytest.mark.kafka
@pytest.mark.slow
def test_page_in_a_real_browser(served: dict[str, Any], browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from llmpulse.client import kafka_emitter

    browser.get(served["url"] + "/?refresh=1")
    WebDriverWait(browser, 90).until(lambda d: refreshes(d) >= 1)
    seen = rows(browser)
    services = {key.split("|")[0] for key in seen}
    assert {"chat-api", "search", "support-bot"} <= services, seen
    firing = firing_rules(browser)
    assert firing, "no firing alert shown"
    assert any(r in ("error-rate-high", "slo-error-burn") for r in firing), firing
    assert browser.find_elements(By.CSS_SELECTOR, "#series svg.spark polyline.p99")

    # new events of a service nobody has seen: the page shows it without a reload
    gen = TrafficGenerator(
        TrafficConfig(services=["billing-bot"], endpoints=["/v1/invoice"], models=["gpt-4o"]),
        seed=3,
        start_ms=int(time.time() * 1000) - 20_000,
        rate_per_s=10,
    )
    emitter = kafka_emitter(served["env"]["LLMPULSE_KAFKA_BOOTSTRAP"], served["topic"])
    for e in gen.events_between(gen.start_ms, gen.start_ms + 20_000):
        emitter.emit(e)
    emitter.close(timeout=30)
    WebDriverWait(browser, 120, poll_frequency=0.5).until(
        lambda d: any(k.startswith("billing-bot|") for k in rows(d))
    )
    new = next(v for k, v in rows(browser).items() if k.startswith("billing-bot|"))
    assert float(new["rps"]) > 0

    shot = save_screenshot(browser, tmp_path, "status-page.png")
    assert shot.stat().st_size > 20_000
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
