"""Full-speed routing guarantees (issue "Data plane at the limit", item 5).

One scan of 100,000 events over three STINS streams (two dense streams of 2×2 uint32 images
and a sparse one, each from its own ingester process) with every kind of cell mixed at random:
constraint ``i``, constraint ``i // 10``, broadcasts to the generic workers, a tagged broadcast
and a tagged constraint for the ``special`` worker, a cell naming a constraint and a tagged
broadcast, ``null`` cells and ``[]`` discards.  Three workers record every frame they get
(``tests.load_classes.FrameLog``); the test checks that every frame reached exactly the workers
its cell names, once, carrying the image its position in the stream says, and that every
constraint stayed on one worker.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from tests.ensemble import Ensemble, frame_logs
from tests.load_classes import END, HEADER, STREAM_INDEX
from tests.stins_source import StinsSource

N = 100_000
STREAMS = ("a", "b", "c")
assert [STREAM_INDEX[s] for s in STREAMS] == [0, 1, 2]  # the workers' stream numbering
WORKERS = ("w0", "w1", "special")  # bit w of a receiver mask = WORKERS[w]
GENERIC = 0b011
SPECIAL = 0b100

# Cell kinds.
NULL, DISCARD, UNIQ, GROUP, BCAST, SBCAST, SGROUP, MULTI = range(8)
#: Receiver masks the kinds allow; constraint kinds name one generic worker, which is checked
#: separately (one of w0 / w1, the same for every cell of the constraint).
FIXED_MASK = {NULL: 0, DISCARD: 0, BCAST: GENERIC, SBCAST: SPECIAL, SGROUP: SPECIAL}
ONE_GENERIC = {UNIQ: 0, GROUP: 0, MULTI: SPECIAL}  # kind → mask beside the generic worker
#: Constraint namespaces, so that ``i`` and ``i // 10`` values never collide.
GROUP_BASE = 1 << 20
SPECIAL_BASE = 1 << 21

# Kind probabilities per stream: two dense streams, one sparse.
DENSE = {UNIQ: 0.30, GROUP: 0.30, BCAST: 0.05, SBCAST: 0.05, SGROUP: 0.03, MULTI: 0.07,
         NULL: 0.10, DISCARD: 0.10}
SPARSE = {NULL: 0.90, UNIQ: 0.04, GROUP: 0.03, DISCARD: 0.02, BCAST: 0.01}

I64 = npt.NDArray[np.int64]


def draw_kinds(rng: np.random.Generator, n: int = N) -> dict[str, I64]:
    out = {}
    for stream, probs in zip(STREAMS, (DENSE, DENSE, SPARSE), strict=True):
        kinds = np.array(list(probs), dtype=np.int64)
        out[stream] = rng.choice(kinds, size=n, p=np.array(list(probs.values())))
    return out


def constraint_values(kinds: I64) -> I64:
    """The generic constraint value of each cell (-1 where there is none)."""
    rows = np.arange(len(kinds), dtype=np.int64)
    return np.select([kinds == UNIQ, (kinds == GROUP) | (kinds == MULTI)],
                     [rows, GROUP_BASE + rows // 10], -1)


def cells(kinds: I64) -> list[Any]:
    def vw(constraint: int | None, tag: str = "generic") -> dict[str, Any]:
        return {"constraint": constraint, "tags": [tag]}

    out: list[Any] = []
    for i, kind in enumerate(kinds.tolist()):
        if kind == NULL:
            out.append(None)
        elif kind == DISCARD:
            out.append([])
        elif kind == UNIQ:
            out.append([vw(i)])
        elif kind == GROUP:
            out.append([vw(GROUP_BASE + i // 10)])
        elif kind == BCAST:
            out.append([vw(None)])
        elif kind == SBCAST:
            out.append([vw(None, "special")])
        elif kind == SGROUP:
            out.append([vw(SPECIAL_BASE + i // 10, "special")])
        else:
            out.append([vw(GROUP_BASE + i // 10), vw(None, "special")])
    return out


def check_frame_logs(logs: dict[str, dict[str, I64]], kinds: dict[str, I64]) -> None:
    """Every frame reached exactly the workers its cell names, once, with the right image."""
    n = len(kinds["a"])
    assert sorted(logs) == sorted(WORKERS)
    parts = [(WORKERS.index(w), logs[w]) for w in WORKERS]
    who = np.concatenate([np.full(len(log["event"]), w, dtype=np.int64) for w, log in parts])
    event = np.concatenate([log["event"] for _w, log in parts])
    stream = np.concatenate([log["stream"] for _w, log in parts])
    ids = np.concatenate([log["id"] for _w, log in parts])
    assert stream.min() >= 0 and stream.max() < len(STREAMS)

    # the wrap events: every worker got the header and the series end of every stream, once
    for evn, fid in ((0, HEADER), (n + 1, END)):
        sel = event == evn
        assert (ids[sel] == fid).all()
        got = sorted(zip(who[sel].tolist(), stream[sel].tolist(), strict=True))
        assert got == [(w, s) for w in range(3) for s in range(3)], (evn, got)

    data = (event >= 1) & (event <= n)
    assert data.sum() == len(event) - 18, "records of events outside the scan"
    who, row, stream, ids = who[data], event[data] - 1, stream[data], ids[data]

    # once: no (worker, event, stream) twice
    cell = row * len(STREAMS) + stream
    seen = np.unique(cell * 4 + who)
    assert len(seen) == len(cell), f"{len(cell) - len(seen)} frames delivered twice"

    # the image: frame k of a stream is the k-th cell that consumes a frame (null does not)
    for s, name in enumerate(STREAMS):
        consumes = kinds[name] != NULL
        frame_of = np.cumsum(consumes) - 1
        sel = stream == s
        wrong = np.flatnonzero(ids[sel] != frame_of[row[sel]])
        assert len(wrong) == 0, (
            f"stream {name}: {len(wrong)} frames carry another image, e.g. event "
            f"{row[sel][wrong[0]] + 1} got image {ids[sel][wrong[0]]}, expected "
            f"{frame_of[row[sel][wrong[0]]]}")

    # the receivers of every cell
    flat = np.zeros(n * len(STREAMS), dtype=np.int64)
    np.bitwise_or.at(flat, cell, 1 << who)
    masks = flat.reshape(n, len(STREAMS))
    for s, name in enumerate(STREAMS):
        k, m = kinds[name], masks[:, s]
        for kind, want in FIXED_MASK.items():
            bad = np.flatnonzero((k == kind) & (m != want))
            assert len(bad) == 0, (name, kind, bad[:5] + 1, m[bad[:5]])
        for kind, extra in ONE_GENERIC.items():
            sel = k == kind
            generic = m[sel] & GENERIC
            ok = ((generic == 0b001) | (generic == 0b010)) & (m[sel] & SPECIAL == extra)
            bad = np.flatnonzero(sel)[~ok]
            assert len(bad) == 0, (name, kind, bad[:5] + 1, m[bad[:5]])

    # stickiness: every frame of a constraint went to the same worker, across streams
    values = np.concatenate([constraint_values(kinds[name]) for name in STREAMS])
    owner = np.concatenate([masks[:, s] & GENERIC for s in range(len(STREAMS))])
    sel = values >= 0
    pairs = np.unique(np.stack([values[sel], owner[sel]]), axis=1)
    split = len(pairs[0]) - len(np.unique(pairs[0]))
    assert split == 0, f"{split} constraints were split between workers"
    # both generic workers did work (the binding balanced them)
    assert (owner[sel] == 0b001).sum() > n // 10 and (owner[sel] == 0b010).sum() > n // 10


def model_routing(kinds: dict[str, I64]) -> dict[str, dict[str, I64]]:
    """Frame logs of a correct router (constraint ``v`` on worker ``v % 2``), for the check."""
    n = len(kinds["a"])
    rows: list[tuple[int, int, int, int]] = []  # (worker, event, stream, id)
    for s, name in enumerate(STREAMS):
        values = constraint_values(kinds[name])
        frame = -1
        for i, kind in enumerate(kinds[name].tolist()):
            frame += kind != NULL
            mask = FIXED_MASK.get(kind, ONE_GENERIC.get(kind, 0) | 1 << values[i] % 2)
            rows += [(w, i + 1, s, frame) for w in range(3) if mask >> w & 1]
        rows += [(w, evn, s, fid) for w in range(3) for evn, fid in ((0, HEADER), (n + 1, END))]
    table = np.array(rows, dtype=np.int64)
    return {w: {"event": table[table[:, 0] == i, 1], "stream": table[table[:, 0] == i, 2],
                "id": table[table[:, 0] == i, 3]} for i, w in enumerate(WORKERS)}


def test_the_check_catches_every_kind_of_misrouting() -> None:
    kinds = draw_kinds(np.random.default_rng(7), 3000)
    good = model_routing(kinds)
    check_frame_logs(good, kinds)

    def broken(worker: str, change: Any) -> dict[str, dict[str, I64]]:
        logs = {w: {k: v.copy() for k, v in log.items()} for w, log in good.items()}
        logs[worker] = change(logs[worker])
        return logs

    def first(log: dict[str, I64], kind: int, stream: int = 0) -> int:
        """Index of the first record of ``log`` for a ``kind`` cell of ``stream``."""
        n = len(kinds["a"])
        row = log["event"] - 1
        sel = (log["stream"] == stream) & (row >= 0) & (row < n)
        hits = np.flatnonzero(sel & (kinds[STREAMS[stream]][np.clip(row, 0, n - 1)] == kind))
        return int(hits[0])

    def drop(kind: int) -> Any:
        return lambda log: {k: np.delete(v, first(log, kind)) for k, v in log.items()}

    def twice(log: dict[str, I64]) -> dict[str, I64]:
        i = first(log, UNIQ)
        return {k: np.insert(v, i, v[i]) for k, v in log.items()}

    def shifted(log: dict[str, I64]) -> dict[str, I64]:
        log["id"][first(log, GROUP, 1)] += 1
        return log

    def moved(log: dict[str, I64]) -> dict[str, I64]:  # one frame of w0's to another event
        log["event"][first(log, GROUP)] += 1
        return log

    faults = {
        "lost constraint frame": broken("w0", drop(UNIQ)),
        "lost broadcast frame": broken("w1", drop(BCAST)),
        "lost tagged frame": broken("special", drop(SBCAST)),
        "lost wrap frame": broken("special", lambda log: {
            k: np.delete(v, np.flatnonzero(log["event"] == 0)[0]) for k, v in log.items()}),
        "duplicate": broken("w0", twice),
        "wrong image": broken("w1", shifted),
        "wrong event": broken("w0", moved),
    }
    # a constraint split: w1 takes over the second frame of a group w0 holds
    split = {w: {k: v.copy() for k, v in log.items()} for w, log in good.items()}
    w0 = split["w0"]
    candidates = np.flatnonzero((w0["stream"] == 0) & (w0["event"] >= 1)
                                & (w0["event"] <= 3000))
    groups = [i for i in candidates if kinds["a"][w0["event"][i] - 1] == GROUP]
    values = [constraint_values(kinds["a"])[w0["event"][i] - 1] for i in groups]
    i = next(groups[j + 1] for j in range(len(groups) - 1) if values[j] == values[j + 1])
    split["w1"] = {k: np.append(split["w1"][k], w0[k][i]) for k in w0}
    split["w0"] = {k: np.delete(w0[k], i) for k in w0}
    faults["split constraint"] = split
    for what, logs in faults.items():
        try:
            check_frame_logs(logs, kinds)
        except AssertionError:
            continue
        raise AssertionError(f"the check missed: {what}")


def test_hundred_thousand_mixed_events(ens: Ensemble) -> None:
    t0 = time.monotonic()
    kinds = draw_kinds(np.random.default_rng(20261124))
    frames = {s: int((kinds[s] != NULL).sum()) for s in STREAMS}
    body = {"parts": {"main": {s: cells(kinds[s]) for s in STREAMS}}, "sequence": ["main"]}
    sources = {s: StinsSource("tcp://127.0.0.1:0", shape=(2, 2), dtype="uint32", n=frames[s])
               for s in STREAMS}
    try:
        ens.controller()
        ens.reducer("tests.load_classes:FrameLogReducer")
        for w in WORKERS:
            ens.worker(w, "tests.load_classes:FrameLog",
                       tags=["special"] if w == "special" else None)
        for s in STREAMS:
            ens.ingester(s, sources[s].url)
        ens.wait_ready(list(STREAMS), list(WORKERS))
        t_ready = time.monotonic()
        ens.sequence(body)
        t_posted = time.monotonic()
        threads = [threading.Thread(target=src.send_series, daemon=True)
                   for src in sources.values()]
        for thread in threads:
            thread.start()
        progress = ens.wait_finished(timeout=120)
        t_done = time.monotonic()
        for thread in threads:
            thread.join(10)
        assert progress["completed_events"] == N + 2
        logs = frame_logs(ens)
        status = ens.get("/api/v1/status").json()
    finally:
        for src in sources.values():
            src.close()
    check_frame_logs(logs, kinds)
    assert status["lost_workers"] == {}
    for component, counters in status["components"].items():
        lost = {k: v for k, v in counters.items()
                if v and ("dropped" in k or "malformed" in k or "duplicate" in k)}
        assert not lost, (component, lost)
    print(f"\nstartup {t_ready - t0:.1f} s, POST {t_posted - t_ready:.1f} s, "
          f"scan {t_done - t_posted:.1f} s ({N / (t_done - t_posted):.0f} events/s), "
          f"check {time.monotonic() - t_done:.1f} s")
