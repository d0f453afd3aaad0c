"""What a controller finds in Redis when it starts after another one died.

A controller killed mid-scan (``kill -9``, a node lost) leaves its last ``dfast:updates`` entry
behind, and the components keep working on that mapping. The new controller takes over what
is in Redis:

* the **parameters**: every value of the last update whose key is still there is adopted with
  its version uuid, so components keep theirs and nothing is re-sent;
* the **running scan** is resumed where it stood (``controller.resume``): the components see
  no change, assignments continue from the next event. If it cannot be (its saved map is
  missing, say, because an older controller started it), it is ended with the reason
  ``"controller restarted"`` and logged at ERROR, so ``finished`` and ``reason`` stay true.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import redis
from pydantic import ValidationError

from dranspose_fast.controller.ensemble import Configs
from dranspose_fast.controller.resume import ResumeError, resume_scan
from dranspose_fast.controller.scan import ScanState
from dranspose_fast.controller.watch import retention_on
from dranspose_fast.protocol import ParameterName, WorkParameter
from dranspose_fast.runtime.redis_messages import ControllerUpdate, Keys

__all__ = ["RESTART_REASON", "Takeover", "read_takeover", "take_over_scan"]

logger = logging.getLogger("dranspose_fast.controller")

RESTART_REASON = "controller restarted"


class Takeover:
    """The previous controller's last update and the parameter values still in Redis."""

    def __init__(self, update: ControllerUpdate | None,
                 parameters: dict[ParameterName, WorkParameter]) -> None:
        self.update = update
        self.parameters = parameters

    @property
    def orphaned_scan(self) -> bool:
        """A scan was running when the previous controller stopped."""
        return (self.update is not None and self.update.mapping_uuid is not None
                and not self.update.finished)

    def ended_update(self) -> ControllerUpdate:
        """The previous update, marked finished with ``RESTART_REASON``."""
        assert self.update is not None
        return self.update.model_copy(update={"finished": True, "reason": RESTART_REASON})


def read_takeover(client: redis.Redis) -> Takeover:
    """The latest ``dfast:updates`` entry and its parameter values (missing ones skipped)."""
    latest = cast(list[Any], client.xrevrange(Keys.UPDATES, count=1))
    if not latest:
        return Takeover(None, {})
    try:
        update = ControllerUpdate.model_validate_json(latest[0][1][b"d"])
    except (KeyError, ValidationError) as exc:
        logger.error("the last controller update in redis is unreadable (%s); not taken over",
                     exc)
        return Takeover(None, {})
    parameters: dict[ParameterName, WorkParameter] = {}
    for name, version in update.parameters_version.items():
        data = cast(bytes | None, client.get(Keys.parameter(name, str(version))))
        if data is None:
            logger.warning("parameter %s (version %s) is no longer in redis; not taken over",
                           name, version)
            continue
        parameters[name] = WorkParameter(name=name, data=data, uuid=version)
    return Takeover(update, parameters)


def take_over_scan(client: redis.Redis, found: Takeover, cfg: Configs) -> ScanState | None:
    """Resume the scan the previous controller left running; if it cannot be, end it (the
    update that says so is published) and return ``None``."""
    assert found.update is not None and found.update.mapping_uuid is not None
    uid = found.update.mapping_uuid
    ingesters = cfg.ensemble.ingesters
    try:
        scan = resume_scan(client, uid, retention_on(ingesters))
    except (ResumeError, redis.RedisError) as exc:
        ended = found.ended_update()
        client.xadd(Keys.UPDATES, {"d": ended.model_dump_json()}, maxlen=100,
                    approximate=True)
        client.delete(*Keys.of_scan(uid))
        logger.error("scan %s was running when the previous controller stopped and cannot be "
                     "resumed (%s): ended with reason %r", uid, exc, RESTART_REASON)
        return None
    reducer = cfg.ensemble.reducer
    scan.reducer_uuid = reducer.service_uuid if reducer is not None else None
    scan.routed_at_start = {
        i.name: int(cfg.counters.get(f"ingester:{i.name}", {}).get("counters.events_routed", 0))
        for i in ingesters}
    return scan
