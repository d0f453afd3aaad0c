"""The single-controller lock, renewed by a process of its own that no long call can starve.

``ControllerLock``: ``SET dfast:controller:lock <uuid> NX PX lock_ttl`` (a second controller
waits up to ``lock_timeout``, then refuses to start), renewed only while it is ours.

Why a process: a thread cannot renew the lock while another thread holds the GIL in one long
C call (a 191 MB map parsed by ``json.loads``, a large body validated by pydantic): the TTL
ran out and a second controller took over while the first still served. So the controller
starts this module as a child process (``LockKeeper``), which renews ``dfast:controller:lock`` every
``lock_ttl / 3`` with the same check-and-extend script as ``ControllerLock.renew``.

The child reads one JSON line from stdin (``KeeperOrder``: the Redis URL travels this way, never
in argv or the environment), then watches stdin: end of file means the controller is gone
(exited, or killed: the kernel closes the pipe), and the child stops renewing at once, so the
lock expires within one TTL. If the lock is held by another controller, it prints ``lost`` and
exits; the controller's reader thread then stops the controller.
"""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import redis
from pydantic import BaseModel, Field

from dranspose_fast.controller.ensemble import ControllerLockError, ControllerSettings, as_text
from dranspose_fast.runtime.redis_messages import Keys
from dranspose_fast.runtime.settings import redact_url

__all__ = ["ControllerLock", "KeeperOrder", "LockKeeper", "RENEW_SCRIPT", "keep_lock"]

logger = logging.getLogger(__name__)

#: Extend the lock if it is ours (1), take it again if it vanished, as after a Redis
#: restart (2), else 0: another controller holds it.
RENEW_SCRIPT = (
    "local v = redis.call('GET', KEYS[1]) "
    "if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end "
    "if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end "
    "return 0"
)
LOST = b"lost\n"


class KeeperOrder(BaseModel):
    """What the keeper process is told on its stdin (one JSON line)."""

    redis_url: str
    owner: str
    ttl_ms: int = Field(gt=0)


def keep_lock(order: KeeperOrder, stdin_fd: int, out: Callable[[bytes], None]) -> int:
    """Renew until ``stdin_fd`` reaches end of file (0) or the lock is lost (1)."""
    client = redis.Redis.from_url(order.redis_url, socket_timeout=order.ttl_ms / 3000,
                                  socket_connect_timeout=order.ttl_ms / 3000)
    interval = order.ttl_ms / 3000
    due = time.monotonic()
    while True:
        wait = max(0.0, due - time.monotonic())
        ready, _, _ = select.select([stdin_fd], [], [], wait)
        if ready:
            if not os.read(stdin_fd, 4096):
                return 0  # the controller closed the pipe or died: let the lock expire
            continue
        due = time.monotonic() + interval
        try:
            res = client.eval(RENEW_SCRIPT, 1, Keys.LOCK, order.owner, order.ttl_ms)
        except redis.RedisError as exc:
            print(f"lock keeper: could not renew the controller lock: {exc}", file=sys.stderr,
                  flush=True)
            continue
        if res == 0:
            out(LOST)
            return 1


class LockKeeper:
    """Runs and watches the keeper process of one controller.

    ``start()`` spawns it (the lock must already be ours); ``on_lost`` is called once, from the
    reader thread, if the keeper reports the lock held by another controller. A keeper that
    dies otherwise is started again (logged). ``stop()`` closes its stdin: it exits at once.
    """

    def __init__(self, order: KeeperOrder, on_lost: Callable[[], None]) -> None:
        self.order = order
        self.on_lost = on_lost
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        self._spawn()
        self._thread = threading.Thread(target=self._watch, name="controller-lock-keeper",
                                        daemon=True)
        self._thread.start()

    def _spawn(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "dranspose_fast.controller.lock"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        assert self._proc.stdin is not None
        self._proc.stdin.write(self.order.model_dump_json().encode() + b"\n")
        self._proc.stdin.flush()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            proc = self._proc
            assert proc is not None and proc.stdout is not None
            line = proc.stdout.readline()  # blocks without the GIL
            proc.wait()
            if self._stopping.is_set():
                return
            if line == LOST:
                self.on_lost()
                return
            self.restarts += 1
            logger.error("the controller lock keeper exited (%s); starting it again",
                         proc.returncode)
            # wait a little before the next one: a keeper that cannot start must not spin
            if self._stopping.wait(min(1.0, self.order.ttl_ms / 6000)):
                return
            self._spawn()

    def stop(self) -> None:
        self._stopping.set()
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)


class ControllerLock:
    """``SET dfast:controller:lock <uuid> NX PX``, renewed only while it is ours."""

    _RELEASE = ("if redis.call('GET', KEYS[1]) == ARGV[1] then "
                "return redis.call('DEL', KEYS[1]) end return 0")

    def __init__(self, client: redis.Redis, owner: str, settings: ControllerSettings) -> None:
        self.redis = client
        self.owner = owner
        self.settings = settings
        self.lost = 0
        self._keeper: LockKeeper | None = None

    def acquire(self, stop: threading.Event) -> None:
        """Take the lock, retrying every ``lock_retry`` up to ``lock_timeout`` seconds.

        Raises
        ------
        ControllerLockError
            naming the holder, when the lock stays taken.
        """
        ttl = int(self.settings.lock_ttl * 1000)
        deadline = time.monotonic() + self.settings.lock_timeout
        while not self.redis.set(Keys.LOCK, self.owner, nx=True, px=ttl):
            holder = as_text(self.redis.get(Keys.LOCK))
            if time.monotonic() >= deadline or stop.is_set():
                raise ControllerLockError(
                    f"another controller ({holder or 'gone'}) holds "
                    f"{Keys.LOCK} on {redact_url(str(self.settings.redis_dsn))}; gave up after "
                    f"{self.settings.lock_timeout:g} s")
            logger.warning("another controller holds %s; retrying in %g s", Keys.LOCK,
                           self.settings.lock_retry)
            time.sleep(min(self.settings.lock_retry, max(0.0, deadline - time.monotonic())))

    def renew(self) -> bool:
        """Extend the lock now; take it again if it vanished (Redis restarted). False: another
        controller holds it now (ours expired)."""
        res = self.redis.eval(RENEW_SCRIPT, 1, Keys.LOCK, self.owner,
                              int(self.settings.lock_ttl * 1000))
        if res == 2:
            logger.warning("the controller lock had vanished; taken again")
        elif res == 0:
            self._report_lost()
            return False
        return True

    def _report_lost(self) -> None:
        self.lost += 1
        holder = as_text(self.redis.get(Keys.LOCK))
        logger.critical("the controller lock is held by another controller (%s): this one "
                        "stops serving", holder)

    def keep(self, on_lost: Callable[[], None]) -> None:
        """Start the keeper process (module doc); ``on_lost`` is called once if it is lost."""
        def lost() -> None:
            self._report_lost()
            on_lost()

        order = KeeperOrder(redis_url=str(self.settings.redis_dsn), owner=self.owner,
                            ttl_ms=int(self.settings.lock_ttl * 1000))
        self._keeper = LockKeeper(order, lost)
        self._keeper.start()

    @property
    def keeper_pid(self) -> int | None:
        return self._keeper.pid if self._keeper is not None else None

    def stop_keeping(self) -> None:
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None

    def release(self) -> None:
        self.stop_keeping()
        self.redis.eval(self._RELEASE, 1, Keys.LOCK, self.owner)


def main() -> int:
    """Entry point of the keeper process (``python -m dranspose_fast.controller.lock``)."""
    line = sys.stdin.buffer.readline()
    order = KeeperOrder.model_validate_json(line)

    def out(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    return keep_lock(order, sys.stdin.fileno(), out)


if __name__ == "__main__":
    sys.exit(main())
