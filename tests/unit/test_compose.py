"""compose.yaml's structure (no Docker engine here to run it).

Services and pinned images, environment names llmpulse's settings accept,
mounted paths that exist, ports, and the Grafana provisioning it mounts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from llmpulse.access import check_web_exposure
from llmpulse.dashboards import CONTAINER_DASHBOARD_DIR
from llmpulse.errors import ConfigError
from llmpulse.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
LLMPULSE = {name for name, s in SERVICES.items() if s.get("build") == "."}


def env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in (SERVICES[service].get("environment") or {}).items()}


# The subset of compose's interpolation this file uses: ${NAME:-default} and ${NAME}.
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: str, shell: dict[str, str]) -> str:
    """What `docker compose` hands the container for ``value``, given the shell's
    variables (an unset or empty NAME takes the default after ``:-``)."""
    return INTERPOLATION.sub(lambda m: shell.get(m[1]) or (m[2] or ""), value)


def container_env(service: str, shell: dict[str, str] | None = None) -> dict[str, str]:
    return {k: interpolate(v, shell or {}) for k, v in env(service).items()}


def test_interpolation_follows_compose() -> None:
    assert interpolate("${T:-dev}", {}) == "dev"
    assert interpolate("${T:-dev}", {"T": ""}) == "dev"  # ':-' also covers empty
    assert interpolate("${T:-dev}", {"T": "s3cret"}) == "s3cret"
    assert interpolate("a-${T}-b", {"T": "x"}) == "a-x-b"


def test_services() -> None:
    assert set(SERVICES) == {
        "kafka", "clickhouse", "migrate", "worker-1", "worker-2", "grafana", "demo-traffic",
    }  # fmt: skip
    assert sorted(LLMPULSE) == ["demo-traffic", "migrate", "worker-1", "worker-2"]
    assert SERVICES["migrate"]["command"] == ["llmpulse", "migrate"]
    assert SERVICES["migrate"]["restart"] == "no"
    assert SERVICES["demo-traffic"]["profiles"] == ["demo"]
    assert all("profiles" not in s for n, s in SERVICES.items() if n != "demo-traffic")
    assert SERVICES["demo-traffic"]["command"][:3] == ["llmpulse", "demo", "--traffic-only"]


def test_images_are_pinned() -> None:
    for name, s in SERVICES.items():
        image = s["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: {image} is not pinned"
    grafana = SERVICES["grafana"]["image"]
    assert grafana.startswith("grafana/grafana:")
    major, minor = (int(x) for x in grafana.split(":")[1].split(".")[:2])
    assert (major, minor) >= (11, 6), "grafana-clickhouse-datasource 4.x needs Grafana >= 11.6"


def test_kafka_is_kraft() -> None:
    e = env("kafka")
    assert set(e["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in k for k in e)
    assert "PLAINTEXT://kafka:9092" in e["KAFKA_ADVERTISED_LISTENERS"]


@pytest.mark.parametrize("service", sorted(LLMPULSE))
def test_llmpulse_environment_is_accepted_by_the_settings(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith("LLMPULSE_"):
            monkeypatch.delenv(key)
    values = container_env(service)
    for key, value in values.items():
        assert key.startswith("LLMPULSE_"), key
        monkeypatch.setenv(key, value)
    settings = Settings()
    for key, value in values.items():
        section, _, field = key.removeprefix("LLMPULSE_").lower().partition("_")
        assert section in Settings.model_fields, f"{key}: no settings section {section!r}"
        node = getattr(settings, section)
        assert field in type(node).model_fields, f"{key}: no field {field!r} in {section}"
        got = getattr(node, field)
        # str() of a SecretStr is '**********': compare the secret itself
        got = got.get_secret_value() if isinstance(got, SecretStr) else got
        assert str(got) == value, key
    # the workers reach the services of this file
    assert settings.kafka.bootstrap == "kafka:9092"
    ch = env("clickhouse")
    assert settings.clickhouse_dsn == (
        f"http://{ch['CLICKHOUSE_USER']}:{ch['CLICKHOUSE_PASSWORD']}@clickhouse:8123/"
        f"{ch['CLICKHOUSE_DB']}"
    )


def test_two_workers_in_one_group_after_the_migration() -> None:
    workers = [SERVICES["worker-1"], SERVICES["worker-2"]]
    assert {w["environment"]["LLMPULSE_WORKER_APP_ID"] for w in workers} == {"llmpulse"}
    for w in workers:
        assert w["command"] == ["llmpulse", "worker"]
        assert w["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert w["environment"]["LLMPULSE_WORKER_WEB_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("shell", [{}, {"LLMPULSE_WORKER_TOKEN": "from-the-shell"}])
@pytest.mark.parametrize("service", ["worker-1", "worker-2"])
def test_workers_pass_the_web_exposure_check(
    service: str, shell: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers bind 0.0.0.0 (published ports), which `llmpulse worker` refuses
    without a token: the file must give them one, or they crash-loop."""
    for key in list(os.environ):
        if key.startswith("LLMPULSE_"):
            monkeypatch.delenv(key)
    for key, value in container_env(service, shell).items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.worker.web_host == "0.0.0.0"
    assert settings.worker.token is not None
    expected = shell.get("LLMPULSE_WORKER_TOKEN", "llmpulse-dev-token")
    assert settings.worker.token.get_secret_value() == expected
    check_web_exposure(settings.worker)  # raises ConfigError if the worker would refuse
    # and the check does bite on this environment once the token is gone
    monkeypatch.delenv("LLMPULSE_WORKER_TOKEN")
    with pytest.raises(ConfigError, match="LLMPULSE_WORKER_TOKEN"):
        check_web_exposure(Settings().worker)


def published(service: str) -> list[tuple[int, int]]:
    out = []
    for p in SERVICES[service].get("ports", []):
        host, _, container = str(p).rpartition(":")
        out.append((int(host), int(container)))
    return out


def test_ports() -> None:
    hosts = [h for name in SERVICES for h, _ in published(name)]
    assert len(hosts) == len(set(hosts)), "two services publish the same host port"
    web = int(env("worker-1")["LLMPULSE_WORKER_WEB_PORT"])
    assert published("worker-1") == [(6066, web)] and published("worker-2") == [(6067, web)]
    assert published("grafana") == [(3000, 3000)]
    assert published("clickhouse") == [(8123, 8123)]
    assert published("kafka") == [(9094, 9094)]
    assert "EXTERNAL://localhost:9094" in env("kafka")["KAFKA_ADVERTISED_LISTENERS"]


def test_grafana_plugin_and_provisioning_mounts() -> None:
    g = SERVICES["grafana"]
    assert "grafana-clickhouse-datasource" in env("grafana")["GF_INSTALL_PLUGINS"].split(",")
    mounts = {}
    for v in g["volumes"]:
        source, target, *_ = v.split(":")
        if source.startswith("./"):
            assert (REPO / source).is_dir(), f"{source} does not exist"
            mounts[target] = REPO / source
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == REPO / "dashboards" / "provisioning"
    [provider_file] = (provisioning / "dashboards").glob("*.yaml")
    [provider] = yaml.safe_load(provider_file.read_text())["providers"]
    path = provider["options"]["path"]
    assert path == CONTAINER_DASHBOARD_DIR and path in mounts
    assert sorted(p.name for p in mounts[path].glob("*.json")) == [
        "llmpulse-alerts.json", "llmpulse-cost.json", "llmpulse-drift.json",
        "llmpulse-overview.json",
    ]  # fmt: skip
    home = env("grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (mounts[path] / Path(home).name).exists() and home.startswith(path)

    [ds_file] = (provisioning / "datasources").glob("*.yaml")
    ds_text = ds_file.read_text()
    [ds] = yaml.safe_load(ds_text)["datasources"]
    assert ds["type"] == "grafana-clickhouse-datasource"
    # every variable the provisioning file reads is set on the Grafana container
    wanted = set(re.findall(r"\$\{?([A-Z_]+)\}?", ds_text))
    assert wanted and wanted <= set(env("grafana")), wanted - set(env("grafana"))
    ch = env("clickhouse")
    g_env = env("grafana")
    assert (g_env["CLICKHOUSE_USER"], g_env["CLICKHOUSE_PASSWORD"], g_env["CLICKHOUSE_DATABASE"]) == (
        ch["CLICKHOUSE_USER"], ch["CLICKHOUSE_PASSWORD"], ch["CLICKHOUSE_DB"],
    )  # fmt: skip


def test_dockerfile_ships_the_status_page() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "COPY llmpulse ./llmpulse" in dockerfile
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"web/static/*"' in pyproject
