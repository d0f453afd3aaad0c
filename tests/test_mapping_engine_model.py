"""Property test: the binding engine against a small pure-Python model of the rules.

Random maps (1-4 streams; constraints spanning several events; broadcasts with random tag
sets; ``[]`` and ``null``), random workers and tags, random credit/completion orders. The
model checks every emitted frame's receivers, constraint stickiness, tag coverage, in-order
emission, the horizon, the credit/pending accounting, the outstanding-delivery bound, and
liveness: the engine only ever stops at the first event holding a constraint no worker covers.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dranspose_fast.mapping import BindingEngine, MappingSequence

TAGS = ["generic", "a", "b"]

vws = st.builds(lambda c, t: {"tags": sorted(t), "constraint": c},
                st.one_of(st.none(), st.integers(0, 3)),
                st.sets(st.sampled_from(TAGS), min_size=1, max_size=2))
cells = st.one_of(st.none(), st.just([]), st.lists(vws, min_size=1, max_size=2))


@st.composite
def scans(draw: st.DrawFn) -> dict[str, Any]:
    streams = [f"s{i}" for i in range(draw(st.integers(1, 4)))]
    parts = {}
    for p in range(draw(st.integers(1, 2))):
        n = draw(st.integers(0, 6))
        own = draw(st.lists(st.sampled_from(streams), min_size=1, unique=True))
        parts[f"p{p}"] = {s: draw(st.lists(cells, min_size=n, max_size=n)) for s in own}
    seq = draw(st.lists(st.sampled_from(sorted(parts)), min_size=1, max_size=4))
    workers = draw(st.lists(st.tuples(st.sets(st.sampled_from([*TAGS, "zzz"]), min_size=1,
                                              max_size=3), st.integers(1, 4)),
                            min_size=1, max_size=4))
    return {"parts": parts, "seq": seq, "wrap": draw(st.booleans()), "workers": workers,
            "horizon": draw(st.integers(1, 6)), "split": draw(st.integers(0, len(seq))),
            "open": draw(st.booleans())}


@settings(max_examples=150, deadline=None)
@given(scan=scans(), data=st.data())
def test_engine_matches_model(scan: dict[str, Any], data: st.DataObject) -> None:
    ref = MappingSequence(scan["parts"], scan["seq"], all_wrap=scan["wrap"])
    total = len(ref)
    if scan["open"]:
        live = MappingSequence(scan["parts"], scan["seq"][: scan["split"]],
                               all_wrap=scan["wrap"], closed=False)
    else:
        live = ref
    streams = ref.streams
    assert live.streams == streams
    events = [ref.get_event_cells(e) for e in range(total)]
    inst_of = [ref.locate(e)[0] for e in range(total)]
    # constraint (instance, value) -> its events and union of tags
    c_events: dict[tuple[int, int], list[int]] = defaultdict(list)
    c_tags: dict[tuple[int, int], set[str]] = defaultdict(set)
    ev_cons: list[set[tuple[int, int]]] = []
    for e, ev in enumerate(events):
        keys = set()
        for cell in ev.values():
            for v in cell or []:
                if v.constraint is not None:
                    key = (inst_of[e], int(v.constraint))
                    keys.add(key)
                    c_tags[key] |= set(v.tags)
        for key in keys:
            c_events[key].append(e)
        ev_cons.append(keys)

    eng = BindingEngine(live, horizon=scan["horizon"])
    wtags: dict[str, set[str]] = {}
    granted: dict[str, int] = {}
    for i, (tags, credit) in enumerate(scan["workers"]):
        name = f"w{i}"
        eng.add_worker(name, tags)
        eng.grant(name, credit)
        wtags[name], granted[name] = set(tags), credit
    names = sorted(wtags)
    blocked = next((e for e in range(total) if any(
        not any(c_tags[k] <= wtags[w] for w in names) for k in ev_cons[e])), total)

    charged = dict.fromkeys(names, 0)
    outstanding = dict.fromkeys(names, 0)
    bound_to: dict[tuple[int, int], str] = {}
    remaining = {k: len(v) for k, v in c_events.items()}
    worst = dict.fromkeys(names, 0)  # bound on charged - granted (see docs/mapping.md)
    appended = not scan["open"]
    nxt = 0

    def reserved(w: str) -> int:
        return sum(remaining[k] for k, ww in bound_to.items() if ww == w)

    for _ in range(4 * total + 10):
        before = {w: reserved(w) for w in names}
        batch = eng.bind(data.draw(st.integers(1, 6), label="max_events"))
        assert batch.first_event == nxt  # contiguous, in order
        new = dict.fromkeys(names, 0)
        for inst, local, slot, first in batch.bound.tolist():
            w = batch.worker_names[slot]
            key = (inst, live.constraint_value(inst, local))
            assert key not in bound_to, f"constraint {key} bound twice"
            assert c_tags[key] <= wtags[w], f"{w} does not cover {key}"
            assert first == c_events[key][0]
            assert first < batch.first_event + batch.count + scan["horizon"]
            bound_to[key] = w
            new[w] += len(c_events[key])
        for w in names:
            worst[w] = max(worst[w], before[w] + new[w])
        for row in range(batch.count):
            e = nxt + row
            got: set[str] = set()
            for j, s in enumerate(streams):
                cell = events[e][s]
                assert batch.present[row, j] == (cell is not None)
                expect = set()
                for v in cell or []:
                    if v.constraint is None:
                        expect |= {w for w in names if set(v.tags) <= wtags[w]}
                    else:
                        expect.add(bound_to[(inst_of[e], int(v.constraint))])
                assert set(batch.workers(row, j)) == expect, f"event {e} stream {s}"
                got |= expect
            for w in got:
                charged[w] += 1
                outstanding[w] += 1
            for key in ev_cons[e]:
                remaining[key] -= 1
        nxt += batch.count
        for w in names:
            assert eng.credit(w) == granted[w] - charged[w]
            assert eng.pending(w) == reserved(w)
            assert charged[w] - granted[w] <= worst[w]
        if eng.finished:
            break
        if batch.count == 0:
            if any(outstanding.values()):
                todo = dict(outstanding)  # nothing moves: let every worker finish its work
            elif not appended:
                live.append(scan["seq"][scan["split"]:])
                live.close()
                appended = True
                continue
            else:
                break  # stalled for good
        else:
            todo = {w: data.draw(st.integers(0, outstanding[w]), label=w) for w in names}
        for w, k in todo.items():
            if k:
                outstanding[w] -= k
                granted[w] += k
                eng.grant(w, k)
    else:
        raise AssertionError("the driver loop did not terminate")
    assert nxt == blocked
    assert eng.finished == (blocked == total)
