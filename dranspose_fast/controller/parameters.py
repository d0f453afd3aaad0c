"""The controller's parameters: versions in Redis, checks against the components' descriptions.

A mixin of ``Controller`` (``engine.py``): the values live in ``self.parameters`` under the
controller's ``self._lock``; every change is one new ``dfast:parameter:{name}:{uuid}`` key and
one ``dfast:updates`` entry (``_publish_update``).
"""

from __future__ import annotations

import logging
import threading

import redis

from dranspose_fast.controller.ensemble import ControllerSettings, RequestError, read_descriptions
from dranspose_fast.helpers.utils import parameters_hash
from dranspose_fast.parameters import ParameterBase, ParameterType, StrParameter, value_problem
from dranspose_fast.protocol import HashDigest, ParameterName, WorkParameter
from dranspose_fast.runtime.redis_messages import Keys

__all__ = ["DUMP_PREFIX", "OLD_VALUE_TTL", "ParameterStore"]

logger = logging.getLogger("dranspose_fast.controller.engine")

DUMP_PREFIX = ParameterName("dump_prefix")
#: Old parameter value keys live on this long, for components still fetching them.
OLD_VALUE_TTL = 60


class ParameterStore:
    """Parameter methods of ``Controller``; the attributes below are the controller's."""

    settings: ControllerSettings
    redis: redis.Redis
    parameters: dict[ParameterName, WorkParameter]
    parameters_hash: HashDigest
    counters: dict[str, int]
    _lock: threading.RLock
    _bad_keys: set[bytes]

    def _publish_update(self) -> None:
        raise NotImplementedError

    def set_param(self, name: ParameterName, data: bytes) -> HashDigest:
        """Store a new version of parameter ``name``; returns the new parameters hash.

        Raises
        ------
        RequestError
            400 if a component describes ``name`` and ``data`` is no value of its type, or
            ``dump_prefix`` names a place outside the dump root (``DFAST_DUMP_ROOT``).
        """
        for desc in self.describe_parameters():
            problem = value_problem(desc, data) if desc.name == name else None
            if problem:
                raise RequestError(400, f"parameter {name!r} ({desc.dtype}) {problem}")
        if name == DUMP_PREFIX and data:
            # a file name after the prefix, as the dumps append one (docs/security.md)
            problem = self.settings.dump_path_problem(data.decode("utf8") + "mapping.json")
            if problem:
                raise RequestError(400, f"parameter {name!r}: {problem}")
        param = WorkParameter(name=name, data=data)
        with self._lock:
            self.redis.set(Keys.parameter(name, str(param.uuid)), data)
            old = self.parameters.get(name)
            if old is not None:
                self.redis.expire(Keys.parameter(name, str(old.uuid)), OLD_VALUE_TTL)
            self.parameters[name] = param
            self.parameters_hash = parameters_hash(self.parameters)
            self._publish_update()
            logger.info("parameter %s set (%d bytes); hash %s", name, len(data),
                        self.parameters_hash[:12])
            return self.parameters_hash

    def get_param(self, name: str) -> bytes | None:
        with self._lock:
            param = self.parameters.get(ParameterName(name))
            return None if param is None else param.data

    def describe_parameters(self) -> list[ParameterType]:
        """Every registered description plus the synthetic ``dump_prefix``, sorted by name."""
        found, invalid = read_descriptions(self.redis, self._bad_keys)
        self.counters["invalid_descriptions"] = invalid  # a gauge, like invalid_configs
        found.setdefault(DUMP_PREFIX, StrParameter(name=DUMP_PREFIX,
                                                   description="Prefix to dump ingester values"))
        return [found[n] for n in sorted(found)]

    def _apply_defaults(self) -> None:
        for desc in self.describe_parameters():
            if desc.name == DUMP_PREFIX or desc.name in self.parameters:
                continue
            base: ParameterBase = desc
            data = type(base).to_bytes(desc.default)
            logger.info("parameter %s set to its default %r", desc.name, desc.default)
            self.set_param(desc.name, data)

    def _rewrite_parameters(self) -> None:
        if self.parameters:
            pipe = self.redis.pipeline()
            for name, param in self.parameters.items():
                pipe.set(Keys.parameter(name, str(param.uuid)), param.data)
            pipe.execute()
