"""A real worker started with LLMPULSE_WORKER_TOKEN: every endpoint but /health
needs the token (issue 12, Access), over the worker's own HTTP server.

The unit tests of ``access.Authorizer`` decide paths and headers; this one checks
that each route of the running worker is actually wrapped, including the status
page and its assets, and that ``/sql`` stays read-only for the full token.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from llmpulse.devkafka.topics import ensure_topics_sync
from llmpulse.errors import ReadOnlyQueryError, StoreError
from llmpulse.otlp import encode_request
from llmpulse.store.readonly import query_worker
from llmpulse.worker.process import WorkerProcess
from tests.helpers import worker_env, worker_process
from tests.integration.test_status_page import CHROMEDRIVER, CHROMIUM, browser_or_skip, refreshes
from tests.otlp_builders import agent_run

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TOKEN = "worker-token-" + uuid.uuid4().hex


def call(
    url: str, *, token: str | None = None, body: bytes | None = None, ctype: str = "text/plain"
) -> tuple[int, bytes, dict[str, str]]:
    headers = {"Content-Type": ctype} if body is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


@pytest.fixture(scope="module")
def worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    tmp = tmp_path_factory.mktemp("token-worker")
    name = f"token-{uuid.uuid4().hex[:8]}"
    ensure_topics_sync(kafka_bootstrap, {name + "-spans": 1})
    env = worker_env(
        kafka_bootstrap, name, tmp, partitions=1, otlp_topic=name + "-spans", worker_token=TOKEN
    )
    w = worker_process(env, tmp / "worker.log")
    w.start()
    w.wait_healthy()  # /health is open: the liveness probe needs no secret
    # WorkerProcess.wait_ready sends no token; poll /ready as a readiness probe would
    deadline = time.monotonic() + 180
    while call(w.url + "/ready", token=TOKEN)[0] != 200:
        assert w.alive and time.monotonic() < deadline, w.log_tail()
        time.sleep(0.3)
    yield w
    w.stop()
    assert TOKEN not in w.log_tail(10**7), "the token reached the worker's log"


GETS = ["/", "/status.css", "/status.js", "/api/status", "/ready", "/metrics"]
POSTS = {
    "/sql": (b"SELECT count() FROM traces", "text/plain"),
    "/v1/traces": (encode_request(agent_run(1), "otlp_json"), "application/json"),
}


def test_without_the_token_only_health_answers(worker: WorkerProcess) -> None:
    assert call(worker.url + "/health")[0] == 200
    for path in GETS:
        status, body, headers = call(worker.url + path)
        assert status == 401, (path, status, body[:200])
        assert headers["WWW-Authenticate"].startswith("Bearer"), path
        assert call(worker.url + path, token="wrong-" + TOKEN)[0] == 401, path
    for path, (body, ctype) in POSTS.items():
        status, answer, _ = call(worker.url + path, body=body, ctype=ctype)
        assert status == 401, (path, status, answer[:200])
    # nothing slipped through the receiver while it answered 401
    assert query_worker(worker.url, "SELECT count() FROM traces", token=TOKEN)[1] == [(0,)]
    # the 401 page explains itself to a person, without echoing anything secret
    page = call(worker.url + "/")[1].decode()
    assert "?token=" in page and TOKEN not in page


def test_with_the_token_every_endpoint_answers(worker: WorkerProcess) -> None:
    for path in ["/health", *GETS]:
        status, body, _ = call(worker.url + path, token=TOKEN)
        assert status == 200, (path, status, body[:200])
    assert b"llmpulse" in call(worker.url + "/", token=TOKEN)[1]
    assert b"llmpulse_" in call(worker.url + "/metrics", token=TOKEN)[1]
    status, body, _ = call(worker.url + "/sql", token=TOKEN, body=b"SELECT 1 AS one")
    assert status == 200 and b"one" in body
    body, ctype = POSTS["/v1/traces"]
    assert call(worker.url + "/v1/traces", token=TOKEN, body=body, ctype=ctype)[0] == 200


def test_the_page_takes_the_token_in_its_url(worker: WorkerProcess) -> None:
    """A browser navigation carries no header: /?token= opens the page, whose
    asset URLs carry the token on; ?token= opens nothing else."""
    status, html, headers = call(f"{worker.url}/?token={TOKEN}")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    page = html.decode()
    assert f'href="/status.css?token={TOKEN}"' in page
    assert f'src="/status.js?token={TOKEN}"' in page
    assert 'name="referrer" content="no-referrer"' in page
    for asset in ("/status.css", "/status.js"):
        assert call(f"{worker.url}{asset}?token={TOKEN}")[0] == 200, asset
    assert call(f"{worker.url}/?token=wrong")[0] == 401
    for path in ("/api/status", "/metrics", "/ready"):
        assert call(f"{worker.url}{path}?token={TOKEN}")[0] == 401, path


def test_sql_stays_read_only_with_the_full_token(worker: WorkerProcess) -> None:
    status, body, _ = call(worker.url + "/sql", token=TOKEN, body=b"DROP TABLE traces")
    assert status == 403, body[:300]
    with pytest.raises(ReadOnlyQueryError):
        query_worker(worker.url, "DROP TABLE traces", token=TOKEN)
    # the table is still there, and llmpulse sql's client names the missing token
    assert query_worker(
        worker.url, "SELECT count() FROM system.tables WHERE name = 'traces'", token=TOKEN
    )[1] == [(1,)]
    with pytest.raises(StoreError, match="LLMPULSE_WORKER_TOKEN"):
        query_worker(worker.url, "SELECT 1")


def test_the_page_works_in_a_real_browser_with_the_token(worker: WorkerProcess) -> None:
    """Chromium opens the page by ?token= and by an old #token= link: the page, its
    assets and its polling of /api/status (bearer header from status.js) all pass."""
    browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        driver.get(f"{worker.url}/?token={TOKEN}")
        WebDriverWait(driver, 60).until(lambda d: refreshes(d) >= 1)
        assert driver.execute_script("return document.styleSheets[0].cssRules.length") > 0
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors

        # The old link form: the 401 page moves the fragment's token into the query.
        driver.get(f"{worker.url}/#token={TOKEN}")
        WebDriverWait(driver, 60).until(lambda d: "?token=" in d.current_url)
        WebDriverWait(driver, 60).until(lambda d: refreshes(d) >= 1)
        assert "#" not in driver.current_url
        # only the first navigation (no token yet) may have been refused
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert all("401" in e["message"] for e in errors), errors
        assert len(errors) <= 1, errors

        # A wrong token shows the explanation, and the page never polls.
        driver.get(f"{worker.url}/?token=wrong")
        assert "needs its token" in driver.page_source
        assert refreshes(driver) == 0
    finally:
        driver.quit()
