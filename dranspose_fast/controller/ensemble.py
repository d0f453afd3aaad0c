"""The controller's view of Redis: settings, errors and the ensemble of components.

Everything here is per request or per period (never per event): reading ``dfast:config:*``
into an ``EnsembleState``, typed views of redis-py answers (the lock: ``lock.py``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from pydantic import UUID4, AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from dranspose_fast import __version__
from dranspose_fast.controller.scan import counters_of
from dranspose_fast.errors import DransposeFastError, ServiceError
from dranspose_fast.parameters import Parameter, ParameterType
from dranspose_fast.protocol import (
    HashDigest,
    IngesterState,
    ParameterName,
    ReducerState,
    StreamName,
    WorkerState,
    WorkParameter,
)
from dranspose_fast.runtime.redis_messages import Keys
from dranspose_fast.runtime.settings import DistributedSettings

logger = logging.getLogger("dranspose_fast.controller")


class ControllerError(ServiceError):
    """The controller cannot run (e.g. it cannot get the lock)."""


class ControllerLockError(ControllerError):
    """Another controller holds ``dfast:controller:lock``."""


class RequestError(DransposeFastError, ValueError):
    """A request the controller refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _env(name: str) -> Any:
    return AliasChoices(name)


class ControllerSettings(DistributedSettings):
    """Controller timings (``DFAST_*`` environment variables; short in tests)."""

    lock_ttl: float = Field(10.0, gt=0, validation_alias=_env("dfast_lock_ttl"))
    lock_retry: float = Field(2.0, gt=0, validation_alias=_env("dfast_lock_retry"))
    lock_timeout: float = Field(60.0, ge=0, validation_alias=_env("dfast_lock_timeout"))
    mapping_timeout: float = Field(10.0, gt=0, validation_alias=_env("dfast_mapping_timeout"))
    config_cache: float = Field(0.3, ge=0, validation_alias=_env("dfast_config_cache"))
    defaults_interval: float = Field(1.0, gt=0, validation_alias=_env("dfast_defaults_interval"))
    check_interval: float = Field(0.5, gt=0, validation_alias=_env("dfast_check_interval"))
    block_ms: int = Field(100, ge=1, validation_alias=_env("dfast_block_ms"))
    #: A scan with events pending and no progress for this long is reported as stalled.
    stall_timeout: float = Field(30.0, gt=0, validation_alias=_env("dfast_stall_timeout"))


# === the ensemble (component configs) ===


class IngesterConfig(IngesterState):
    model_config = ConfigDict(extra="allow")


class WorkerConfig(WorkerState):
    model_config = ConfigDict(extra="allow")


class ReducerConfig(ReducerState):
    model_config = ConfigDict(extra="allow")


_ROLES: dict[str, type[BaseModel]] = {
    "ingester": IngesterConfig, "worker": WorkerConfig, "reducer": ReducerConfig,
}


class EnsembleState(BaseModel):
    """``GET /api/v1/config``: every live component's published state."""

    ingesters: list[IngesterConfig] = []
    workers: list[WorkerConfig] = []
    reducer: ReducerConfig | None = None
    controller_version: str | None = None
    parameters_version: dict[ParameterName, UUID4] = {}
    parameters_hash: HashDigest | None = None

    def get_streams(self) -> list[StreamName]:
        """Ingester streams that every worker reaches: the worker lists the ingester, and the
        ingester lists the worker (it heard its hello; a worker that dialled a wrong
        ``INGESTER_URL`` lists an ingester that never hears it)."""
        streams = {s for i in self.ingesters for s in i.streams}
        heard = {i.name: {c.name for c in i.connected_workers.values()} for i in self.ingesters}
        for w in self.workers:
            streams &= {s for i in w.ingesters if w.name in heard.get(i.name, ())
                        for s in i.streams}
        return sorted(streams)

    def tags_of(self, name: str) -> set[str] | None:
        for w in self.workers:
            if w.name == name:
                return set(w.tags)
        return None


@dataclass
class Configs:
    ensemble: EnsembleState
    counters: dict[str, dict[str, float]] = field(default_factory=dict)
    at: float = 0.0


# === typed views of redis answers ===

Entries = list[tuple[bytes, dict[bytes, bytes]]]
Streams = list[tuple[bytes, Entries]]


def as_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


def as_entries(answer: object) -> Entries:
    return cast(Entries, answer or [])


def as_streams(answer: object) -> Streams:
    # RESP2 answer of XREAD: [[key, [(id, {field: value})]]]
    return cast(Streams, answer or [])


def read_configs(client: redis.Redis, parameters: dict[ParameterName, WorkParameter],
                 phash: HashDigest, bad_keys: set[bytes]) -> tuple[Configs, int]:
    """SCAN + MGET ``dfast:config:*``; returns the configs and how many were invalid.

    An invalid config is logged once per key (``bad_keys`` remembers them) and skipped.
    """
    keys = sorted(cast(list[bytes], client.scan_iter(match=Keys.ALL_CONFIGS, count=1000)))
    values = cast(list[bytes | None], client.mget(keys)) if keys else []
    found: dict[str, list[Any]] = {"ingester": [], "worker": [], "reducer": []}
    counters: dict[str, dict[str, float]] = {}
    invalid = 0
    for key, value in zip(keys, values, strict=True):
        if value is None:
            continue  # expired between SCAN and MGET
        role = key.decode(errors="replace").split(":")[2] if key.count(b":") >= 3 else ""
        model = _ROLES.get(role)
        try:
            if model is None:
                raise ValueError(f"unknown role {role!r}")
            state = model.model_validate_json(value)
            raw = json.loads(value)
        except (ValidationError, ValueError) as exc:
            invalid += 1
            if key not in bad_keys:
                bad_keys.add(key)
                logger.error("ignored the invalid config %s: %s", key.decode(errors="replace"),
                             str(exc).splitlines()[0])
            continue
        found[role].append(state)
        counters[f"{role}:{getattr(state, 'name', '?')}"] = counters_of(raw)
    ensemble = EnsembleState(
        ingesters=found["ingester"], workers=found["worker"],
        reducer=found["reducer"][0] if found["reducer"] else None,
        controller_version=__version__,
        parameters_version={n: p.uuid for n, p in parameters.items()}, parameters_hash=phash)
    return Configs(ensemble, counters, time.monotonic()), invalid


def read_descriptions(
    client: redis.Redis, bad_keys: set[bytes]
) -> tuple[dict[str, ParameterType], int]:
    """SCAN + MGET the parameter descriptions the components registered; returns them by
    name and how many were invalid (logged once per key, like the configs)."""
    keys = list(client.scan_iter(match=Keys.description("*"), count=1000))
    values = cast(list[bytes | None], client.mget(keys)) if keys else []
    found: dict[str, ParameterType] = {}
    invalid = 0
    for key, value in zip(keys, values, strict=True):
        if value is None:
            continue
        try:
            desc = Parameter.validate_json(value)
        except ValidationError as exc:
            invalid += 1
            if key not in bad_keys:
                bad_keys.add(key)
                logger.error("ignored the invalid parameter description %s: %s",
                             key.decode(errors="replace"), str(exc).splitlines()[0])
            continue
        found[desc.name] = desc
    return found, invalid


def read_logs(client: redis.Redis, level: str) -> list[dict[str, str]]:
    """Entries of ``dfast:logs`` at or above ``level`` (a name or a number).

    Raises
    ------
    RequestError
        400 for an unknown level name.
    """
    levels = logging.getLevelNamesMapping()
    minimum = int(level) if level.isdigit() else levels.get(level.upper())
    if minimum is None:
        raise RequestError(400, f"unknown log level {level!r} (use one of "
                                "DEBUG, INFO, WARNING, ERROR, CRITICAL)")
    out = []
    for _id, fields in as_entries(client.xrange(Keys.LOGS, "-", "+")):
        entry = {as_text(k): as_text(v) for k, v in fields.items()}
        if levels.get(entry.get("levelname", ""), 0) >= minimum:
            out.append(entry)
    return out
