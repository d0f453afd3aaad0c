"""Replay of 0.2-style classes: merging, dispatch, parameters, tick/timer, errors, processes."""

import json
import threading

import pytest

from dranspose_fast.replay import replay

W = "tests.classes02:EchoWorker"
R = "tests.classes02:EchoReducer"


def run(**kwargs):
    """Replay and return (report, reducer publish) via a capturing reducer hook."""
    captured = {}
    import dranspose_fast.replay.run as mod

    original = mod.ReducerHost

    class Capture(original):  # type: ignore[misc, valid-type]
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            captured["reducer"] = self

    mod.ReducerHost = Capture
    try:
        report = replay(kwargs.pop("w", W), kwargs.pop("r", R), **kwargs)
    finally:
        mod.ReducerHost = original
    return report, captured["reducer"].instance


def test_source_streams_merge_by_event_and_short_inputs_do_not_end_the_replay() -> None:
    report, reducer = run(source="tests.classes02:CountingSource", seed=1)
    results = reducer.publish["results"]
    # 20 events from the long stream; the short one ended after event 8 and the replay went on.
    assert sorted(int(k) for k in results) == list(range(20))
    assert report.events == 20
    # event 0 is broadcast to both workers, the rest go to one worker each
    assert len(results["0"]) == 2 and all(len(v) == 1 for k, v in results.items() if k != "0")
    assert report.deliveries == 21 and report.results == 21
    for k, (first, *_) in results.items():
        want = {"fast"} | ({"slow"} if int(k) % 2 == 0 and int(k) < 10 else set())
        assert set(first["frames"]) == want, k
    assert reducer.finished


def test_parameters_file_values_and_defaults(tmp_path) -> None:
    pfile = tmp_path / "params.json"
    pfile.write_text(
        json.dumps([{"name": "int_param", "data": "42"}, {"name": "extra", "data": "x"}])
    )
    _, reducer = run(source="tests.classes02:CountingSource", parameter_file=pfile)
    first = reducer.publish["results"]["3"][0]
    assert first["int_param"] == 42  # parsed through IntParameter
    assert first["roi1"] == "bla"  # default from describe_parameters


def test_bad_parameter_file_names_the_file(tmp_path) -> None:
    from dranspose_fast.errors import ParameterFileError

    bad = tmp_path / "p.json"
    bad.write_text('{"not": "a list"}')
    with pytest.raises(ParameterFileError, match="p.json"):
        run(source="tests.classes02:CountingSource", parameter_file=bad)


def test_slides_style_classes_without_arguments() -> None:
    report, reducer = run(
        w="tests.classes02:SlidesWorker",
        r="tests.classes02:SlidesReducer",
        source="tests.classes02:CountingSource",
        nworkers=3,
    )
    assert sorted(map(int, reducer.publish["map"])) == list(range(20))
    assert report.deliveries == 22


def test_user_exceptions_are_counted_and_the_replay_goes_on(caplog) -> None:
    report, reducer = run(
        w="tests.classes02:FailingWorker",
        source="tests.classes02:CountingSource",
        broadcast_first=False,
    )
    failing = [e for e in range(20) if e % 3 == 0]
    assert report.worker_errors == len(failing)
    assert sorted(int(k) for k in reducer.publish["results"]) == [e for e in range(20) if e % 3]
    assert "user bug at event 9" in caplog.text


def test_timer_runs_and_ticks_are_rate_limited() -> None:
    report, reducer = run(source="tests.classes02:SlowSource")
    assert reducer.timer_calls >= 3  # 30 events × 50 ms, timer every 50 ms
    assert reducer.publish["params"]["roi1"] == b"bla"


def test_rate_paces_the_replay() -> None:
    report, _ = run(source="tests.classes02:CountingSource", rate=200.0)
    assert report.seconds >= 19 / 200


def test_processes_mode_gives_the_same_results() -> None:
    report, reducer = run(
        source="tests.classes02:CountingSource", processes=True, seed=3, nworkers=2
    )
    results = reducer.publish["results"]
    assert sorted(int(k) for k in results) == list(range(20))
    assert report.deliveries == 21 and report.results == 21
    assert {r["worker"] for v in results.values() for r in v} == {
        "replay-worker-0",
        "replay-worker-1",
    }


def test_processes_mode_counts_worker_errors() -> None:
    report, reducer = run(
        w="tests.classes02:FailingWorker",
        source="tests.classes02:CountingSource",
        processes=True,
        broadcast_first=False,
    )
    assert report.worker_errors == 7
    assert len(reducer.publish["results"]) == 13


def test_keep_alive_serves_until_stopped() -> None:
    stop = threading.Event()
    urls: list[str] = []
    done = threading.Event()
    thread = threading.Thread(
        target=replay,
        args=(W, R),
        kwargs=dict(
            source="tests.classes02:CountingSource",
            port=0,
            stop_event=stop,
            done_event=done,
            on_server=urls.append,
        ),
    )
    thread.start()
    try:
        assert done.wait(30)
        import httpx

        answer = httpx.get(urls[0] + "api/v1/parameter/roi1")
        assert answer.status_code == 200 and answer.content == b"bla"
        assert httpx.post(urls[0] + "api/v1/parameter/int_param", content=b"7").status_code == 200
        assert httpx.get(urls[0] + "api/v1/parameter/int_param").content == b"7"
        assert httpx.get(urls[0] + "api/v1/parameter/nope").status_code == 404
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def _map_file(tmp_path, cells) -> str:
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"parts": {"main": cells}, "sequence": ["main"]}))
    return str(path)


def test_map_binds_constraints_to_one_worker_each(tmp_path) -> None:
    # 18 data events, constraint i // 3: stateful workers must see whole triples
    cells = {"fast": [[{"constraint": i // 3}] for i in range(18)]}
    report, reducer = run(
        w="tests.classes02:StatefulWorker",
        r="tests.classes02:CollectReducer",
        source="tests.classes02:CountingSource",
        map_file=_map_file(tmp_path, cells),
        nworkers=3,
    )
    by_event = reducer.publish["by_event"]
    # event 0 and 19 are the automatic start/end broadcasts (all_wrap)
    assert sorted(w for w, _ in by_event[0]) == [f"replay-worker-{i}" for i in range(3)]
    assert sorted(w for w, _ in by_event[19]) == [f"replay-worker-{i}" for i in range(3)]
    for triple in range(6):
        events = [1 + 3 * triple + k for k in range(3)]
        owners = {by_event[e][0][0] for e in events}
        assert len(owners) == 1 and all(len(by_event[e]) == 1 for e in events), triple
    # the slow stream has no cell in this map: its frames are counted, not delivered
    assert all(streams == ("fast",) for v in by_event.values() for _, streams in v)
    assert report.unmapped_events == 0
    assert set(report.per_worker.values()) == {2 * 3 + 2}  # two triples each + the broadcasts


def test_map_shorter_than_the_recording_counts_unmapped_events(tmp_path) -> None:
    cells = {"fast": [[{"constraint": i}] for i in range(5)]}  # 5 + 2 wrap events of 20
    report, reducer = run(
        w="tests.classes02:StatefulWorker",
        r="tests.classes02:CollectReducer",
        source="tests.classes02:CountingSource",
        map_file=_map_file(tmp_path, cells),
    )
    assert report.unmapped_events == 13
    assert sorted(reducer.publish["by_event"]) == list(range(7))


def test_map_discard_and_null_cells(tmp_path) -> None:
    cells = {
        "fast": [[{"constraint": 0}], [], [{"constraint": 2}], None] * 2,
        "slow": [None, None, [{"constraint": 2}], None] * 2,
    }
    _, reducer = run(
        w="tests.classes02:StatefulWorker",
        r="tests.classes02:CollectReducer",
        source="tests.classes02:CountingSource",
        map_file=_map_file(tmp_path, cells),
    )
    by_event = reducer.publish["by_event"]
    # [] and null cells deliver nothing; event 3 (cell 2) gets both streams in one event
    assert 2 not in by_event and 4 not in by_event
    assert by_event[3][0][1] == ("fast",)  # the source's slow stream has only even events
    assert {e for e in by_event} == {0, 1, 3, 5, 7, 9}


def test_publish_is_readable_with_h5pyd_during_keep_alive() -> None:
    import h5pyd

    stop, done = threading.Event(), threading.Event()
    urls: list[str] = []
    thread = threading.Thread(
        target=replay,
        args=("tests.classes02:SlidesWorker", "tests.classes02:SlidesReducer"),
        kwargs=dict(source="tests.classes02:CountingSource", port=0, stop_event=stop,
                    done_event=done, on_server=urls.append),
    )
    thread.start()
    try:
        assert done.wait(30)
        with h5pyd.File("/", "r", endpoint=urls[0].rstrip("/")) as f:
            assert sorted(f["map"].keys(), key=int) == [str(i) for i in range(20)]
            assert f["map/5"][()] in (b"replay-worker-0", b"replay-worker-1",
                                      "replay-worker-0", "replay-worker-1")
    finally:
        stop.set()
        thread.join(10)


@pytest.mark.parametrize("form", ["pickle", "cbor"])
def test_parameter_files_in_pickle_and_cbor(tmp_path, form: str) -> None:
    import pickle

    import cbor2

    from dranspose_fast.protocol import WorkParameter

    path = tmp_path / f"params.{form}"
    if form == "pickle":
        path.write_bytes(pickle.dumps([WorkParameter(name="int_param", data=b"5")]))
    else:  # the controller's dump of binary parameters: a CBOR list of {name, data}
        path.write_bytes(cbor2.dumps([{"name": "int_param", "data": b"5"},
                                      {"name": "file_parameter", "data": b"\x00\x01"}]))
    _, reducer = run(source="tests.classes02:CountingSource", parameter_file=path)
    assert reducer.publish["results"]["4"][0]["int_param"] == 5


def test_progress_bar_is_quiet_without_a_terminal(capfd) -> None:
    run(source="tests.classes02:CountingSource")
    assert "ev/s" not in capfd.readouterr().err
    run(source="tests.classes02:CountingSource", progress=True)
    assert "20ev" in capfd.readouterr().err.replace(" ", "")


def test_tick_once_per_interval_across_workers() -> None:
    report, reducer = run(w="tests.classes02:TickingWorker", source="tests.classes02:SlowSource")
    ticks = reducer.publish["ticks"]  # 30 events 50 ms apart, one tick per 100 ms at most
    assert 5 <= ticks <= report.seconds / 0.1 + 1
