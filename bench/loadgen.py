"""Open-loop HTTP/1.1 load generator (wrk2-style fixed rate, no coordinated omission).

Requests are scheduled at fixed intervals (rate per second) and handed to a pool of
keep-alive connections; latency is measured from the *scheduled* send time, so time spent
waiting for a free connection or a lagging scheduler counts. Run as its own process:

    python -m bench.loadgen SPEC.json [OUT.json]   # one JSON object, to OUT or stdout

SPEC: {"host", "port", "rate", "duration", "connections", "timeout",
       "requests": [{"name": "profile", "raw": "<HTTP request, latin-1>"}, ...]}
Requests are sent round-robin, each recorded under its name.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from collections import Counter, defaultdict


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:].strip())
            break
    body = await reader.readexactly(length) if length else b""
    return status, body


async def run(spec: dict) -> dict:
    host, port = spec["host"], int(spec["port"])
    rate = float(spec["rate"])
    duration = float(spec["duration"])
    conns = int(spec.get("connections", 64))
    timeout = float(spec.get("timeout", 5.0))
    reqs = [(r["name"], r["raw"].encode("latin-1")) for r in spec["requests"]]
    total = max(1, int(rate * duration))

    queue: asyncio.Queue = asyncio.Queue()
    lat: dict[str, list[float]] = defaultdict(list)
    statuses: dict[str, Counter] = defaultdict(Counter)
    by_status: dict[str, list[float]] = defaultdict(list)  # "2xx" / "503" / … → latencies (ms)
    errors: Counter = Counter()
    lag_max = 0.0

    async def worker() -> None:
        reader = writer = None
        while True:
            item = await queue.get()
            if item is None:
                break
            due, name, raw = item
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(raw)
                status, _body = await asyncio.wait_for(_read_response(reader), timeout)
            except Exception as exc:  # noqa: BLE001 - counted, connection renewed
                errors[f"{name}:{type(exc).__name__}"] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            ms = (time.perf_counter() - due) * 1000.0
            lat[name].append(ms)
            statuses[name][status] += 1
            by_status["2xx" if 200 <= status < 300 else str(status)].append(ms)
        if writer is not None:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(conns)]
    await asyncio.sleep(0.05)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    clock = time.perf_counter  # uvloop's loop.time() only ticks in whole milliseconds
    start = clock() + 0.05
    interval = 1.0 / rate
    for i in range(total):
        due = start + i * interval
        delay = due - clock()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        else:
            lag_max = max(lag_max, -delay)
            if i % 64 == 0:
                await asyncio.sleep(0)  # let the workers run while catching up
        name, raw = reqs[i % len(reqs)]
        queue.put_nowait((due, name, raw))
    for _ in workers:
        queue.put_nowait(None)
    _done, pending = await asyncio.wait(workers, timeout=timeout + 5)
    for t in pending:
        t.cancel()
    elapsed = clock() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    completed = sum(len(v) for v in lat.values())
    return {
        "rate": rate, "duration": duration, "connections": conns, "scheduled": total,
        "completed": completed, "errors": dict(errors), "error_count": sum(errors.values()),
        "achieved_rps": completed / elapsed if elapsed > 0 else 0.0,
        "scheduler_lag_max_ms": lag_max * 1000.0,
        "loadgen_cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "elapsed_s": elapsed,
        "latency_ms": {name: v for name, v in lat.items()},
        "latency_ms_by_status": dict(by_status),
        "statuses": {name: {str(k): n for k, n in c.items()} for name, c in statuses.items()},
    }


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    t0 = time.time()
    result = asyncio.run(run(spec))
    result["wall_s"] = time.time() - t0
    text = json.dumps(result) + "\n"
    if len(sys.argv) > 2:  # a file: a pipe left non-blocking by the event loop cut large results short
        with open(sys.argv[2], "w") as out:
            out.write(text)
        return
    os.set_blocking(sys.stdout.fileno(), True)
    sys.stdout.write(text)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
