"""Trigger-map parsing, validation, read-back and 0.2-style assignment scenarios."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dranspose_fast.errors import MapError
from dranspose_fast.mapping import (
    RESERVED_PART,
    BindingEngine,
    MappingSequence,
    parse_sequence,
)
from dranspose_fast.protocol import VirtualWorker


def vw(c: int | None = None, tags: list[str] | None = None) -> dict[str, Any]:
    return {"tags": tags or ["generic"], "constraint": c}


def drive(seq: MappingSequence, workers: dict[str, list[str]], credit: int = 10_000,
          max_events: int = 65536) -> list[dict[str, list[str]]]:
    """Bind the whole map with plenty of credit; one {stream: [workers]} per event."""
    eng = BindingEngine(seq)
    for name, tags in workers.items():
        eng.add_worker(name, tags)
        eng.grant(name, credit)
    out: list[dict[str, list[str]]] = []
    while not eng.finished:
        batch = eng.bind(max_events)
        assert batch.count > 0, f"stalled at event {eng.next_event}"
        for a in batch.to_assignments():
            assert a.event_number == len(out)
            out.append({str(k): list(v) for k, v in a.assignments.items()})
    return out


# === forms and read-back ===


def test_sequence_form_and_readback_shape() -> None:
    parts = {"main": {"a": [[vw(0)], [vw(1)], [vw(2)], [vw(3)]]}, "end": {"a": [[vw(0)]]}}
    seq = MappingSequence(parts, ["main", "main", "end"])
    assert len(seq) == 4 + 4 + 1 + 2
    js = seq.to_sequence_json()
    assert js["sequence"] == [RESERVED_PART, "main", "main", "end", RESERVED_PART]
    assert js["parts"]["main"] == {"mapping": parts["main"]}
    assert js["parts"][RESERVED_PART] == {"mapping": {"a": [[vw(None)]]}}
    json.dumps(js)  # plain JSON types only
    # the read-back (also the controller's dump) parses back to the same map
    again = parse_sequence(js)
    assert again.to_sequence_json() == js and len(again) == len(seq)


def test_single_map_form_and_wrapped_parts() -> None:
    single = parse_sequence({"a": [[vw(0)], None], "b": [[], [vw(1)]]}, all_wrap=False)
    assert single.sequence == ["main"] and single.streams == ("a", "b")
    wrapped = parse_sequence({"parts": {"x": {"mapping": {"a": [[vw(5)]]}}}, "sequence": ["x"]})
    assert wrapped.get_event_cells(1) == {"a": [VirtualWorker(constraint=5)]}
    assert wrapped.sequence == [RESERVED_PART, "x", RESERVED_PART]


def test_map_file_and_json_errors(tmp_path: Path) -> None:
    f = tmp_path / "mapping-x.json"
    f.write_text(json.dumps(MappingSequence.from_uniform(["a"], 3).to_sequence_json()))
    assert len(MappingSequence.from_file(f)) == 5
    f.write_text('{"parts": ')
    with pytest.raises(MapError, match=r"mapping-x.json: invalid JSON at line 1"):
        MappingSequence.from_file(f)
    f.write_text('{"a": [[{"constraint": -1}]]}')
    with pytest.raises(MapError, match=r"mapping-x.json: part 'main', stream 'a', event 0"):
        MappingSequence.from_file(f)
    with pytest.raises(MapError, match="cannot read"):
        MappingSequence.from_file(tmp_path / "missing.json")
    f.write_bytes(b'{"a": [\xff]}')
    with pytest.raises(MapError, match="not UTF-8 text"):
        MappingSequence.from_file(f)


def test_cells_accept_virtual_worker_objects_and_tuples() -> None:
    seq = MappingSequence.from_map(
        {"a": [[VirtualWorker(constraint=3)], ([{"tags": ("generic",), "constraint": 3}],)[0],
               [VirtualWorker(tags={"x"})]]}, all_wrap=False)
    assert seq.expand() == {"a": [[VirtualWorker(constraint=3)], [VirtualWorker(constraint=3)],
                                  [VirtualWorker(tags={"x"})]]}
    assert seq.compiled.part_info(0)[1] == 1  # one constraint spanning two events


def test_expand_pads_missing_streams_with_null() -> None:
    parts = {"p": {"a": [[vw(0)], [vw(1)]]}, "q": {"b": [[vw(0)]]}}
    seq = MappingSequence(parts, ["p", "q", "p"], all_wrap=False)
    ex = seq.expand()
    assert ex["a"] == [[VirtualWorker(constraint=0)], [VirtualWorker(constraint=1)], None,
                       [VirtualWorker(constraint=0)], [VirtualWorker(constraint=1)]]
    assert ex["b"] == [None, None, [VirtualWorker(constraint=0)], None, None]
    assert seq.locate(3) == (2, "p", 0)


# === all_wrap ===


def test_all_wrap_adds_broadcast_per_distinct_tag_set() -> None:
    parts = {"m": {"a": [[vw(0, ["x"])], [vw(1, ["x", "y"])], [vw(None, ["y", "x"])]],
                   "b": [None, [vw(1)], None]}}
    seq = MappingSequence(parts, ["m"])
    assert len(seq) == 3 + 2
    first, last = seq.get_event_cells(0), seq.get_event_cells(4)
    expect = [VirtualWorker(tags={"generic"}), VirtualWorker(tags={"x"}),
              VirtualWorker(tags={"x", "y"})]
    assert first == last == {"a": expect, "b": expect}
    unwrapped = MappingSequence(parts, ["m"], all_wrap=False)
    assert len(unwrapped) == 3 and RESERVED_PART not in unwrapped.part_names


def test_tag_specific_wrap_reaches_only_covering_workers() -> None:
    parts = {"m": {"a": [[vw(0, ["x"])], [vw(1, ["x"])]]}}
    ev = drive(MappingSequence(parts, ["m"]), {"wx": ["x"], "wg": ["generic"]})
    assert ev == [{"a": ["wx"]}, {"a": ["wx"]}, {"a": ["wx"]}, {"a": ["wx"]}]


def test_from_uniform() -> None:
    seq = MappingSequence.from_uniform(["b", "a", "a"], 10)
    assert len(seq) == 12 and seq.streams == ("a", "b")
    assert seq.min_workers() == 1
    assert seq.get_event_cells(3) == {"a": [VirtualWorker(constraint=2)],
                                      "b": [VirtualWorker(constraint=2)]}
    as_json = MappingSequence.from_map({s: [[vw(i)] for i in range(10)] for s in "ab"})
    assert as_json.to_sequence_json() == seq.to_sequence_json()
    with pytest.raises(MapError, match="number of events"):
        MappingSequence.from_uniform(["a"], -1)
    with pytest.raises(MapError, match="bad stream names"):
        MappingSequence.from_uniform([""], 3)
    with pytest.raises(MapError, match="empty or reserved"):
        MappingSequence.from_uniform(["a"], 3, part=RESERVED_PART)


def test_min_workers() -> None:
    parts = {"m": {"a": [[vw(2 * i)] for i in range(4)], "b": [[vw(2 * i + 1)] for i in range(4)]},
             "solo": {"a": [[vw(0), vw(1), vw(2)]]}}
    assert MappingSequence(parts, ["m"]).min_workers() == 2
    assert MappingSequence(parts, ["m", "solo"]).min_workers() == 3
    assert MappingSequence({"m": {"a": [[vw(None)], []]}}, ["m"]).min_workers() == 0


# === validation errors name part, stream and event ===


@pytest.mark.parametrize(
    ("cells", "pattern"),
    [
        ([None, [vw(True)]], r"part 'p', stream 'a', event 1: virtual worker 0.constraint: "
                             r"Input should be a valid integer"),
        ([[vw(-2)]], r"event 0: virtual worker 0.constraint: .*greater than or equal to 0"),
        ([[vw(2**63)]], r"event 0: virtual worker 0.constraint: .*less than or equal"),
        ([[{"constraint": 1.0}]], r"event 0: virtual worker 0.constraint"),
        ([[], [{"tags": "generic"}]], r"event 1: virtual worker 0.tags: .*valid list"),
        ([[{"tags": [""]}]], r"event 0: virtual worker 0.tags\[0\]: .*at least 1 character"),
        ([[{"tags": [3]}]], r"event 0: virtual worker 0.tags\[0\]: .*valid string"),
        ([[{"tags": [["x"]]}]], r"event 0: virtual worker 0.tags\[0\]"),
        ([[vw(0), 7]], r"event 0: virtual worker 1: .*valid dictionary"),
        ([{"constraint": 1}], r"event 0: cell: Input should be a valid list"),
        ([[VirtualWorker.model_construct(tags={"g"}, constraint=-4)]],
         r"event 0: invalid virtual worker"),
    ],
)
def test_bad_cells(cells: list[Any], pattern: str) -> None:
    with pytest.raises(MapError, match=pattern):
        MappingSequence({"p": {"a": cells}}, ["p"])


def test_structural_errors() -> None:
    with pytest.raises(MapError, match=r"part 'p': streams have unequal lengths \(a: 2, b: 1\)"):
        MappingSequence({"p": {"a": [None, None], "b": [None]}}, ["p"])
    with pytest.raises(MapError, match=r"sequence position 1: unknown part 'q'"):
        MappingSequence({"p": {"a": [None]}}, ["p", "q"])
    with pytest.raises(MapError, match="the sequence is empty"):
        MappingSequence({"p": {"a": [None]}}, [])
    with pytest.raises(MapError, match=r"part 'p': malformed part: a: .*a valid list"):
        MappingSequence({"p": {"a": 5}}, ["p"])
    with pytest.raises(MapError, match=r"malformed sequence: parts.p: .*valid dictionary"):
        MappingSequence({"p": [1]}, ["p"])
    with pytest.raises(MapError, match=r"malformed sequence: sequence: .*valid list"):
        parse_sequence({"parts": {"p": {"a": [None]}}})
    with pytest.raises(MapError, match="must be a JSON object"):
        parse_sequence([1, 2])
    with pytest.raises(MapError, match=r"malformed part: ''\.\[key\]: .*at least 1 character"):
        MappingSequence({"p": {"": [None]}}, ["p"])


def test_more_than_64_tags() -> None:
    cells = [[vw(None, [f"t{i}"])] for i in range(64)] + [[vw(None, ["t64"])]]
    with pytest.raises(MapError, match=r"part 'p', stream 'a', event 64: more than 64 distinct"):
        MappingSequence({"p": {"a": cells}}, ["p"], all_wrap=False)
    ok = MappingSequence({"p": {"a": cells[:64]}}, ["p"], all_wrap=False)
    assert len(ok.tags) == 64


# === 0.2 scenarios (test_mapping_parts), checked through the binding engine ===


def test_all_broadcast_and_multi_all() -> None:
    m = {"a": [[vw(None)], [vw(None)]], "b": [[vw(None)], None]}
    ev = drive(MappingSequence.from_map(m, all_wrap=False), {"w1": ["generic"], "w2": ["generic"]})
    assert ev == [{"a": ["w1", "w2"], "b": ["w1", "w2"]}, {"a": ["w1", "w2"]}]


def test_discard_partial_discard_and_null() -> None:
    m = {"a": [[], [vw(0)], [], None], "b": [[], [], [vw(1)], None]}
    ev = drive(MappingSequence.from_map(m, all_wrap=False), {"w1": ["generic"]})
    assert ev == [{"a": [], "b": []}, {"a": ["w1"], "b": []}, {"a": [], "b": ["w1"]}, {}]


def test_multi_stream_constraints_and_mixed_all() -> None:
    m = {"a": [[vw(2 * i)] for i in range(3)], "b": [[vw(2 * i + 1)] for i in range(3)],
         "c": [[vw(None)] for _ in range(3)]}
    seq = MappingSequence.from_map(m, all_wrap=False)
    assert seq.min_workers() == 2
    ev = drive(seq, {"w1": ["generic"], "w2": ["generic"]})
    for e in ev:
        assert sorted(e["a"] + e["b"]) == ["w1", "w2"]  # two constraints, two workers
        assert e["c"] == ["w1", "w2"]


def test_shared_constraint_goes_to_one_worker() -> None:
    m = {"a": [[vw(i // 3)] for i in range(9)], "b": [[vw(i // 3)] for i in range(9)]}
    ev = drive(MappingSequence.from_map(m, all_wrap=False),
               {"w1": ["generic"], "w2": ["generic"]}, credit=6)
    owners = [e["a"][0] for e in ev]
    assert [e["a"] == e["b"] for e in ev] == [True] * 9
    assert owners[0:3] == [owners[0]] * 3 and owners[3:6] == [owners[3]] * 3
    assert owners[0] != owners[3]


def test_repeated_part_gets_fresh_constraints() -> None:
    seq = MappingSequence({"p": {"a": [[vw(7)], [vw(7)]]}}, ["p", "p"], all_wrap=False)
    eng = BindingEngine(seq)
    eng.add_worker("w1")
    eng.add_worker("w2")
    eng.grant("w1", 2)
    eng.grant("w2", 2)
    batch = eng.bind()
    assert batch.count == 4
    assert batch.bound[:, :3].tolist() == [[0, 0, 0], [1, 0, 1]]
    assert seq.constraint_value(1, 0) == 7
    assert [a.assignments["a"] for a in batch.to_assignments()] == [["w1"]] * 2 + [["w2"]] * 2


def test_useless_worker_only_fits_later_part() -> None:
    parts = {"gen": {"a": [[vw(i)] for i in range(4)]},
             "use": {"a": [[vw(i, ["useless"])] for i in range(3)]}}
    ev = drive(MappingSequence(parts, ["gen", "use"]), {"g": ["generic"], "u": ["useless"]})
    assert len(ev) == 9
    assert ev[0] == ev[8] == {"a": ["g", "u"]}
    assert [e["a"] for e in ev[1:5]] == [["g"]] * 4
    assert [e["a"] for e in ev[5:8]] == [["u"]] * 3


def test_huge_sequence_compiles_without_expansion() -> None:
    big = MappingSequence({"p": {"a": [[vw(i)] for i in range(1000)]}}, ["p"] * 980)
    assert len(big) == 980 * 1000 + 2
    sizes = big.compiled.pool_sizes()
    assert sizes["cells"] == 1000 + 1 and sizes["instances"] == 982
    assert big.locate(500_001) == (501, "p", 0)
    many = MappingSequence({"one": {"a": [[vw(0)]], "b": [None]}}, ["one"] * 1_000_000)
    assert len(many) == 1_000_002
    assert many.compiled.pool_sizes()["vws"] == 1 + 2  # one part cell + the two wrap cells
    assert many.compiled.nbytes < 64 * 1_000_002  # O(sequence) bookkeeping, no cells
    assert many.get_event_cells(999_999) == {"a": [VirtualWorker(constraint=0)], "b": None}


def test_uniform_binding_spreads_over_workers() -> None:
    ev = drive(MappingSequence.from_uniform(["a", "b"], 100, all_wrap=False),
               {f"w{i}": ["generic"] for i in range(4)}, credit=25)
    per = {w: sum(1 for e in ev if e["a"] == [w]) for w in ("w0", "w1", "w2", "w3")}
    assert per == {"w0": 25, "w1": 25, "w2": 25, "w3": 25}


# === open sequences (reactive scans) ===


def test_append_while_consuming_then_close() -> None:
    parts = {"p": {"a": [[vw(0)], [vw(0)]], "b": [None, [vw(None)]]}}
    seq = MappingSequence(parts, ["p"], closed=False)
    assert seq.total_events is None and seq.known_events == 3
    with pytest.raises(MapError, match="no length"):
        len(seq)
    eng = BindingEngine(seq)
    eng.add_worker("w1")
    eng.grant("w1", 100)
    assert eng.bind().count == 3 and not eng.finished
    seq.add_part("q", {"a": [[vw(1, ["x"])]]})  # a new tag: the engine refreshes masks
    seq.append(["q", "p"])
    eng.add_worker("wx", ["x"])
    eng.grant("wx", 100)
    b = eng.bind()
    assert b.count == 3 and [a.assignments for a in b.to_assignments()] == [
        {"a": ["wx"]}, {"a": ["w1"]}, {"a": ["w1"], "b": ["w1"]}]
    seq.close()
    assert seq.total_events == 7 and seq.sequence[-1] == RESERVED_PART
    b = eng.bind()
    # the closing broadcast covers the tag set {x} that appeared while open
    assert b.count == 1 and b.to_assignments()[0].assignments == {"a": ["w1", "wx"],
                                                                  "b": ["w1", "wx"]}
    assert eng.finished
    with pytest.raises(MapError, match="closed"):
        seq.append(["p"])


def test_open_sequence_errors() -> None:
    seq = MappingSequence({"p": {"a": [None]}}, [], closed=False)
    with pytest.raises(MapError, match="already defined"):
        seq.add_part("p", {"a": [None]})
    with pytest.raises(MapError, match="reserved"):
        seq.add_part(RESERVED_PART, {"a": [None]})
    with pytest.raises(MapError, match=r"streams \['z'\] are not among"):
        seq.add_part("q", {"z": [None]})
    with pytest.raises(MapError, match="unknown part 'nope'"):
        seq.append(["nope"])
    with pytest.raises(MapError, match="unknown part 'reserved_start_end'"):
        seq.append([RESERVED_PART])


def test_part_min_workers_and_forgetting_unused_parts() -> None:
    seq = MappingSequence({"p": {"a": [[vw(0), vw(1)], [vw(2)], None]}}, [], closed=False)
    assert seq.part_min_workers("p") == 2
    seq.add_part("q", {"a": [[vw(0), vw(1), vw(2)]]})
    assert seq.part_min_workers("q") == 3
    seq.append(["p"])
    with pytest.raises(MapError, match="'p' is in the sequence"):
        seq.forget_parts(["p"])
    seq.forget_parts(["q"])
    assert "q" not in seq.part_names
    with pytest.raises(MapError, match="unknown part 'q'"):
        seq.part_min_workers("q")
    seq.add_part("q", {"a": [None]})  # the name is free again


# === engine wrapper ===


def test_engine_wrapper_errors_and_status() -> None:
    seq = MappingSequence.from_uniform(["a"], 4, all_wrap=False)
    eng = BindingEngine(seq, horizon=2)
    assert eng.horizon == 2
    eng.add_worker("w1", ["generic", "other"])
    with pytest.raises(MapError, match="already registered"):
        eng.add_worker("w1")
    with pytest.raises(MapError, match="collection of strings"):
        eng.add_worker("w2", "generic")
    with pytest.raises(MapError, match="unknown worker"):
        eng.grant("nobody", 1)
    with pytest.raises(MapError, match="int >= 0"):
        eng.grant("w1", -1)
    with pytest.raises(MapError, match="horizon"):
        BindingEngine(seq, horizon=0)
    eng.grant("w1", 1)
    b = eng.bind()
    assert b.count == 1 and eng.bound_worker(0, 0) == "w1" and eng.bound_worker(0, 1) is None
    assert eng.credit("w1") == 0 and eng.pending("w1") == 0
    lost = eng.remove_worker("w1")
    assert lost.shape == (0, 3) and eng.workers == {}


def test_bind_grows_past_the_first_rows() -> None:
    seq = MappingSequence.from_map({"a": [None] * 3000 + [[vw(0)]]})  # free events first
    eng = BindingEngine(seq)
    eng.add_worker("w")
    eng.grant("w", 2)
    b = eng.bind()
    assert b.count == 3002 and b.present.shape == (3002, 1)
    assert b.bound.tolist() == [[1, 0, 0, 3001]]
    assert b.to_assignments()[3001].assignments == {"a": ["w"]}


def test_batch_arrays() -> None:
    seq = MappingSequence.from_map({"a": [[vw(0)], None], "b": [[], [vw(None)]]}, all_wrap=False)
    eng = BindingEngine(seq)
    w = eng.add_worker("w")
    eng.grant("w", 5)
    b = eng.bind()
    assert b.first_event == 0 and b.count == 2 and b.streams == ("a", "b")
    assert b.present.tolist() == [[1, 1], [0, 1]]
    assert b.masks.dtype == np.uint64 and b.masks.tolist() == [[1 << w, 0], [0, 1 << w]]
    assert b.workers(1, 1) == ["w"] and b.worker_names == {w: "w"}
