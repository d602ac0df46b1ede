"""docker-compose.yml and .env.example stay in step with the settings the code needs."""

from __future__ import annotations

from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

from omnirec.settings import Settings  # noqa: E402 - after the importorskip

ROOT = Path(__file__).resolve().parents[2]

NEEDS = {
    "flow": {"OMNIREC_KAFKA_BOOTSTRAP", "OMNIREC_REDIS_URL", "OMNIREC_KEY_PREFIX"},
    "api": {"OMNIREC_KAFKA_BOOTSTRAP", "OMNIREC_REDIS_URL", "OMNIREC_KEY_PREFIX", "OMNIREC_API_KEYS"},
}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: str(v) for k, v in env.items()}


def test_services_with_healthchecks(compose):
    services = compose["services"]
    for name in ("kafka", "redis", "flow", "api"):
        assert name in services, name
        hc = services[name].get("healthcheck")
        assert hc and hc.get("test"), f"{name} has no healthcheck"
    assert "apache/kafka" in services["kafka"]["image"]
    assert "KRAFT" in str(services["kafka"]["environment"]).upper() or \
        "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"]
    assert services["redis"]["image"].startswith("redis:7")


def test_services_get_the_settings_they_need(compose):
    for name, needed in NEEDS.items():
        env = _env(compose["services"][name])
        missing = needed - env.keys()
        assert not missing, f"{name} lacks {sorted(missing)}"
        # and the values parse as Settings
        values = {k.removeprefix("OMNIREC_").lower(): v for k, v in env.items()
                  if k.startswith("OMNIREC_")}
        s = Settings.model_validate(
            {k: (__import__("json").loads(v) if k in ("api_keys", "signing_keys") else v) for k, v in values.items()}
        )
        assert s.kafka_bootstrap == "kafka:9092"
        assert s.redis_url.startswith("redis://redis:")
    assert Settings.model_validate(
        {"api_keys": __import__("json").loads(_env(compose["services"]["api"])["OMNIREC_API_KEYS"])}
    ).api_keys


def test_flow_and_api_built_from_dockerfile(compose):
    for name in ("flow", "api"):
        assert "build" in compose["services"][name], name
    assert (ROOT / "Dockerfile").exists()


def test_env_example_lists_every_setting():
    text = (ROOT / ".env.example").read_text()
    names = {line.split("=", 1)[0] for line in text.splitlines()
             if line and not line.startswith("#") and "=" in line}
    expected = {f"OMNIREC_{f.upper()}" for f in Settings.model_fields}
    assert expected <= names, f"missing in .env.example: {sorted(expected - names)}"
