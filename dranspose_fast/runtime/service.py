"""What every distributed component shares: Redis, liveness, updates, parameters, logs.

Every service (``Lifecycle``: the controller engine, ``Service``: ingester, worker, reducer)
has the same verbs: ``start()`` starts its threads and returns at once; ``run()`` starts it,
blocks until it is stopped (SIGTERM/SIGINT when called on the main thread, or
``stop_event``) and then closes it; ``close()`` stops every thread and releases what the
service holds, and does nothing the second time.

A component (ingester, worker, reducer) is a ``Service``: it publishes its state as a config
key with a TTL (liveness), follows the controller's update stream from its **latest** entry
(so a late joiner learns the current scan at once), fetches parameter values when their
version changes, and survives a Redis restart by reconnecting with backoff.  Threads, not
asyncio: the data loops are tight ZeroMQ loops and Redis calls are few (per batch).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import redis

from dranspose_fast import __version__
from dranspose_fast.helpers.utils import parameters_hash
from dranspose_fast.parameters import Parameter, ParameterBase
from dranspose_fast.protocol import BuildGitMeta, HashDigest, ParameterName, WorkParameter
from dranspose_fast.runtime.heap import keep_freed_memory
from dranspose_fast.runtime.redis_messages import ControllerUpdate, Keys
from dranspose_fast.runtime.settings import DistributedSettings
from dranspose_fast.runtime.usercode import apply_descriptions

logger = logging.getLogger(__name__)

#: Backoff between reconnection attempts when Redis is away.
RECONNECT_DELAY = 0.5
#: A stream entry as redis-py returns it: ``(entry id, fields)``.
Entry = tuple[bytes, dict[bytes, bytes]]


def stream_id(entry_id: bytes | str) -> tuple[int, int]:
    """A Redis stream id (``b"1700000000000-3"``) as a comparable pair."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def connect(settings: DistributedSettings) -> redis.Redis:
    """A binary-safe Redis client (values are bytes)."""
    return redis.Redis.from_url(
        str(settings.redis_dsn), socket_keepalive=True, health_check_interval=5
    )


def load_build_meta(path: str | None) -> BuildGitMeta | None:
    if not path:
        return None
    try:
        with open(path) as fh:
            return BuildGitMeta.model_validate_json(fh.read())
    except FileNotFoundError:
        return None
    except Exception as exc:
        logger.warning("cannot read build metadata %s: %s", path, exc)
        return None


class RedisLogHandler(logging.Handler):
    """Sends log records to the ``dfast:logs`` stream (maxlen 1000) for ``/api/v1/logs``."""

    def __init__(self, client: redis.Redis, name: str, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.client = client
        self.component = name

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.client.xadd(
                Keys.LOGS,
                {
                    "msg": self.format(record),
                    "levelname": record.levelname,
                    "name": record.name,
                    "component": self.component,
                    "created": str(record.created),
                    "lineno": str(record.lineno),
                },
                maxlen=1000,
                approximate=True,
            )
        except redis.RedisError:
            pass  # logging must never take a component down


class Lifecycle:
    """The verbs of every service (module docstring): ``start``, ``run``, ``close``.

    Subclasses set ``stop_event`` and implement ``start`` and ``close``; a ``close`` begins
    with ``if not self.begin_close(): return`` so that a second call does nothing.
    """

    stop_event: threading.Event
    _closing: bool = False
    _close_lock = threading.Lock()  # shared by all instances: held only to flip _closing

    def start(self) -> None:
        """Start the service's threads; returns at once (``close()`` stops them)."""
        raise NotImplementedError

    def run(self) -> None:
        """``start()``, block until stopped, then ``close()``.

        On the main thread SIGTERM and SIGINT stop it; elsewhere ``stop_event`` (or a
        ``close()`` from another thread) does.
        """
        if threading.current_thread() is threading.main_thread():
            self.install_signal_handlers()
        try:
            self.start()
            while not self.stop_event.wait(0.5):
                pass
        finally:
            self.close()

    def close(self) -> None:
        """Stop every thread and release what the service holds (idempotent)."""
        raise NotImplementedError

    def begin_close(self) -> bool:
        """Whether this is the first ``close()`` (it also sets ``stop_event``)."""
        with self._close_lock:
            first = not self._closing
            self._closing = True
        self.stop_event.set()
        return first

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT set ``stop_event`` (the main thread only)."""

        def stop(signum: int, frame: Any) -> None:
            logger.info("%s: signal %d: stopping", type(self).__name__, signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)


class Service(Lifecycle):
    """Base of the ingester, worker and reducer services.

    Subclasses set ``self.state`` (a pydantic state model with ``name``), ``self.role`` and
    override ``on_update``; their ``start`` calls ``start_background`` and starts their data
    loop, their ``close`` ends with ``super().close()``.
    """

    role = "service"

    def __init__(self, state: Any, settings: DistributedSettings) -> None:
        if ":" in state.name:
            raise ValueError(f"{self.role} name {state.name!r} must not contain ':'")
        self.settings = settings
        keep_freed_memory(settings.heap_keep_bytes)
        self.state = state
        self.state.dranspose_version = __version__
        self.state.mapreduce_version = load_build_meta(settings.build_meta_file)
        self.redis = connect(settings)
        self.stop_event = threading.Event()
        self.parameters: dict[ParameterName, WorkParameter] = {}
        # Published from the start, as in 0.2: the hash of the parameters held (none yet), so
        # /api/v1/config shows every component's parameter version before any scan or update.
        self.state.parameters_hash = parameters_hash(self.parameters)
        self.descriptions: dict[ParameterName, ParameterBase] = {}
        self.update: ControllerUpdate | None = None
        self.redis_run_id: str | None = None
        self._threads: list[threading.Thread] = []
        self._updates_restart = False
        # The id of the last update ``on_update`` has seen, for readers woken by updates.
        self._applied_update: tuple[int, int] = (0, 0)
        self._update_applied = threading.Condition()
        self._state_lock = threading.Lock()
        self._released = False  # the base's close() ran
        self.log = logging.getLogger(f"dranspose_fast.{self.role}.{state.name}")

    # === lifecycle ===

    def start_background(self) -> None:
        """Start the config publisher and the update follower."""
        self._spawn(self._publish_config_loop, "config")
        self._spawn(self._follow_updates, "updates")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(
            target=self._guard(target), name=f"{self.state.name}-{name}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            while not self.stop_event.is_set():
                try:
                    target()
                    return
                except redis.RedisError as exc:
                    self.log.warning("redis unavailable (%s); retrying", exc)
                    self.stop_event.wait(RECONNECT_DELAY)
                except Exception:
                    self.log.exception("background task %s crashed; restarting", target)
                    self.stop_event.wait(RECONNECT_DELAY)

        return run

    def start(self) -> None:
        """Start the config publisher and the update follower; returns at once."""
        self.start_background()

    def close(self) -> None:
        """Stop the base's threads, delete the config key, close Redis (once)."""
        self.stop_event.set()
        if self._released:
            return
        self._released = True
        for thread in self._threads:
            thread.join(timeout=5)
        try:
            self.redis.delete(self.config_key)
        except redis.RedisError:
            pass
        self.redis.close()

    # === config (liveness) ===

    @property
    def config_key(self) -> str:
        return Keys.config(self.role, self.state.name)

    def publish_config(self) -> None:
        with self._state_lock:
            payload = self.state.model_dump_json()
        self.redis.set(self.config_key, payload, px=int(self.settings.config_ttl * 1000))
        for desc in self.descriptions.values():
            self.redis.set(
                Keys.description(desc.name), desc.model_dump_json(),
                px=int(self.settings.config_ttl * 1000),
            )

    def _publish_config_loop(self) -> None:
        while not self.stop_event.is_set():
            self._check_redis_restart()
            self.publish_config()
            self.stop_event.wait(self.settings.config_interval)

    def _check_redis_restart(self) -> None:
        run_id = str(self.redis.info("server").get("run_id"))
        if self.redis_run_id is not None and run_id != self.redis_run_id:
            self.log.warning("redis restarted; the running scan has ended")
            self._updates_restart = True  # stream ids start over in a fresh Redis
            self.on_redis_restart()
        self.redis_run_id = run_id

    def on_redis_restart(self) -> None:
        """Called when Redis came back empty; subclasses end their scan."""

    # === updates and parameters ===

    def _follow_updates(self) -> None:
        last: bytes = b"0-0"
        latest: list[Any] = cast(list[Any], self.redis.xrevrange(Keys.UPDATES, count=1))
        if latest:
            last = latest[0][0]
            self._apply_update(latest[0][1])
        self._mark_applied(last)
        while not self.stop_event.is_set():
            if self._updates_restart:
                self._updates_restart = False
                last = b"0-0"
                self._mark_applied(last)
            entries: list[Any] = cast(list[Any], self.redis.xread({Keys.UPDATES: last}, block=200))
            for _stream, items in entries or []:
                for entry_id, fields in items:
                    last = entry_id
                    self._apply_update(fields)
                    self._mark_applied(entry_id)

    def _mark_applied(self, entry_id: bytes) -> None:
        with self._update_applied:
            self._applied_update = stream_id(entry_id)
            self._update_applied.notify_all()

    def read_or_update(
        self, key: str, last: bytes | str, count: int, block_ms: int
    ) -> list[Entry]:
        """``XREAD`` the entries of ``key`` after ``last``, or return early for an update.

        A reader blocked on a finished scan's key would otherwise sleep out ``block_ms``
        before it sees the next scan: the same call also waits for a controller update
        newer than the last one applied and, when one comes, returns once the update thread
        has applied it (``on_update`` has run), so the caller finds the new scan at once.
        """
        with self._update_applied:
            ms, seq = self._applied_update
        reply: Any = self.redis.xread(
            {key: last, Keys.UPDATES: f"{ms}-{seq}"}, count=count, block=block_ms)
        found: list[Entry] = []
        for stream, items in reply or []:
            if stream not in (Keys.UPDATES, Keys.UPDATES.encode()):
                found = items
                continue
            self._wait_applied(stream_id(items[-1][0]), block_ms / 1000)
        return found

    def _wait_applied(self, entry: tuple[int, int], timeout: float) -> None:
        with self._update_applied:
            self._update_applied.wait_for(
                lambda: self._applied_update >= entry or self.stop_event.is_set(), timeout)

    def _apply_update(self, fields: dict[bytes, bytes]) -> None:
        try:
            update = ControllerUpdate.model_validate_json(fields[b"d"])
        except Exception as exc:
            self.log.error("ignored a malformed controller update: %s", exc)
            return
        self.refresh_parameters(update)
        previous = self.update
        self.update = update
        self.on_update(update, previous)

    def refresh_parameters(self, update: ControllerUpdate) -> None:
        changed = False
        for name, uid in update.parameters_version.items():
            current = self.parameters.get(name)
            if current is not None and current.uuid == uid:
                continue
            data = cast(bytes | None, self.redis.get(Keys.parameter(name, str(uid))))
            if data is None:
                self.log.warning("parameter %s version %s is missing in redis", name, uid)
                continue
            param = WorkParameter(name=name, data=data, uuid=uid)
            if name in self.descriptions:
                param.value = self.descriptions[name].from_bytes(data)  # type: ignore[attr-defined]
            self.parameters[name] = param
            changed = True
        if changed:
            with self._state_lock:
                self.state.parameters_hash = parameters_hash(self.parameters)

    def on_update(self, update: ControllerUpdate, previous: ControllerUpdate | None) -> None:
        """Called (in the updates thread) for every controller update."""

    def current_parameters(self) -> tuple[HashDigest, dict[ParameterName, WorkParameter]]:
        """The parameters hash (published in the state) and the values parsed through the
        descriptions, with defaults for what the controller has not set."""
        phash = parameters_hash(self.parameters)
        with self._state_lock:
            self.state.parameters_hash = phash
        return phash, apply_descriptions(self.parameters, self.descriptions)

    def describe(self, descriptions: list[Any]) -> None:
        for desc in descriptions:
            param = Parameter.validate_python(desc.model_dump())
            self.descriptions[ParameterName(param.name)] = param

    def wait(self, seconds: float) -> bool:
        return self.stop_event.wait(seconds)

    def sleep_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline or self.stop_event.is_set():
                return False
            time.sleep(0.01)
        return True
