"""The heap settings for large frames: freed 1 MiB blocks are reused without page faults."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap

import pytest

from dranspose_fast.runtime.heap import keep_freed_memory
from dranspose_fast.runtime.settings import DistributedSettings

glibc = pytest.mark.skipif(
    not hasattr(ctypes.CDLL(None), "mallopt"), reason="needs glibc's mallopt()"
)

# Rounds of what a receiving process does with big frames: 32 blocks of 1 MiB allocated and
# written (libzmq filling messages), then all freed (the messages consumed). Prints the page
# faults of 20 rounds after a first one.
PROBE = textwrap.dedent("""
    import ctypes, resource, sys
    from dranspose_fast.runtime.heap import keep_freed_memory
    if sys.argv[1] == "keep":
        assert keep_freed_memory(1 << 30)
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

    def one_round():
        blocks = [libc.malloc(1 << 20) for _ in range(32)]
        for b in blocks:
            libc.memset(b, 1, 1 << 20)
        for b in blocks:
            libc.free(b)

    one_round()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        one_round()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True, timeout=60)
    return int(out.stdout)


@glibc
def test_freed_frames_are_reused_without_page_faults() -> None:
    pages_per_round = 32 * (1 << 20) // 4096
    # glibc's defaults give most of the freed blocks back to the kernel each round ...
    assert page_faults("default") > 10 * pages_per_round
    # ... kept, the next rounds write into pages that are already mapped.
    assert page_faults("keep") < pages_per_round // 4


def test_zero_keeps_the_defaults() -> None:
    assert keep_freed_memory(0) is False


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DistributedSettings().heap_keep_bytes == 1 << 30
    monkeypatch.setenv("DFAST_HEAP_KEEP_BYTES", "0")
    assert DistributedSettings().heap_keep_bytes == 0
    monkeypatch.setenv("DFAST_HEAP_KEEP_BYTES", "-1")
    with pytest.raises(ValueError, match="heap_keep_bytes"):
        DistributedSettings()
