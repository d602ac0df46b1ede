"""`omnirec demo` stops everything it started when it is told to stop, the way `timeout -s INT`
tells it: SIGINT to the demo and again to its process group. Before the fix the second signal cut
the shutdown short and the flow, API, simulator and broker kept running."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from omnirec.stack import free_port, pid_alive


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.parametrize("how", ["timeout-style SIGINT", "SIGTERM"])
def test_demo_stops_every_child_on_a_signal(how, redis_url, key_prefix, tmp_path):
    env = {**os.environ, "OMNIREC_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1",
           "OMNIREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}  # nothing there: the demo starts its own tansu
    err_path = tmp_path / "demo.err"
    with open(err_path, "wb") as err:
        demo = subprocess.Popen(
            [sys.executable, "-m", "omnirec.cli", "demo", "--customers", "20", "--rate", "5",
             "--history-days", "1", "--key-prefix", key_prefix],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
            start_new_session=True)  # its own group, as under timeout(1)

    def started() -> list[int]:
        return [int(pid) for pid in re.findall(r"\bpid (\d+)", err_path.read_text(errors="replace"))]

    stopped = False
    try:
        _wait(lambda: len(started()) >= 4 or demo.poll() is not None, 180, "the demo's broker, flow, API and simulator")
        assert demo.poll() is None, err_path.read_text(errors="replace")
        pids = started()
        assert all(pid_alive(pid) for pid in pids)

        if how == "SIGTERM":
            demo.send_signal(signal.SIGTERM)
        else:  # what `timeout -s INT` does: the child, then the child's whole process group
            demo.send_signal(signal.SIGINT)
            os.killpg(demo.pid, signal.SIGINT)
        demo.wait(timeout=120)
        _wait(lambda: not any(pid_alive(pid) for pid in pids), 30, "every child of the demo to exit")
        assert "demo stopped" in err_path.read_text(errors="replace")
        stopped = True
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        for pid in [] if stopped else started():  # leave no child behind when the test fails
            if pid_alive(pid):
                os.killpg(pid, signal.SIGKILL)
