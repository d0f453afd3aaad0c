"""PandA position capture from its TCP data port (ASCII lines, not ZeroMQ).

As in dranspose 0.2 this is a ``run_source`` generator on asyncio streams: connect, send an
empty options line (ASCII, scaled), expect ``OK``; then for every arm, the header from its
``arm_time:`` line to the blank line is one message and every later line (one per trigger,
and the ``END ...`` line) is one message, ``typ="PCAP_RAW"``.  One connection serves any
number of arm/END cycles; lines outside a cycle are discarded (counted).  ``stop_source``
closes the connection at the end of the scan.

Unlike 0.2, which raised on a refused connection or an unexpected handshake and sent empty
messages forever after the PandA hung up mid-arm, a failed connection, handshake or lost
connection is logged (at most one line every few seconds), counted as ``source_errors`` and
retried every ``upstream_reconnect_interval`` seconds; a row whose value count differs from
its header's field count is dropped and counted as ``malformed``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any, ClassVar, Final

from pydantic import Field, model_validator
from pydantic_core import Url

from dranspose_fast.event import StreamData, make_stream_data
from dranspose_fast.ingester import Ingester, IsSoftwareTriggered, UpstreamSettings
from dranspose_fast.ingester.framing import (
    DATA,
    END,
    PROBLEM_LOG_INTERVAL,
    START,
    Framed,
    FrameError,
    Framer,
    ProblemLog,
)
from dranspose_fast.protocol import StreamName
from dranspose_fast.runtime.settings import IngesterSettings

__all__ = ["PositionCapFramer", "TcpPcapIngester", "TcpPcapSettings"]

_TYP: Final = "PCAP_RAW"
_ARM: Final = b"arm_time: "
#: Lines a header may have before it is given up as garbage.
_MAX_HEADER_LINES: Final[int] = 4096
#: Longest line read from the data port (asyncio's stream limit).
_MAX_LINE_BYTES: Final[int] = 1 << 20


class TcpPcapSettings(UpstreamSettings):
    """``UPSTREAM_URL``: ``tcp://host:port`` of the PandA data port (``UPSTREAM_URLS`` per
    stream); ``UPSTREAM_RECONNECT_INTERVAL``: seconds between connection attempts."""

    upstream_url: Url | None = None  # any scheme, as in 0.2
    upstream_urls: dict[StreamName, Url] = {}
    upstream_reconnect_interval: float = Field(2.0, gt=0)
    upstream_handshake_timeout: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _urls_have_host_and_port(self) -> TcpPcapSettings:
        for url in [self.upstream_url, *self.upstream_urls.values()]:
            if url is not None and (not url.host or url.port is None):
                raise ValueError(f"upstream url {url} needs a host and a port (tcp://host:port)")
        return self

    def address_of(self, stream: StreamName) -> tuple[str, int]:
        """Host and port of the data port that serves ``stream``."""
        url = self.upstream_urls.get(stream) or self.upstream_url
        assert url is not None and url.host is not None and url.port is not None
        return url.host, url.port


class PositionCapFramer(Framer):
    """Lines of the data port in, PCAP_RAW messages out (one message per line in, at most).

    Outside an arm lines are skipped (``skipped`` counts them); a header is collected up to its
    blank line; rows must have as many values as the header has fields.
    """

    typ: ClassVar[str] = _TYP

    def __init__(self) -> None:
        self.skipped = 0
        self.reset()

    def reset(self) -> None:
        self._header: list[bytes] | None = None
        self._fields = -1  # -1: outside an arm
        self._in_header = False

    def feed(self, frames: list[Any]) -> Sequence[Framed]:
        line = bytes(frames[0])
        if self._in_header:
            assert self._header is not None
            self._header.append(line)
            if line.strip():
                if len(self._header) >= _MAX_HEADER_LINES:
                    self.reset()
                    raise FrameError("header", f"no blank line within {_MAX_HEADER_LINES} lines")
                return ()
            header = self._header
            self.reset()
            self._fields = sum(1 for h in header if h.startswith(b" ") and h.strip())
            return ((START, [b"".join(header)]),)
        if line.startswith(_ARM):
            self.reset()  # a new arm (also if the last one lacked its END)
            self._in_header = True
            self._header = [line]
            return ()
        if self._fields < 0:
            self.skipped += 1
            return ()
        if line.startswith(b"END"):
            self._fields = -1
            return ((END, [line]),)
        values = len(line.split())
        if values != self._fields:
            raise FrameError("row", f"{values} values, the header declares {self._fields} fields")
        return ((DATA, [line]),)


class _RetryLog:
    """Connection problems of one stream: at most one log line per interval, with a count."""

    def __init__(self, log: logging.Logger, stream: StreamName) -> None:
        self.log = log
        self.stream = stream
        self._last = -PROBLEM_LOG_INTERVAL
        self._since = 0

    def report(self, problem: str) -> None:
        self._since += 1
        now = time.monotonic()
        if now - self._last < PROBLEM_LOG_INTERVAL:
            return
        self.log.error("stream %s: %s (%d failed attempts since the last line; retrying)",
                       self.stream, problem, self._since)
        self._last = now
        self._since = 0


class TcpPcapIngester(Ingester):
    """Forwards the PandA data port's arms, one event per line, to the workers."""

    settings_class: ClassVar[type[IngesterSettings]] = TcpPcapSettings

    def __init__(self, settings: TcpPcapSettings | None = None) -> None:
        settings = settings if settings is not None else TcpPcapSettings()
        self._pcap_settings = settings  # the 0.2 attribute name
        super().__init__(settings)
        self._writers: dict[StreamName, asyncio.StreamWriter] = {}
        #: The last connection opened (0.2's attribute).
        self.writer: asyncio.StreamWriter | None = None

    async def run_source(
        self, stream: StreamName
    ) -> AsyncGenerator[StreamData | IsSoftwareTriggered, None]:
        """Every arm's header, rows and END line of the data port, reconnecting if it fails."""
        cfg = self._pcap_settings
        host, port = cfg.address_of(stream)
        where = f"{host}:{port}"
        counters = self._source_counters
        problems = ProblemLog(self.log, stream)
        retries = _RetryLog(self.log, stream)
        framer = PositionCapFramer()
        received = 0
        while True:
            conn = await self._connect(stream, host, port, retries)
            if conn is None:
                await asyncio.sleep(cfg.upstream_reconnect_interval)
                continue
            reader, writer = conn
            framer.reset()
            try:
                while True:
                    try:
                        line = await reader.readline()
                    except ValueError:  # longer than the stream limit
                        counters.malformed += 1
                        problems.report(received + 1, f"a line over {_MAX_LINE_BYTES} bytes")
                        break
                    except OSError as exc:
                        counters.source_errors += 1
                        retries.report(f"connection to PandA at {where} failed: {exc!r}")
                        break
                    if not line:
                        counters.source_errors += 1
                        retries.report(f"PandA at {where} closed the connection")
                        break
                    received += 1
                    skipped = framer.skipped
                    try:
                        framed = framer.feed([line])
                    except FrameError as exc:
                        counters.malformed += 1
                        problems.report(received, str(exc))
                        continue
                    counters.discarded_outside_scan += framer.skipped - skipped
                    for _kind, out in framed:
                        yield make_stream_data(_TYP, out)
            finally:
                self._drop(stream, writer)
            await asyncio.sleep(cfg.upstream_reconnect_interval)

    async def _connect(self, stream: StreamName, host: str, port: int, retries: _RetryLog
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """An open data port connection after a good handshake, or None (logged, counted)."""
        timeout = self._pcap_settings.upstream_handshake_timeout
        where = f"{host}:{port}"
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=_MAX_LINE_BYTES), timeout)
        except OSError as exc:  # refused, unreachable, timed out
            self._source_counters.source_errors += 1
            retries.report(f"cannot connect to PandA at {where}: {exc!r}")
            return None
        answer: bytes | str
        try:
            writer.write(b"\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.readline(), timeout)
        except (OSError, ValueError) as exc:
            answer = repr(exc)
        if answer != b"OK\n":
            self._source_counters.source_errors += 1
            retries.report(f"PandA at {where} answered {answer[:80]!r} to the handshake, "
                           "expected b'OK\\n'")
            writer.close()
            return None
        self._writers[stream] = writer
        self.writer = writer
        self.log.info("stream %s: connected to PandA at %s", stream, where)
        return reader, writer

    def _drop(self, stream: StreamName, writer: asyncio.StreamWriter) -> None:
        if self._writers.get(stream) is writer:
            del self._writers[stream]
        if self.writer is writer:
            self.writer = None
        writer.close()

    async def stop_source(self, stream: StreamName) -> None:
        writer = self._writers.pop(stream, None)
        if writer is None:
            return
        if self.writer is writer:
            self.writer = None
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 2.0)
        except (OSError, TimeoutError):
            pass
