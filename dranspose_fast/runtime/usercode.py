"""Calling the users' worker and reducer classes, exactly as dranspose 0.2 does.

One place decides how a user class is constructed and called, so replay (in one process or
several) and the distributed worker and reducer behave identically:

* constructors get ``parameters=``, ``context=`` and ``state=`` keyword arguments (only those
  the signature accepts, so the slides' ``__init__(self)`` works too);
* ``process_event(event, parameters, tick)`` is called positionally (``tick`` only when the
  method takes a third argument); ``process_result(result, parameters)`` likewise;
* an exception in user code is logged with the event number, counted, and the run goes on.
"""

from __future__ import annotations

import inspect
import logging
import pickle
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from dranspose_fast.event import EventData, ResultData, make_result
from dranspose_fast.parameters import ParameterBase
from dranspose_fast.protocol import HashDigest, ParameterName, WorkParameter
from dranspose_fast.runtime.tick import TickClock

logger = logging.getLogger(__name__)

Parameters = dict[ParameterName, WorkParameter]


def instantiate(cls: type, **kwargs: Any) -> Any:
    """Construct a user class with the keyword arguments its ``__init__`` accepts."""
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):  # builtins or C classes: pass everything
        return cls(**kwargs)
    params = sig.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return cls(**kwargs)
    accepted = {p.name for p in params}
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})


def close_user_object(instance: Any, context: dict[str, Any], log: logging.Logger,
                      who: str) -> None:
    """Call the user's ``close(context)`` if the class has one (0.2: at service shutdown); an
    exception it raises is logged, never propagated: the service is closing regardless."""
    user_close = getattr(instance, "close", None)
    if user_close is None:
        return
    try:
        user_close(context)
    except Exception:
        log.exception("%s: close(context) raised", who)


def _positional_arity(method: Callable[..., Any]) -> int:
    """How many positional arguments a bound method takes (``*args`` counts as many)."""
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return 99
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return 99
    return sum(
        p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for p in params
    )


def describe(*classes: type | None) -> dict[ParameterName, ParameterBase]:
    """Merge the ``describe_parameters()`` of the given classes (later classes win)."""
    out: dict[ParameterName, ParameterBase] = {}
    for cls in classes:
        if cls is not None and hasattr(cls, "describe_parameters"):
            for desc in cls.describe_parameters():
                out[ParameterName(desc.name)] = desc
    return out


def apply_descriptions(
    parameters: Mapping[ParameterName, WorkParameter],
    descriptions: Mapping[ParameterName, ParameterBase],
) -> Parameters:
    """Parse values through their descriptions and add defaults for the missing ones."""
    out: Parameters = {}
    for name, param in parameters.items():
        if name in descriptions:
            value = descriptions[name].from_bytes(param.data)  # type: ignore[attr-defined]
            param = param.model_copy(update={"value": value})
        out[name] = param
    for name, desc in descriptions.items():
        if name not in out:
            default = desc.default  # type: ignore[attr-defined]
            out[name] = WorkParameter(name=name, value=default, data=desc.to_bytes(default))
    return out


@dataclass
class WorkerCounters:
    events: int = 0
    results: int = 0
    errors: int = 0


class WorkerHost:
    """One user worker instance and the bookkeeping around it."""

    def __init__(
        self,
        cls: type,
        name: str,
        parameters: Parameters,
        context: dict[str, Any],
        state: Any,
        clock: TickClock | None = None,
    ) -> None:
        self.name = name
        self.parameters = parameters
        self.instance = instantiate(cls, parameters=parameters, context=context, state=state)
        self.clock = clock
        self.counters = WorkerCounters()
        self._process = self.instance.process_event
        self._with_tick = _positional_arity(self._process) >= 3
        self._tick_interval = getattr(self.instance, "get_tick_interval", None)

    def _tick(self) -> bool:
        if self._tick_interval is None or self.clock is None:
            return False
        try:
            return self.clock.claim(float(self._tick_interval(parameters=self.parameters)))
        except Exception:
            logger.exception("worker %s: get_tick_interval raised", self.name)
            return False

    def process(self, event: EventData) -> Any:
        """Run ``process_event``; returns its result, or None if it raised (counted, logged)."""
        self.counters.events += 1
        try:
            if self._with_tick:
                result = self._process(event, self.parameters, self._tick())
            else:
                result = self._process(event, self.parameters)
        except Exception:
            self.counters.errors += 1
            logger.exception(
                "worker %s: process_event raised on event %d", self.name, event.event_number
            )
            return None
        if result is not None:
            self.counters.results += 1
        return result

    def finish(self) -> None:
        finish = getattr(self.instance, "finish", None)
        if finish is not None:
            try:
                finish(parameters=self.parameters)
            except Exception:
                self.counters.errors += 1
                logger.exception("worker %s: finish raised", self.name)


def encode_payload(payload: Any) -> bytes:
    """Serialize a worker result the way it travels to the reducer."""
    return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)


def decode_payload(data: Any) -> Any:
    return pickle.loads(data)


@dataclass
class ReducerCounters:
    results: int = 0
    errors: int = 0
    timer_errors: int = 0
    last_error: str = ""
    per_worker: dict[str, int] = field(default_factory=dict)


class ReducerHost:
    """The user reducer instance, its timer thread and a lock-aware view of ``publish``."""

    def __init__(
        self, cls: type, parameters: Parameters, context: dict[str, Any], state: Any
    ) -> None:
        self.parameters = parameters
        #: Bumped whenever ``parameters`` changes in place (an HTTP POST), so hot loops
        #: notice without comparing dicts.
        self.parameters_version = 0
        self.instance = instantiate(cls, parameters=parameters, context=context, state=state)
        self.counters = ReducerCounters()
        self._process = self.instance.process_result
        self._with_parameters = _positional_arity(self._process) >= 2
        self._timer_stop = threading.Event()
        self._timer_thread: threading.Thread | None = None

    def process(
        self, event_number: int, worker: str, parameters_hash: HashDigest | None, payload: Any
    ) -> None:
        result: ResultData = make_result(event_number, worker, parameters_hash, payload)
        self.counters.results += 1
        per_worker = self.counters.per_worker
        per_worker[worker] = per_worker.get(worker, 0) + 1
        try:
            if self._with_parameters:
                self._process(result, self.parameters)
            else:
                self._process(result)
        except Exception as exc:
            self.counters.errors += 1
            self.counters.last_error = f"{type(exc).__name__}: {exc}"
            logger.exception("reducer: process_result raised on event %d", event_number)

    def get_data(self) -> tuple[Any, AbstractContextManager[Any]]:
        """``(publish, lock)`` as the HTTP layer and the HDF5 writer read them."""
        data = getattr(self.instance, "publish", {})
        lock = getattr(self.instance, "publish_rlock", None)
        return data, (lock if lock is not None else nullcontext())

    def start_timer(self) -> None:
        if hasattr(self.instance, "timer"):
            self._timer_thread = threading.Thread(
                target=self._run_timer, name="reducer-timer", daemon=True
            )
            self._timer_thread.start()

    def _run_timer(self) -> None:
        while not self._timer_stop.is_set():
            delay = 1.0
            try:
                answer = self.instance.timer(self.parameters)
                if isinstance(answer, int | float) and not isinstance(answer, bool):
                    delay = max(float(answer), 0.0)
                else:
                    logger.warning("reducer timer returned %r, not seconds; using 1 s", answer)
            except Exception:
                self.counters.timer_errors += 1
                logger.exception("reducer: timer raised")
            self._timer_stop.wait(delay)

    def stop_timer(self) -> None:
        self._timer_stop.set()
        if self._timer_thread is not None:
            self._timer_thread.join(timeout=5)

    def finish(self) -> None:
        finish = getattr(self.instance, "finish", None)
        if finish is not None:
            try:
                finish(parameters=self.parameters)
            except Exception:
                self.counters.errors += 1
                logger.exception("reducer: finish raised")
