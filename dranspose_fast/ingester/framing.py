"""Protocol framing for the built-in ingesters: upstream messages in, event messages out.

Every protocol dranspose 0.2 speaks turns upstream messages into event messages by its own
rules: Xspress3 may send an image as three separate messages, PandA PCAP packs many rows in
one message, LeCroy spreads one trigger over several, contrast sends heartbeats.  A ``Framer``
holds those rules and nothing else (no sockets, no threads): ``feed`` takes one upstream
message and returns the event messages it completes, each tagged ``START``, ``DATA`` or ``END``.

The same framer serves both paths of an ingester:

* ``FramedSource``: the data loop reads the upstream socket itself (the fast path).
* ``FramedIngester.run_source``: the 0.2 extension API, an async generator that a user
  subclass can wrap (``async for data in super().run_source(stream)``).

Phases are the series rules every 0.2 ingester follows: wait for a start message, forward
through the end message, then drain until the next scan.  A message that breaks them (data
before the start, a second start) or that cannot be read is dropped and counted as
``malformed`` (one of a type the protocol does not know as ``dropped_unknown_type``);
``ProblemLog`` writes at most one line per stream every few seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any, ClassVar, Final, Literal

import zmq
from pydantic import BaseModel, ValidationError

from dranspose_fast.errors import DecodeError
from dranspose_fast.event import StreamData, make_stream_data
from dranspose_fast.ingester.service import Ingester, IsSoftwareTriggered
from dranspose_fast.ingester.sources import (
    DATA,
    DONE,
    END,
    OUTSIDE,
    RUNNING,
    START,
    WAIT_START,
    Counters,
    UpstreamSettings,
    UpstreamSource,
)
from dranspose_fast.middlewares._json_and_dtypes import JsonRefused, json_object
from dranspose_fast.protocol import StreamName

__all__ = [
    "FrameError", "FramedIngester", "FramedSettings", "FramedSource", "Framer", "Framed",
    "ProblemLog", "UnknownMessageType", "check_model", "count_dropped", "json_head",
]

#: An event message: its kind (``START``, ``DATA`` or ``END``) and its frames.
Framed = tuple[int, list[Any]]

#: Seconds between two log lines about dropped messages of one stream.
PROBLEM_LOG_INTERVAL: Final[float] = 5.0


class FrameError(DecodeError):
    """An upstream message breaks its protocol; ``field`` names what is wrong in it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class UnknownMessageType(FrameError):
    """An upstream message of a type its protocol does not know (a newer firmware's, say):
    dropped and counted as ``dropped_unknown_type``, not as malformed."""


def count_dropped(counters: Counters, exc: FrameError) -> None:
    """Count one upstream message that ``Framer.feed`` refused."""
    if isinstance(exc, UnknownMessageType):
        counters.dropped_unknown_type += 1
    else:
        counters.malformed += 1


class Framer:
    """One stream's protocol rules (override ``feed``; keep state for reassembly only).

    ``typ`` is the ``StreamData.typ`` of the event messages (dranspose 0.2's strings).
    """

    typ: ClassVar[str] = "multipart"

    def reset(self) -> None:
        """A new scan starts: forget any partial message."""

    def message_index(self, frames: list[Any]) -> int | None:
        """An event message's position in its series by the protocol's own numbers (the
        start message is 0); ``None``: it carries none (the default)."""
        return None

    def feed(self, frames: list[Any]) -> Sequence[Framed]:
        """The event messages this upstream message completes (often one, may be none).

        Raises
        ------
        FrameError
            if the message cannot be read; it is dropped and counted.
        """
        return ((DATA, frames),)


def json_head(frame: Any, where: str) -> dict[str, Any]:
    """A message's JSON part as an object, read as 0.2 read it (NaN, Infinity too).

    Raises
    ------
    FrameError
        naming ``where`` (e.g. ``"frame 0"``) if it is not a JSON object.
    """
    try:
        return json_object(frame)
    except JsonRefused as exc:
        raise FrameError(where, str(exc)) from None


def check_model(model: type[BaseModel], frame: Any, where: str) -> None:
    """0.2's pydantic rules for a JSON part that is not exactly typed (the slow path).

    Raises
    ------
    FrameError
        naming ``where`` and the first field that fails.
    """
    try:
        model.model_validate_json(bytes(frame))
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"])
        raise FrameError(f"{where} field {field!r}", err["msg"]) from None


class ProblemLog:
    """Counts one stream's dropped messages and logs at most one line per interval."""

    def __init__(self, log: logging.Logger, stream: StreamName,
                 interval: float = PROBLEM_LOG_INTERVAL) -> None:
        self.log = log
        self.stream = stream
        self.interval = interval
        self._last = -interval
        self._since = 0

    def report(self, message_number: int, problem: str) -> None:
        self._since += 1
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self.log.warning("stream %s: dropped message %d: %s (%d dropped since the last line)",
                         self.stream, message_number, problem, self._since)
        self._last = now
        self._since = 0


class SeriesPhases:
    """The series rules, applied to framed messages: what to keep and what to drop."""

    def __init__(self, stream: StreamName, counters: Counters, problems: ProblemLog) -> None:
        self.stream = stream
        self.counters = counters
        self.problems = problems
        self.phase = OUTSIDE

    def keep(self, kind: int, message_number: int) -> bool:
        """Whether a framed message is forwarded; advances the phase."""
        phase = self.phase
        if phase == RUNNING:
            if kind == START:
                self._malformed(message_number, "a series start inside a running series")
                return False
            if kind == END:
                self.phase = DONE
            return True
        if phase == WAIT_START:
            if kind == START:
                self.phase = RUNNING
                return True
            self._malformed(message_number, "data before its series start")
            return False
        self.counters.discarded_outside_scan += 1
        return False

    def _malformed(self, message_number: int, problem: str) -> None:
        self.counters.malformed += 1
        self.problems.report(message_number, problem)


class FramedSource(UpstreamSource):
    """An upstream read by the data loop, framed by its protocol's ``Framer``."""

    series = True

    def __init__(self, framer: Framer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.framer = framer
        self.typ = framer.typ
        self.problems = ProblemLog(self.log, self.stream)
        self.rules = SeriesPhases(self.stream, self.counters, self.problems)
        #: Upstream messages received since the socket opened (numbers in log lines).
        self.received = 0

    def begin(self) -> None:
        super().begin()
        self.framer.reset()
        self.rules.phase = WAIT_START

    def resume(self, saved_position: int) -> None:
        super().resume(saved_position)
        self.rules.phase = RUNNING

    def end(self) -> None:
        super().end()
        self.rules.phase = OUTSIDE

    def message_index(self, frames: list[Any]) -> int | None:
        return self.framer.message_index(frames)

    def _receive(self, want: int, limit: int) -> None:
        sock = self.socket
        if sock is None:
            return
        msgs = self.msgs
        rules = self.rules
        missing = want - (len(msgs) - self.head)
        drained = 0
        while missing > 0 and drained < limit:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self.received += 1
            try:
                framed = self.framer.feed(frames)
            except FrameError as exc:
                count_dropped(self.counters, exc)
                self.problems.report(self.received, str(exc))
                drained += 1  # a flood of bad messages must not hold the data loop
                continue
            for kind, out in framed:
                waiting = rules.phase == WAIT_START
                if rules.keep(kind, self.received):
                    msgs.append(out)
                    missing -= 1
                    if waiting:
                        self._started(out)
                else:
                    drained += 1
            self.phase = rules.phase
            if self.phase == DONE:
                return  # what follows belongs to no scan: the next fill drains it


class FramedSettings(UpstreamSettings):
    """The upstream URL of a framed ingester (``UPSTREAM_URL``, or ``UPSTREAM_URLS``)."""


_SOCKET_TYPES: Final = {"PULL": zmq.PULL, "SUB": zmq.SUB}


class FramedIngester(Ingester):
    """Base of the built-in protocol ingesters: set ``framer_class`` and ``socket_type``.

    The data loop reads the upstream itself unless a subclass overrides ``run_source``; then
    ``super().run_source(stream)`` yields the same event messages from an asyncio socket.
    """

    framer_class: ClassVar[type[Framer]] = Framer
    socket_type: ClassVar[Literal["PULL", "SUB"]] = "SUB"
    settings_class: ClassVar[type[UpstreamSettings]] = FramedSettings
    #: The attribute dranspose 0.2's ingester kept its settings under (e.g.
    #: ``"_streaming_xspress_settings"``): set too, for subclasses that read it.
    settings_attribute: ClassVar[str | None] = None

    def __init__(self, settings: UpstreamSettings | None = None) -> None:
        settings = settings if settings is not None else self.settings_class()
        self._upstream_settings = settings
        if self.settings_attribute is not None:
            setattr(self, self.settings_attribute, settings)
        super().__init__(settings)
        self._in_sockets: dict[StreamName, zmq.Socket[Any]] = {}

    def direct_source(self, stream: StreamName) -> UpstreamSource | None:
        if type(self).run_source is not FramedIngester.run_source:
            return None  # a subclass brought its own generator: honour it
        cfg = self._upstream_settings
        return FramedSource(self.framer_class(), self.zmq_context, stream, cfg.url_of(stream),
                            self.counters, self.log, _SOCKET_TYPES[self.socket_type],
                            rcvhwm=cfg.hwm)

    async def run_source(
        self, stream: StreamName
    ) -> AsyncGenerator[StreamData | IsSoftwareTriggered, None]:
        """The event messages of one series, then nothing (drains until closed)."""
        cfg = self._upstream_settings
        sock = self.ctx.socket(_SOCKET_TYPES[self.socket_type])
        sock.setsockopt(zmq.RCVHWM, cfg.hwm)
        if self.socket_type == "SUB":
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(cfg.url_of(stream))
        self._in_sockets[stream] = sock
        self.log.info("stream %s: connected to %s", stream, cfg.url_of(stream))
        framer = self.framer_class()
        counters = self._source_counters
        problems = ProblemLog(self.log, stream)
        rules = SeriesPhases(stream, counters, problems)
        rules.phase = WAIT_START
        received = 0
        while True:
            frames = await sock.recv_multipart(copy=False)
            received += 1
            try:
                framed = framer.feed(frames)
            except FrameError as exc:
                count_dropped(counters, exc)
                problems.report(received, str(exc))
                continue
            for kind, out in framed:
                if rules.keep(kind, received):
                    yield make_stream_data(framer.typ, out)

    async def stop_source(self, stream: StreamName) -> None:
        sock = self._in_sockets.pop(stream, None)
        if sock is not None:
            sock.close(linger=0)


# The kinds, re-exported for framers.
__all__ += ["DATA", "END", "START"]
