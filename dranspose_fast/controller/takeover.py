"""What a controller finds in Redis when it starts after another one died.

A controller killed mid-scan (``kill -9``, a node lost) leaves its last ``dfast:updates`` entry
behind: the components keep that mapping and wait for assignments that never come. The new
controller takes over what is in Redis:

* the **parameters**: every value of the last update whose key is still there is adopted with
  its version uuid, so components keep theirs and nothing is re-sent;
* the **running scan** is ended with the reason ``"controller restarted"`` (a true statement:
  the scan's binding state died with the old controller; resuming it is the next step of the
  faults issue), so the components finish it (the reducer's ``finish``, the dumps closed)
  and the next ``POST /api/v1/sequence`` starts from a clean state. It is logged at ERROR.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import redis
from pydantic import ValidationError

from dranspose_fast.protocol import ParameterName, WorkParameter
from dranspose_fast.runtime.redis_messages import ControllerUpdate, Keys

__all__ = ["RESTART_REASON", "Takeover", "read_takeover"]

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
