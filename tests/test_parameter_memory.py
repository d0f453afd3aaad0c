"""A large parameter's memory goes back to the kernel when the controller replaces it.

The components keep freed heap memory for frame throughput (``runtime/heap.py``: blocks below
32 MiB come from the heap, up to 1 GiB freed is kept), so replaced parameter values below
32 MiB would stay resident; ``runtime/memory.py`` trims after a large replacement. Each run is
its own process (its own RSS) with a real ``Worker`` and a real redis-server: the update is
read by a second thread (as the updates thread does, so the values come from that thread's
malloc arena), and the commands it posts are run by the main thread (as ``Worker.run``'s data
thread), ending in ``_on_parameters``.

One value of 32 MiB or more is ``mmap``-ed and goes back on ``free`` whether or not anything
trims, so the parameters here are ten values of 20 MiB.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import pytest
import redis

from dranspose_fast.protocol import WorkParameter
from dranspose_fast.runtime.memory import parameters_nbytes, return_freed_memory
from dranspose_fast.runtime.redis_messages import Keys

glibc = pytest.mark.skipif(
    not hasattr(ctypes.CDLL(None), "malloc_trim"), reason="needs glibc's malloc_trim()"
)

MIB = 1 << 20
COUNT, SIZE = 10, 20 * MIB
TOTAL = COUNT * SIZE

CHILD = textwrap.dedent("""
    import json, logging, os, sys, threading
    from dranspose_fast.runtime import memory
    from dranspose_fast.runtime.heap import keep_freed_memory
    from dranspose_fast.runtime.redis_messages import ControllerUpdate
    from dranspose_fast.runtime.settings import WorkerSettings
    from dranspose_fast.worker import Worker

    url, scan, big, small, mode = sys.argv[1:]
    logging.basicConfig(level=logging.INFO)
    if mode == "no-trim":
        memory.TRIM_FROM_BYTES = sys.maxsize  # the control: what stays without the trim
    worker = Worker(WorkerSettings(redis_url=url, worker_name="mem", build_meta_file=None))
    assert keep_freed_memory(1 << 30)  # the worker applied heap.py's settings already

    def resident():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def apply(versions):
        update = ControllerUpdate(mapping_uuid=scan, parameters_version=json.loads(versions))
        fields = {b"d": update.model_dump_json().encode()}
        reader = threading.Thread(target=worker._apply_update, args=(fields,))
        reader.start()
        reader.join()
        worker._run_commands()

    out = {"start": resident()}
    apply(big)  # a new scan: BeginScan, a host holding the large values
    out["held"] = resident()
    apply(small)  # the same scan, new versions: NewParameters
    out["after"] = resident()
    out["values"] = sorted(len(p.data) for p in worker._scan.host.parameters.values())
    worker.close()
    print(json.dumps(out))
""")


def versions(client: redis.Redis, size: int) -> str:
    """Store COUNT parameter values of ``size`` bytes (from this process, so the child's
    memory holds only what it read) and return their versions as JSON."""
    out: dict[str, str] = {}
    for i in range(COUNT):
        uid = str(uuid.uuid4())
        client.set(Keys.parameter(f"mask{i}", uid), bytes([65 + i]) * size)
        out[f"mask{i}"] = uid
    return json.dumps(out)


def run_child(redis_url: str, mode: str, arenas: int | None = None) -> dict[str, Any]:
    client = redis.Redis.from_url(redis_url)
    try:
        big, small = versions(client, SIZE), versions(client, 10)
    finally:
        client.close()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DFAST_HEAP_KEEP_BYTES", "MALLOC_ARENA_MAX")}
    if arenas is not None:
        env["MALLOC_ARENA_MAX"] = str(arenas)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, redis_url, str(uuid.uuid4()), big, small, mode],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert out.returncode == 0, out.stderr
    found: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    found["log"] = out.stderr
    return found


# With one malloc arena (MALLOC_ARENA_MAX=1) the values land in the main arena whichever
# thread reads them, so what stays without the trim does not depend on the layout of a
# thread's arena (there glibc itself sometimes gives back some of the later heaps on free).


@glibc
def test_replaced_parameters_return_their_memory(redis_url: str) -> None:
    found = run_child(redis_url, "trim", arenas=1)
    assert found["values"] == [10] * COUNT  # the small values replaced the large ones
    assert found["held"] - found["start"] >= 0.9 * TOTAL  # the large values were resident
    assert found["held"] - found["after"] >= 0.75 * TOTAL, found
    assert "returned freed memory after worker mem: parameters replaced (200 MiB" in found["log"]


@glibc
def test_without_the_trim_the_memory_stays(redis_url: str) -> None:
    # The control: the same run, with the trim out of reach, keeps most of it.
    found = run_child(redis_url, "no-trim", arenas=1)
    assert found["values"] == [10] * COUNT
    assert found["held"] - found["start"] >= 0.9 * TOTAL
    assert found["held"] - found["after"] < 0.25 * TOTAL, found
    assert "returned freed memory" not in found["log"]


@glibc
def test_with_thread_arenas_at_most_the_first_heap_stays(redis_url: str) -> None:
    # glibc's default arenas: the reading thread's arena keeps the free top of its first heap
    # (at most 64 MiB; malloc_trim trims only the main arena's top), the rest goes back.
    found = run_child(redis_url, "trim")
    assert found["values"] == [10] * COUNT
    assert found["after"] - found["start"] < 64 * MIB + 0.1 * TOTAL, found


def test_the_estimate_counts_what_a_replacement_drops() -> None:
    shared = b"s" * 1000
    raw = b"r" * 3000
    old = {
        "same": WorkParameter(name="same", data=shared, value=shared),
        "bin": WorkParameter(name="bin", data=raw, value=raw),  # one object, counted once
        "text": WorkParameter(name="text", data=b"t" * 10, value="t" * 2000),
    }
    new = {"same": old["same"].model_copy(), "bin": WorkParameter(name="bin", data=b"")}
    assert parameters_nbytes(old) == 1000 + 3000 + 10 + sys.getsizeof("t" * 2000)
    assert parameters_nbytes(old, keep=new) == 3000 + 10 + sys.getsizeof("t" * 2000)


def test_return_freed_memory_says_whether_it_could() -> None:
    assert return_freed_memory("a test") is hasattr(ctypes.CDLL(None), "malloc_trim")
