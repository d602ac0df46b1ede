"""Shared fixtures: a real broker (tansu) and a real Redis, isolated per test.

- ``kafka_bootstrap`` (session): tansu on a free port, default topics created.
- ``redis_url`` (session): OMNIREC_REDIS_URL or redis://127.0.0.1:6379/0; valkey if none answers.
- ``key_prefix``: ``t-<uuid8>``; its keys are deleted at teardown.
- ``settings``: Settings with the above, unique topic names (created), tmp recovery dir.
- ``run_flow``: start the dataflow subprocess the way ``omnirec flow`` does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from omnirec.settings import Settings

TEST_SESSION_TIMEOUT_MS = 6000


def pytest_collection_modifyitems(config, items):
    """Tests under integration/ are marked ``integration``; under faults/ and relevance/, also
    ``faults`` or ``relevance`` (they need the real broker and Redis too, so ``-m "not
    integration"`` skips them)."""
    here = Path(__file__).parent.resolve()
    for item in items:
        try:
            first = Path(str(item.fspath)).resolve().relative_to(here).parts[0]
        except (ValueError, IndexError):
            continue
        if first in ("faults", "relevance"):
            item.add_marker(getattr(pytest.mark, first))
        if first in ("integration", "faults", "relevance"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_bootstrap():
    from omnirec.stack import start_tansu, stop_pid

    proc, bootstrap = start_tansu(log_name=f"tansu-test-{os.getpid()}.log")
    try:
        from omnirec.stack import create_topics

        create_topics(Settings(kafka_bootstrap=bootstrap))
        yield bootstrap
    finally:
        stop_pid(proc.pid)


@pytest.fixture(scope="session")
def redis_url():
    from omnirec.stack import redis_answers, start_valkey, stop_pid

    url = os.environ.get("OMNIREC_REDIS_URL", "redis://127.0.0.1:6379/0")
    if redis_answers(url):
        yield url
        return
    proc, url = start_valkey(log_name=f"valkey-test-{os.getpid()}.log")
    try:
        yield url
    finally:
        stop_pid(proc.pid)


@pytest.fixture
def key_prefix(redis_url):
    import redis

    prefix = f"t-{uuid.uuid4().hex[:8]}"
    yield prefix
    r = redis.Redis.from_url(redis_url)
    try:
        batch = []
        for key in r.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                r.delete(*batch)
                batch.clear()
        if batch:
            r.delete(*batch)
    finally:
        r.close()


@pytest.fixture
def settings(kafka_bootstrap, redis_url, key_prefix, tmp_path):
    """Settings isolated to this test: own key prefix, own topics, own recovery dir."""
    from omnirec.stack import create_topics, delete_topics

    tag = key_prefix  # t-xxxxxxxx, unique per test
    s = Settings(
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        key_prefix=key_prefix,
        topic_web=f"{tag}.web.events",
        topic_store=f"{tag}.store.events",
        topic_catalog=f"{tag}.catalog.products",
        topic_offers=f"{tag}.offers",
        topic_feedback=f"{tag}.recs.feedback",
        topic_churn_alerts=f"{tag}.alerts.churn",
        topic_deadletter=f"{tag}.events.deadletter",
        recovery_dir=str(tmp_path / "recovery"),
        snapshot_interval_s=1.0,
    )
    create_topics(s)
    yield s
    delete_topics(s, s.all_topics)


class FlowHandle:
    """A running dataflow subprocess (its own process group)."""

    def __init__(self, proc: subprocess.Popen, log_path: Path):
        self.proc = proc
        self.log_path = log_path
        self.started_ms = int(time.time() * 1000)  # wall time: compared with the flow metrics' updated_ms

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGINT (bytewax stops cleanly), then SIGKILL after ``timeout``; waits."""
        from omnirec.stack import stop_pid

        if self.proc.poll() is None:
            stop_pid(self.proc.pid, timeout=timeout, sig=signal.SIGINT)
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """Crash it: SIGKILL the process group at once (for recovery tests)."""
        from omnirec.stack import stop_pid

        stop_pid(self.proc.pid, timeout=0, sig=signal.SIGKILL)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def run_flow(tmp_path):
    """``run_flow(settings, workers=1, process_id=None, addresses=None, recovery_dir=None,
    recovery=True, **overrides) -> FlowHandle``; every flow is stopped at teardown.
    ``overrides`` update the settings (e.g. ``flow_batch_size=10``)."""
    from omnirec.stack import flow_argv, settings_env

    handles: list[FlowHandle] = []

    def start(settings: Settings, workers: int | None = 1, process_id: int | None = None,
              addresses: str | None = None, recovery_dir: str | Path | None = None,
              recovery: bool = True, **overrides) -> FlowHandle:
        if overrides:
            settings = settings.model_copy(update=overrides)
        argv = flow_argv(settings, workers, process_id, addresses, recovery_dir, recovery)
        env = settings_env(settings)
        env["PYTHONUNBUFFERED"] = "1"
        log_path = tmp_path / f"flow-{len(handles)}-{process_id if process_id is not None else 0}.log"
        with open(log_path, "ab") as logf:
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        h = FlowHandle(proc, log_path)
        handles.append(h)
        return h

    yield start
    for h in handles:
        h.stop()
