"""A trivial worker and reducer written the way dranspose 0.2 users write them.

The default payload of ``bench/e2e.py`` (issue 13, item 1): 0.2's signatures
(``__init__(self, parameters=None, context=None, state=None, **kwargs)``,
``process_event(self, event, parameters=None, *args, **kwargs)`` returning a small dict,
``process_result(self, result, parameters=None)``) and a ``publish`` dict that a client reads
over the reducer's HTTP API (h5pyd), as 0.2's examples do.

The end of a run: the reducer writes the wall-clock time of each result into
``publish["last_result"]``, so after the scan ``publish["last_result"]`` is the instant of the
last ``process_result``. ``bench/e2e.py`` reads it over HTTP once the controller reports the
scan finished: reading it afterwards does not change what is measured. When
``DFAST_BENCH_DONE_FILE`` is set (``--end done-file``), ``finish`` also writes that instant to
the file, as ``bench.trivial.TrivialReducer`` does.
"""

import os
import time
from typing import Any

from bench.trivial import DONE_FILE_ENV


class Worker02:
    def __init__(self, parameters: Any = None, context: Any = None, state: Any = None,
                 **kwargs: Any) -> None:
        self.number = 0

    def process_event(self, event: Any, parameters: Any = None, *args: Any,
                      **kwargs: Any) -> Any:
        return {"event": event.event_number, "value": 1.0}

    def finish(self, parameters: Any = None) -> None:
        pass


class Reducer02:
    def __init__(self, parameters: Any = None, context: Any = None, state: Any = None,
                 **kwargs: Any) -> None:
        self.publish: dict[str, Any] = {"count": 0, "sum": 0.0, "first_result": 0.0,
                                        "last_result": 0.0}

    def process_result(self, result: Any, parameters: Any = None) -> None:
        if not self.publish["count"]:
            self.publish["first_result"] = time.time()
        self.publish["count"] += 1
        self.publish["sum"] += result.payload["value"]
        self.publish["last_result"] = time.time()

    def finish(self, parameters: Any = None) -> None:
        path = os.environ.get(DONE_FILE_ENV)
        if path:
            with open(path + ".tmp", "w") as f:
                f.write(repr(self.publish["last_result"]))
            os.replace(path + ".tmp", path)


def user_path_cost(payload: str, n: int = 20000) -> dict[str, float]:
    """CPU seconds per event of the user-code path that differs between the payloads.

    Worker: ``WorkerHost.process`` (the 0.2-style call) and the pickle of the result;
    reducer: the unpickle, ``make_result`` and ``ReducerHost.process``. The rest of the
    pipeline is the same for both payloads. Used by ``python -m bench.payload02``, also under
    ``valgrind --tool=callgrind`` for instruction counts that a loaded machine does not blur.
    """
    from bench.trivial import TrivialReducer, TrivialWorker
    from dranspose_fast.event import make_event_data
    from dranspose_fast.runtime.usercode import (
        ReducerHost,
        WorkerHost,
        decode_payload,
        encode_payload,
    )

    wcls, rcls = (Worker02, Reducer02) if payload == "02" else (TrivialWorker, TrivialReducer)
    worker = WorkerHost(wcls, "w0", {}, {}, None)
    reducer = ReducerHost(rcls, {}, {}, None)
    events = [make_event_data(i, {}) for i in range(n)]
    t0 = time.process_time()
    blobs = [encode_payload(worker.process(e)) for e in events]
    t1 = time.process_time()
    for i, blob in enumerate(blobs):
        reducer.process(i, "w0", None, decode_payload(blob))
    t2 = time.process_time()
    return {"worker_us": (t1 - t0) / n * 1e6, "reducer_us": (t2 - t1) / n * 1e6}


if __name__ == "__main__":
    import sys

    which = sys.argv[1:] or ["02", "trivial"]
    for name in which:
        best = min((user_path_cost(name) for _ in range(5)), key=lambda c: sum(c.values()))
        print(name, {k: round(v, 3) for k, v in best.items()})
