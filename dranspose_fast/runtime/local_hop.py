"""The local hop: workers on the ingester's host connect over ``ipc://`` instead of TCP.

The ingester binds a second ROUTER on a Unix socket in a directory of its own (mode 0700, made
by ``tempfile.mkdtemp``), so only its own user (and root) can connect: the kernel checks who
connects, and that hop needs no CURVE, whose cipher costs 1.3 ms of CPU per MiB carried
(bench/README.md, "CURVE end to end"). A worker uses the hop only when it is proven to share
the ingester's host, network namespace and file system: the same boot id
(``/proc/sys/kernel/random/boot_id``) and network namespace, and the socket file reachable
and writable for it. Pods on one node share the boot id but not
the directory, so they keep TCP. ``DFAST_LOCAL_HOP=off`` turns it off on either side.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["LocalHop", "boot_id", "usable"]

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_NET_NS = Path("/proc/self/ns/net")
#: A Unix socket path longer than this does not fit ``sockaddr_un`` (Linux: 108 with the NUL).
_MAX_PATH = 107


def boot_id() -> str | None:
    """This host and network namespace: the kernel's boot id and the namespace's inode
    (Linux), ``None`` where there is none. Processes in other network namespaces of one
    kernel are other hosts to the ensemble (tests/test_multihost.py runs them so)."""
    try:
        return f"{_BOOT_ID.read_text().strip()}:{os.stat(_NET_NS).st_ino}"
    except OSError:
        return None


def usable(local_url: str | None, host_id: str | None) -> bool:
    """Whether a worker here can use an ingester's local hop: same host, socket reachable."""
    if not local_url or not host_id or host_id != boot_id():
        return False
    path = local_url.removeprefix("ipc://")
    return os.access(path, os.R_OK | os.W_OK)


class LocalHop:
    """The private directory and ``ipc://`` address of an ingester's local ROUTER."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="dfast-"))  # mode 0700
        path = self.folder / "workers"
        if len(os.fsencode(path)) > _MAX_PATH:
            self.close()
            raise OSError(f"{path} is too long for a Unix socket: set TMPDIR shorter")
        self.url = f"ipc://{path}"

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
