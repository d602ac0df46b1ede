"""Integration tests need the real broker and Redis; fixtures live in tests/conftest.py.

Every test under this directory is marked ``integration`` (see pytest_collection_modifyitems
in tests/conftest.py)."""

import pytest

from omnirec.settings import Settings


@pytest.fixture
def consumer_config(settings: Settings):
    """A confluent_kafka consumer config for reading test topics from the beginning."""
    import uuid

    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": f"{settings.key_prefix}-{uuid.uuid4().hex[:6]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
    }
