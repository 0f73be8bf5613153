"""Tokens, exposure check, secrets kept out of output, Kafka TLS/SASL arguments
(against real processes: tests/integration/test_access.py)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import SecretStr

from llmpulse.access import Authorizer, authorize, check_web_exposure, is_loopback
from llmpulse.errors import ConfigError, ReadOnlyQueryError, StoreError
from llmpulse.ingest.kafka_security import aiokafka_security, faust_credentials, ssl_context
from llmpulse.settings import KafkaSettings, Settings, WorkerSettings
from llmpulse.store.readonly import query_worker
from tests.helpers import QuietHandler

FULL, ACME = "full-access-token-1", "acme-token-2"
WORKER = WorkerSettings(token=FULL, tenant_tokens={"acme": ACME, "globex": "globex-token-3"})


@pytest.mark.parametrize(
    ("path", "headers", "status", "tenant"),
    [("/health", {}, 200, None),
     ("/health", {"Authorization": "Bearer wrong"}, 200, None),
     ("/sql", {}, 401, None),
     ("/metrics", {}, 401, None),
     ("/", {}, 401, None),
     ("/v1/traces", {}, 401, None),
     ("/sql", {"Authorization": "Bearer wrong"}, 401, None),
     ("/sql", {"Authorization": f"Basic {FULL}"}, 401, None),
     ("/sql", {"Authorization": "Bearer "}, 401, None),
     ("/sql", {"Authorization": FULL}, 401, None),
     ("/sql", {"Authorization": f"Bearer {FULL}x"}, 401, None),
     ("/sql", {"Authorization": f"Bearer {FULL}"}, 200, None),
     ("/sql", {"authorization": f"bearer {FULL}"}, 200, None),
     ("/metrics", {"Authorization": f"Bearer {FULL}"}, 200, None),
     ("/sql/", {"Authorization": f"Bearer {ACME}"}, 200, "acme"),
     ("/sql?x=1", {"Authorization": f"Bearer {ACME}"}, 200, "acme"),
     ("/metrics", {"Authorization": f"Bearer {ACME}"}, 403, "acme"),
     ("/", {"Authorization": f"Bearer {ACME}"}, 403, "acme"),
     # probes: only liveness is open
     ("/ready", {}, 401, None),
     ("/ready", {"Authorization": f"Bearer {FULL}"}, 200, None),
     ("/api/status", {}, 401, None),
     ("/status.css", {}, 401, None),
     ("/status.js", {}, 401, None),
     # a browser navigation: the page and its assets take ?token=, nothing else does
     (f"/?token={FULL}", {}, 200, None),
     (f"/status.css?token={FULL}", {}, 200, None),
     (f"/status.js?v=2&token={FULL}", {}, 200, None),
     ("/?token=wrong", {}, 401, None),
     ("/?token=", {}, 401, None),
     (f"/?token={ACME}", {}, 403, "acme"),
     (f"/?token={FULL}", {"Authorization": "Bearer wrong"}, 401, None),  # header wins
     (f"/sql?token={FULL}", {}, 401, None),
     (f"/metrics?token={FULL}", {}, 401, None),
     (f"/api/status?token={FULL}", {}, 401, None),
     (f"/ready?token={FULL}", {}, 401, None)],
)  # fmt: skip
def test_authorize(path: str, headers: dict[str, str], status: int, tenant: str | None) -> None:
    got = authorize(path, headers, WORKER)
    assert (got.status, got.tenant) == (status, tenant)
    assert got.allowed is (status == 200)
    if status == 401:
        assert got.headers["WWW-Authenticate"].startswith("Bearer")
        assert FULL not in got.problem and ACME not in got.problem


def test_without_tokens_everything_is_open_and_only_on_loopback() -> None:
    assert authorize("/sql", {}, WorkerSettings()).status == 200
    check_web_exposure(WorkerSettings())  # 127.0.0.1 by default
    check_web_exposure(WorkerSettings(web_host="::1"))
    check_web_exposure(WorkerSettings(web_host="0.0.0.0", token="t"))
    for host in ("0.0.0.0", "::", "", "10.1.2.3", "worker.internal"):
        with pytest.raises(ConfigError, match="LLMPULSE_WORKER_TOKEN") as err:
            check_web_exposure(WorkerSettings(web_host=host))
        assert err.value.setting == "worker.web_host"
    # tenant tokens alone close every endpoint but /health and /sql-for-tenants
    only_tenants = WorkerSettings(tenant_tokens={"acme": ACME})
    assert authorize("/metrics", {}, only_tenants).status == 401
    assert is_loopback("127.0.0.5") and not is_loopback("127.0.0.1.example.com")


def test_tokens_must_differ() -> None:
    with pytest.raises(ConfigError, match=r"equals worker\.token"):
        Authorizer.from_settings(WorkerSettings(token="same", tenant_tokens={"a": "same"}))
    with pytest.raises(ConfigError, match="share one token"):
        Authorizer.from_settings(WorkerSettings(tenant_tokens={"a": "x", "b": "x"}))


def test_tokens_come_from_the_environment_and_never_show(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMPULSE_WORKER_TOKEN", FULL)
    monkeypatch.setenv("LLMPULSE_WORKER_TENANT_TOKENS", json.dumps({"acme": ACME}))
    monkeypatch.setenv("LLMPULSE_PRIVACY_HASH_KEY", "hash-key-secret")
    monkeypatch.setenv("LLMPULSE_KAFKA_SASL_PASSWORD", "kafka-pass-secret")
    monkeypatch.setenv("LLMPULSE_CLICKHOUSE_DSN", "http://bob:dsn-pass-secret@db.example:8123/llm")
    s = Settings()
    assert s.worker.token is not None and s.worker.token.get_secret_value() == FULL
    assert s.worker.tenant_tokens["acme"].get_secret_value() == ACME
    shown = json.dumps(s.masked()) + repr(s) + str(s)
    for secret in (FULL, ACME, "hash-key-secret", "kafka-pass-secret", "dsn-pass-secret"):
        assert secret not in shown
    assert "bob:***@db.example:8123" in shown


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    env = {**os.environ, "LLMPULSE_WORKER_TOKEN": FULL,
           "LLMPULSE_CLICKHOUSE_DSN": "http://bob:dsn-pass-secret@127.0.0.1:9/llm",
           "LLMPULSE_KAFKA_SASL_PASSWORD": "kafka-pass-secret", "LLMPULSE_DATA_DIR": str(tmp_path)}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "llmpulse.cli.main", "config", "show"],
        env=env, capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    for secret in (FULL, "dsn-pass-secret", "kafka-pass-secret"):
        assert secret not in out.stdout + out.stderr
    assert "**********" in out.stdout


def test_store_errors_never_carry_dsn_credentials() -> None:
    dsn = "http://bob:dsn-pass-secret@127.0.0.1:9/llm"
    err = StoreError(dsn, f"connection to {dsn} refused")
    assert "dsn-pass-secret" not in str(err) and "dsn-pass-secret" not in err.dsn
    assert "bob:***@127.0.0.1:9" in str(err)


def test_an_unreachable_server_dsn_reports_without_the_password(tmp_path: Path) -> None:
    env = {**os.environ, "LLMPULSE_DATA_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "llmpulse.cli.main", "sql", "SELECT 1",
         "--clickhouse", "http://bob:dsn-pass-secret@127.0.0.1:9/llm"],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode != 0
    assert "dsn-pass-secret" not in out.stdout + out.stderr
    assert "127.0.0.1:9" in out.stderr


# ---------------------------------------------------------------- llmpulse sql


class _Recorder(QuietHandler):
    seen: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(dict(self.headers))
        access = authorize(self.path, dict(self.headers), WORKER)
        if not access.allowed:
            body, status = json.dumps({"error": access.problem}).encode(), access.status
        else:
            body, status = json.dumps({"columns": ["x"], "rows": [[1]]}).encode(), 200
        self.reply(status, body)


@contextmanager
def recording_worker() -> Iterator[str]:
    """A stand-in worker's URL: it answers /sql and records each request's headers."""
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def worker_url() -> Iterator[str]:
    with recording_worker() as url:
        yield url


def test_query_worker_sends_the_bearer_token(worker_url: str) -> None:
    assert query_worker(worker_url, "SELECT 1", token=FULL) == (["x"], [(1,)])
    assert _Recorder.seen[-1]["Authorization"] == f"Bearer {FULL}"
    with pytest.raises(StoreError, match="LLMPULSE_WORKER_TOKEN") as err:
        query_worker(worker_url, "SELECT 1")
    assert "missing Authorization" in str(err.value)
    with pytest.raises(ReadOnlyQueryError):
        query_worker(worker_url.replace("/sql", "") + "/x/..", "SELECT 1", token=ACME)


def test_kafka_plaintext_and_sasl_arguments() -> None:
    assert aiokafka_security(KafkaSettings()) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(KafkaSettings()) is None
    with pytest.raises(ConfigError, match="sasl_mechanism"):
        aiokafka_security(KafkaSettings(security_protocol="SASL_PLAINTEXT"))
    with pytest.raises(ConfigError, match="username"):
        aiokafka_security(KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN"))
    with pytest.raises(ConfigError, match="security_protocol is PLAINTEXT"):
        aiokafka_security(KafkaSettings(sasl_mechanism="PLAIN"))
    k = KafkaSettings(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256",
        sasl_username="svc", sasl_password="pw",
    )  # fmt: skip
    kw = aiokafka_security(k)
    assert kw["sasl_mechanism"] == "SCRAM-SHA-256" and kw["sasl_plain_password"] == "pw"
    assert isinstance(kw["ssl_context"], ssl.SSLContext) and kw["ssl_context"].check_hostname
    creds = faust_credentials(k)
    assert creds.username == "svc" and creds.mechanism.value == "SCRAM-SHA-256"
    assert "pw" not in repr(k) and "pw" not in json.dumps(k.model_dump(mode="json"))


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=llmpulse-test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_kafka_mutual_tls_context_loads_real_files(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    k = KafkaSettings(
        security_protocol="SSL", ssl_cafile=cert, ssl_certfile=cert, ssl_keyfile=key,
        ssl_check_hostname=False,
    )  # fmt: skip
    ctx = ssl_context(k)
    assert not ctx.check_hostname
    assert any(c.get("subject") for c in ctx.get_ca_certs())
    assert faust_credentials(k).context is ctx or faust_credentials(k).context is not None
    with pytest.raises(ConfigError, match="not a readable file"):
        ssl_context(k.model_copy(update={"ssl_cafile": tmp_path / "missing.pem"}))
    with pytest.raises(ConfigError, match="needs its key"):
        ssl_context(k.model_copy(update={"ssl_keyfile": None}))
    with pytest.raises(ConfigError, match="cannot load") as err:
        ssl_context(
            k.model_copy(update={"ssl_keyfile": cert, "ssl_password": SecretStr("key-pass")})
        )
    assert "key-pass" not in str(err.value)
