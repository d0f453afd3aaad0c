"""A generic ingester for custom protocols: each upstream multipart message is one frame-set.

Every message that arrives while a scan runs is forwarded as one ``StreamData`` (``typ`` from
``STREAM_TYP``), nothing is decoded.  Messages that arrive outside a scan (before a mapping,
after it finished) are discarded and counted.  The upstream is a PULL socket, or a SUB socket
subscribed to ``SUBSCRIBE`` (every message by default).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, ClassVar, Literal

import zmq

from dranspose_fast.event import StreamData, make_stream_data
from dranspose_fast.ingester import Ingester, IsSoftwareTriggered, UpstreamSettings
from dranspose_fast.ingester.sources import UpstreamSource
from dranspose_fast.protocol import StreamName

__all__ = ["MultipartIngester", "MultipartSettings"]

_SOCKET_TYPES = {"PULL": zmq.PULL, "SUB": zmq.SUB}


class MultipartSettings(UpstreamSettings):
    """Upstream URL(s), socket type (``UPSTREAM_SOCKET``: PULL or SUB) and ``STREAM_TYP``."""

    upstream_socket: Literal["PULL", "SUB"] = "PULL"
    stream_typ: str = "multipart"
    subscribe: str = ""


class MultipartIngester(Ingester):
    """Forwards every upstream multipart message of a scan, undecoded."""

    settings_class: ClassVar[type[MultipartSettings]] = MultipartSettings

    def __init__(self, settings: MultipartSettings | None = None) -> None:
        settings = settings if settings is not None else MultipartSettings()
        self._multipart_settings = settings
        super().__init__(settings)
        self._in_sockets: dict[StreamName, zmq.Socket[Any]] = {}

    def direct_source(self, stream: StreamName) -> UpstreamSource | None:
        if type(self).run_source is not MultipartIngester.run_source:
            return None
        cfg = self._multipart_settings
        src = UpstreamSource(self.zmq_context, stream, cfg.url_of(stream), self.counters,
                             self.log, _SOCKET_TYPES[cfg.upstream_socket],
                             cfg.subscribe.encode(), rcvhwm=cfg.hwm)
        src.typ = cfg.stream_typ
        return src

    async def run_source(
        self, stream: StreamName
    ) -> AsyncGenerator[StreamData | IsSoftwareTriggered, None]:
        """Every message as one ``StreamData`` (the generator path, for subclasses)."""
        cfg = self._multipart_settings
        sock = self.ctx.socket(_SOCKET_TYPES[cfg.upstream_socket])
        sock.setsockopt(zmq.RCVHWM, cfg.hwm)
        if cfg.upstream_socket == "SUB":
            sock.setsockopt(zmq.SUBSCRIBE, cfg.subscribe.encode())
        sock.connect(cfg.url_of(stream))
        self._in_sockets[stream] = sock
        while True:
            frames = await sock.recv_multipart(copy=False)
            yield make_stream_data(cfg.stream_typ, frames)

    async def stop_source(self, stream: StreamName) -> None:
        sock = self._in_sockets.pop(stream, None)
        if sock is not None:
            sock.close(linger=0)
