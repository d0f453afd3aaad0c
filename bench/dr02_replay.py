"""Time dranspose 0.2's own replay on a dump (run with the dranspose 0.2 venv's python).

    python bench/dr02_replay.py FILE REPEATS   -> prints JSON {"events": n, "seconds": [..]}

Same trivial classes as bench/trivial.py, defined here so the script needs only dranspose 0.2.
"""

import json
import logging
import sys
import time

from dranspose.replay import replay

logging.disable(logging.CRITICAL)  # 0.2 logs every event at INFO; we measure the data path


class TrivialWorker:
    def __init__(self, **kwargs):
        pass

    def process_event(self, event, parameters, tick=False):
        return event.event_number


class TrivialReducer:
    count = 0

    def __init__(self, **kwargs):
        self.publish = {}

    def process_result(self, result, parameters):
        TrivialReducer.count += 1


if __name__ == "__main__":
    path, repeats = sys.argv[1], int(sys.argv[2])
    seconds = []
    for _ in range(repeats):
        TrivialReducer.count = 0
        t0 = time.perf_counter()
        replay("__main__:TrivialWorker", "__main__:TrivialReducer", [path], nworkers=2)
        seconds.append(time.perf_counter() - t0)
    print(json.dumps({"events": TrivialReducer.count, "seconds": seconds}))
