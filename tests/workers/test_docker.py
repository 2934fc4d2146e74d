"""The Docker files, read as data (no container runtime runs here): the compose deployment's services,
replicas, health checks, volumes and start order; an API image without torch; a worker image that can build."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_services_and_replicas(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"api", "worker", "redis", "postgres", "migrate"} <= set(services)
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["migrate"]["command"] == ["studio", "db", "upgrade"]
    assert services["worker"]["command"][:2] == ["studio", "worker"]
    for name in ("api", "migrate", "worker"):
        env = services[name]["environment"]
        assert env["STUDIO_DRAWER__BACKEND"] == "celery" and env["STUDIO_DRAWER__BROKER_URL"].startswith("redis://redis")
        assert env["STUDIO_DATABASE_URL"].startswith("postgresql+psycopg://")


def test_compose_health_checks_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("api", "worker", "redis", "postgres"):
        assert services[name]["healthcheck"]["test"], name
    assert services["api"]["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["worker"]["depends_on"]["redis"] == {"condition": "service_healthy"}


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    return dict(volume.split(":")[:2] for volume in service.get("volumes", []))


def test_compose_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"images", "models", "pgdata", "redis-data"} <= set(compose["volumes"])
    assert _mounts(services["api"])["images"] == services["api"]["environment"]["STUDIO_DATA_DIR"]
    assert _mounts(services["worker"])["models"] == services["worker"]["environment"]["HF_HOME"]
    assert "--appendonly" in services["redis"]["command"]  # queued jobs and outcomes survive a Redis restart


def _runs(dockerfile: str) -> str:
    return " ".join(line for line in (DOCKER / dockerfile).read_text().splitlines() if line.startswith("RUN"))


def test_api_image_installs_no_torch() -> None:
    runs = _runs("Dockerfile.api")
    assert "torch" not in runs and "[all]" not in runs and "gpu" not in runs
    assert '".[server,postgres,scaleout]"' in runs
    copied = set(re.findall(r"^COPY (\w+) \1$", (DOCKER / "Dockerfile.api").read_text(), re.MULTILINE))
    assert {"studio", "entrypoints", "agents", "api", "workers"} <= copied
    assert not {"drawer", "vision"} & copied


def test_worker_image_asks_for_the_python_its_base_ships() -> None:
    text = (DOCKER / "Dockerfile.cuda").read_text()
    assert "ubuntu24.04" in text and "python3.11" not in text  # 24.04 ships 3.12, which the package accepts
    copied = set(re.findall(r"^COPY (\w+) \1$", text, re.MULTILINE))
    assert {"studio", "entrypoints", "agents", "api", "workers", "drawer", "vision"} <= copied
    assert all((DOCKER.parent / name).is_dir() for name in copied)
