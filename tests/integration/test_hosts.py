"""Two flow processes on two hosts write every key like one process (issue "Speed and scale": N
processes on separate hosts, documented and tested).

The hosts are network namespaces (``ip netns``), each with a veth into a bridge on this machine;
the broker (tansu) listens on the bridge's address, and Redis is reached through a TCP relay on
it (the machine's Redis listens on loopback only, which a namespace cannot see). The two
processes form one bytewax cluster across the namespaces (``--process-id``/``--addresses``), as
they would across machines, and their state must equal a single process's, key for key (churn
alerts aside: see tests/integration/test_equality.py, ``ORDER_DEPENDENT``).

Needs root (namespaces, a bridge); everything it creates is named ``omh<id>…`` and removed at
the end, and it stops only the processes it started.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from omnirec.settings import Settings

from .equality_input import build_input
from .test_equality import Lab, assert_same

CUSTOMERS = 80  # a smaller input than the equality tests': two more flows to run
CLUSTER_PORT = 2101


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Hosts:
    """A bridge with the broker side's address and two namespaces ("hosts") plugged into it."""

    tag: str
    subnet: str  # "10.231.N"
    namespaces: tuple[str, ...]

    @property
    def gateway(self) -> str:  # this machine, as the hosts see it
        return f"{self.subnet}.1"

    def address(self, host: int) -> str:
        return f"{self.subnet}.{host + 2}"

    @classmethod
    def create(cls, count: int = 2) -> Hosts:
        tag = uuid.uuid4().hex[:5]
        used = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
        subnet = next(s for s in (f"10.231.{random.randint(1, 254)}" for _ in range(100)) if f"{s}." not in used)
        hosts = cls(tag, subnet, tuple(f"omh{tag}n{i}" for i in range(count)))
        bridge = f"omh{tag}br"
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{hosts.gateway}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for i, ns in enumerate(hosts.namespaces):
            outside, inside = f"omh{tag}v{i}", f"omh{tag}p{i}"
            _ip("netns", "add", ns)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", ns)
            _ip("link", "set", outside, "master", bridge, "up")
            _ip("-n", ns, "addr", "add", f"{hosts.address(i)}/24", "dev", inside)
            _ip("-n", ns, "link", "set", inside, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        return hosts

    def remove(self) -> None:
        for ns in self.namespaces:  # its veth end goes with it, and the other end with that
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", f"omh{self.tag}br"], capture_output=True)


class Relay:
    """A TCP relay from ``listen`` to ``target`` (host, port), on its own event-loop thread."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.listen, self.target = listen, target
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Relay:
        self.thread.start()
        assert self.ready.wait(10), "the relay did not start"
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, *self.listen))
        self.ready.set()
        self.loop.run_forever()

    async def _shutdown(self) -> None:
        """Close the listener and every relayed connection before the loop stops."""
        self.server.close()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2 (ip)")
    made = Hosts.create()
    try:
        yield made
    finally:
        made.remove()


@pytest.fixture(scope="module")
def bridge_broker(hosts) -> Iterator[str]:
    from omnirec.stack import create_topics, start_tansu, stop_pid

    proc, bootstrap = start_tansu(host=hosts.gateway, log_name=f"tansu-hosts-{os.getpid()}.log")
    try:
        create_topics(Settings(kafka_bootstrap=bootstrap))
        yield bootstrap
    finally:
        stop_pid(proc.pid)


def test_two_processes_on_two_hosts_write_every_key_like_one_process(hosts, bridge_broker, redis_url,
                                                                        tmp_path_factory):
    from redis.connection import parse_url

    from omnirec.stack import free_port

    redis_at = parse_url(redis_url)
    relay_port = free_port(hosts.gateway)
    lab = Lab(bridge_broker, redis_url, tmp_path_factory.mktemp("hosts"))
    try:
        records = build_input(customers=CUSTOMERS)
        topics = lab.topics("input", records)
        reference_settings = lab.run_settings("one", topics)
        reference_flow = lab.start(reference_settings)  # on this machine, through the bridge
        reference = lab.settle(reference_settings, len(records), [reference_flow])
        reference_flow.stop()

        db = redis_at.get("db", 0)
        hosted = lab.run_settings("hosts", topics, redis_url=f"redis://{hosts.gateway}:{relay_port}/{db}")
        addresses = ";".join(f"{hosts.address(i)}:{CLUSTER_PORT}" for i in range(len(hosts.namespaces)))
        with Relay((hosts.gateway, relay_port), (redis_at.get("host", "127.0.0.1"), redis_at.get("port", 6379))):
            flows = [lab.start(hosted, workers=None, process_id=i, addresses=addresses,
                               wrap=["ip", "netns", "exec", ns]) for i, ns in enumerate(hosts.namespaces)]
            state = lab.settle(hosted, len(records), flows, reference=reference)
            logs = "\n".join(f.log()[-1500:] for f in flows)
            assert all(f.alive() for f in flows), logs
            assert_same(reference, state, "2 processes on 2 hosts")
    finally:
        lab.close()
