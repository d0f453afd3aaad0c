"""The compiled trigger map and binding engine (`_triggermap`, `_binding`), driven directly."""

from __future__ import annotations

import numpy as np
import pytest

from dranspose_fast._binding import MAX_WORKERS, Engine
from dranspose_fast._triggermap import TriggerMap
from dranspose_fast.errors import MapError

# A cell is None (no frame) or a list of (local constraint or -1, tag mask).
Cell = list[tuple[int, int]] | None


def add_part(tm: TriggerMap, events: list[list[Cell]]) -> int:
    """Compile ``events[e][s]`` cells into ``tm``; constraint ids must be dense."""
    S = tm.n_streams
    kind, ptr, cons, masks = [], [0], [], []
    for row in events:
        assert len(row) == S
        for cell in row:
            kind.append(0 if cell is None else 1)
            for c, m in cell or []:
                cons.append(c)
                masks.append(m)
            ptr.append(len(cons))
    n_cons = max(cons, default=-1) + 1
    return tm.add_part(np.array(kind, np.uint8), np.array(ptr, np.int64),
                       np.array(cons, np.int32), np.array(masks, np.uint64), len(events), n_cons)


def build(events: list[list[Cell]], repeat: int = 1, streams: int | None = None,
          close: bool = True) -> TriggerMap:
    tm = TriggerMap(streams if streams is not None else len(events[0]))
    p = add_part(tm, events)
    tm.append(np.full(repeat, p, np.int32))
    if close:
        tm.close()
    return tm


def run(eng: Engine, rows: int, S: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    present = np.zeros((rows, S), np.uint8)
    masks = np.zeros((rows, S), np.uint64)
    n, bound = eng.bind(present, masks)
    return n, present[:n], masks[:n], bound


G = 1  # the "generic" tag bit in these tests
X = 2  # a second tag


def test_uniform_credit_accounting() -> None:
    tm = build([[[(i, G)]] for i in range(6)])
    eng = Engine(tm, 4)
    w0, w1 = eng.add_worker(G), eng.add_worker(G)
    eng.grant(w0, 2)
    eng.grant(w1, 1)
    n, present, masks, bound = run(eng, 10, 1)
    assert n == 3 and eng.next_event == 3
    assert present.tolist() == [[1], [1], [1]]
    # largest credit - pending first (w0: 2 > 1), then a 1:1 tie goes to the lowest slot
    assert masks[:, 0].tolist() == [1 << w0, 1 << w0, 1 << w1]
    assert [eng.credit(w0), eng.credit(w1)] == [0, 0] and eng.positive_credit == 0
    assert [eng.pending(w0), eng.pending(w1)] == [0, 0]
    assert bound.tolist() == [[0, 0, w0, 0], [0, 1, w0, 1], [0, 2, w1, 2]]
    n, *_ = run(eng, 10, 1)
    assert n == 0  # nobody has credit
    eng.grant(w1, 5)
    eng.grant(w0, -2)  # a revoke drives credit negative; it does not count as positive
    assert eng.positive_credit == 5
    n, _, masks, _ = run(eng, 10, 1)
    assert n == 3 and set(masks[:, 0].tolist()) == {1 << w1}
    assert eng.credit(w1) == 2


def test_big_constraint_drives_credit_negative_then_waits() -> None:
    tm = build([[[(0, G)]] for _ in range(10)], repeat=2)  # one 10-event constraint, twice
    eng = Engine(tm, 4)
    w = eng.add_worker(G)
    eng.grant(w, 1)
    n, _, masks, bound = run(eng, 100, 1)
    # bound whole although it exceeds the credit: the first instance is emitted entirely
    assert n == 10 and (masks == 1).all()
    assert bound.tolist() == [[0, 0, w, 0]]
    assert eng.credit(w) == -9 and eng.pending(w) == 0
    eng.grant(w, 9)
    assert run(eng, 100, 1)[0] == 0  # credit 0 binds nothing new
    eng.grant(w, 1)
    n, _, _, bound = run(eng, 100, 1)
    assert n == 10 and bound.tolist() == [[1, 0, w, 10]]  # fresh constraint per instance


def test_broadcast_blocks_on_worker_without_credit() -> None:
    tm = build([[[(-1, G)], None], [[(0, G)], [(0, G)]]])
    eng = Engine(tm, 8)
    w0, w1 = eng.add_worker(G), eng.add_worker(G | X)
    eng.grant(w0, 5)
    assert run(eng, 5, 2)[0] == 0  # w1 covers the broadcast but has no credit
    eng.grant(w1, 1)
    n, present, masks, _ = run(eng, 5, 2)
    assert n == 2
    assert present.tolist() == [[1, 0], [1, 1]]
    assert masks[0].tolist() == [(1 << w0) | (1 << w1), 0]
    assert eng.credit(w1) == 0


def test_broadcast_nobody_covers_and_discard_emit_freely() -> None:
    tm = build([[[(-1, X)], []], [None, None]])
    eng = Engine(tm, 8)
    eng.add_worker(G)  # no credit at all
    n, present, masks, _ = run(eng, 5, 2)
    assert n == 2
    assert present.tolist() == [[1, 1], [0, 0]]
    assert masks.tolist() == [[0, 0], [0, 0]]


def test_start_broadcast_before_big_lookahead_constraint_does_not_deadlock() -> None:
    # a broadcast head event, then a 10-event constraint bound ahead with the same credit
    tm = build([[[(-1, G)]]] + [[[(0, G)]] for _ in range(10)])
    eng = Engine(tm, 64)
    w = eng.add_worker(G)
    eng.grant(w, 2)
    n, _, masks, _ = run(eng, 100, 1)
    assert n == 11 and (masks == 1).all()
    assert eng.credit(w) == 2 - 11


def test_head_may_use_credit_reserved_for_later_events() -> None:
    # stream 0: constraint 0 over events 0..9; stream 1: constraint 1 at event 5, same tag
    events: list[list[Cell]] = [[[(0, X)], [(1, X)] if e == 5 else None] for e in range(10)]
    tm = build(events)
    eng = Engine(tm, 64)
    w = eng.add_worker(X)
    eng.grant(w, 1)
    assert run(eng, 100, 2)[0] == 5  # constraint 1 waits: credit is -4
    eng.grant(w, 4)
    assert run(eng, 100, 2)[0] == 0  # credit 0 < 1
    eng.grant(w, 1)
    n, _, masks, bound = run(eng, 100, 2)
    assert n == 5 and bound.tolist() == [[0, 1, w, 5]]
    assert masks[0].tolist() == [1 << w, 1 << w]


def test_keep_bound_returns_previous_bindings_too() -> None:
    tm = build([[[(i, G)]] for i in range(4)])
    eng = Engine(tm, 1)
    w = eng.add_worker(G)
    eng.grant(w, 10)
    first = run(eng, 2, 1)[3]
    rest = eng.bind(np.zeros((2, 1), np.uint8), np.zeros((2, 1), np.uint64), True)[1]
    assert first[:, 1].tolist() == [0, 1] and rest[:, 1].tolist() == [0, 1, 2, 3]


def test_horizon_limits_lookahead_binding() -> None:
    tm = build([[[(i, G)]] for i in range(10)])
    eng = Engine(tm, 3)
    w = eng.add_worker(G)
    eng.grant(w, 100)
    n, _, _, bound = run(eng, 1, 1)
    assert n == 1
    assert bound[:, 3].tolist() == [0, 1, 2]  # events 0 .. 0 + horizon - 1
    assert eng.pending(w) == 2


def test_lookahead_uses_only_uncommitted_credit() -> None:
    tm = build([[[(i, G)]] for i in range(3)])
    eng = Engine(tm, 8)
    w = eng.add_worker(G)
    eng.grant(w, 1)
    n, _, _, bound = run(eng, 10, 1)
    assert n == 1 and bound[:, 1].tolist() == [0]


def test_remove_worker_rebinds_unemitted_constraint() -> None:
    tm = build([[[(0, G)]] for _ in range(5)] + [[[(1, G)]]])
    eng = Engine(tm, 64)
    w0 = eng.add_worker(G)
    eng.grant(w0, 10)
    assert run(eng, 2, 1)[0] == 2
    assert eng.bound_worker(0, 0) == w0
    lost = eng.remove_worker(w0)
    # constraint 0 had 2 of 5 events emitted to w0; constraint 1 was bound ahead, none emitted
    assert sorted(lost.tolist()) == [[0, 0, 2], [0, 1, 0]]
    assert eng.bound_worker(0, 0) == -1
    w1 = eng.add_worker(G)
    assert w1 == w0  # the slot is reused
    eng.grant(w1, 10)
    n, _, masks, bound = run(eng, 10, 1)
    assert n == 4 and (masks == 1 << w1).all()
    assert sorted(bound.tolist()) == [[0, 0, w1, 0], [0, 1, w1, 5]]
    with pytest.raises(MapError, match="not in use"):
        eng.remove_worker(7)


def test_worker_limit() -> None:
    tm = build([[[(0, G)]]])
    eng = Engine(tm, 4)
    slots = [eng.add_worker(G) for _ in range(MAX_WORKERS)]
    assert slots == list(range(64))
    with pytest.raises(MapError, match="at most 64 workers"):
        eng.add_worker(G)
    eng.remove_worker(17)
    assert eng.add_worker(G) == 17
    assert eng.active_mask == (1 << 64) - 1
    eng.grant(63, 1)
    n, _, masks, _ = run(eng, 1, 1)
    assert n == 1 and int(masks[0, 0]) == 1 << 63  # only slot 63 had credit


def test_tags_gate_binding_and_set_mask() -> None:
    tm = build([[[(0, G | X)]]])
    eng = Engine(tm, 4)
    w = eng.add_worker(G)
    eng.grant(w, 3)
    assert run(eng, 4, 1)[0] == 0
    eng.set_mask(w, G | X)
    assert run(eng, 4, 1)[0] == 1


def test_same_worker_two_constraints_in_one_event_is_charged_once() -> None:
    tm = build([[[(0, G)], [(1, G)]]])
    eng = Engine(tm, 4)
    w = eng.add_worker(G)
    eng.grant(w, 1)
    n, _, masks, bound = run(eng, 4, 2)
    assert n == 1 and masks.tolist() == [[1, 1]] and len(bound) == 2
    assert eng.credit(w) == 0 and eng.pending(w) == 0


def test_open_sequence_append_while_binding() -> None:
    tm = TriggerMap(1)
    p = add_part(tm, [[[(0, G)]], [[(0, G)]]])
    tm.append(np.array([p], np.int32))
    eng = Engine(tm, 8)
    w = eng.add_worker(G)
    eng.grant(w, 100)
    assert run(eng, 10, 1)[0] == 2
    assert run(eng, 10, 1)[0] == 0 and not tm.closed
    q = add_part(tm, [[None], [[(-1, G)]], [[]]])
    tm.append(np.array([q, p], np.int32))
    n, present, masks, bound = run(eng, 10, 1)
    assert n == 5 and eng.next_event == 7
    assert present[:, 0].tolist() == [0, 1, 1, 1, 1]
    assert masks[:, 0].tolist() == [0, 1, 0, 1, 1]
    assert bound.tolist() == [[2, 0, w, 5]]
    tm.close()
    with pytest.raises(MapError, match="closed"):
        tm.append(np.array([p], np.int32))


def test_zero_length_instances_and_ring_growth() -> None:
    tm = TriggerMap(1)
    empty = add_part(tm, [])
    big = add_part(tm, [[[(i // 2, G)]] for i in range(300)])  # 150 constraints
    tm.append(np.array([empty, big, empty, empty, big, empty], np.int32))
    tm.close()
    assert tm.n_events == 600 and tm.locate(300) == (4, big, 0)
    eng = Engine(tm, 64)
    ws = [eng.add_worker(G) for _ in range(3)]
    for w in ws:
        eng.grant(w, 1000)
    n, _, masks, bound = run(eng, 1000, 1)
    assert n == 600 and len(bound) == 300
    # both events of a constraint go to the same worker
    assert (masks[0::2, 0] == masks[1::2, 0]).all()
    assert sum(eng.credit(w) for w in ws) == 3000 - 600


def test_add_part_rejects_inconsistent_arrays() -> None:
    tm = TriggerMap(2)
    u8, i64, i32, u64 = np.uint8, np.int64, np.int32, np.uint64
    with pytest.raises(MapError, match="do not match"):
        tm.add_part(np.ones(3, u8), np.arange(4, dtype=i64), np.zeros(3, i32),
                    np.ones(3, u64), 2, 1)
    with pytest.raises(MapError, match="not in"):
        tm.add_part(np.ones(2, u8), np.arange(3, dtype=i64), np.array([0, 5], i32),
                    np.ones(2, u64), 1, 1)
    with pytest.raises(MapError, match="never used"):
        tm.add_part(np.ones(2, u8), np.arange(3, dtype=i64), np.array([0, 0], i32),
                    np.ones(2, u64), 1, 2)
    with pytest.raises(MapError, match="kind 0"):
        tm.add_part(np.array([0, 1], u8), np.arange(3, dtype=i64), np.zeros(2, i32),
                    np.ones(2, u64), 1, 1)
    with pytest.raises(MapError, match="decreases"):
        tm.add_part(np.ones(2, u8), np.array([0, 2, 1], i64), np.zeros(1, i32),
                    np.ones(1, u64), 1, 1)
    with pytest.raises(MapError, match="not compiled"):
        tm.append(np.array([0], np.int32))
    assert tm.n_parts == 0


def test_bind_output_shape_checked_and_horizon_validated() -> None:
    tm = build([[[(0, G)], None]])
    eng = Engine(tm, 4)
    with pytest.raises(MapError, match="output rows"):
        eng.bind(np.zeros((2, 1), np.uint8), np.zeros((2, 1), np.uint64))
    with pytest.raises(MapError, match="horizon"):
        Engine(tm, 0)


def test_part_introspection() -> None:
    tm = TriggerMap(2)
    p = add_part(tm, [[[(0, G), (-1, X)], None], [[(1, G)], [(0, X)]], [[], [(-1, X)]]])
    assert tm.part_info(p) == (3, 2, 2)
    nev, cmask, first = tm.part_constraints(p)
    assert nev.tolist() == [2, 1] and cmask.tolist() == [G | X, G] and first.tolist() == [0, 1]
    kind, ptr, cons, masks = tm.event_cells(p, 1)
    assert kind.tolist() == [1, 1] and ptr.tolist() == [0, 1, 2]
    assert cons.tolist() == [1, 0] and masks.tolist() == [G, X]
    kind, ptr, cons, _ = tm.part_cells(p)
    assert kind.tolist() == [1, 0, 1, 1, 1, 1] and ptr[-1] == len(cons) == 5
    assert tm.pool_sizes()["event_broadcasts"] == 2
