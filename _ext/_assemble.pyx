# cython: language_level=3, embedsignature=True, freethreading_compatible=True
"""Assembly of partial events into the ``EventData`` a worker's user code sees.

Each ingester sends a worker only the streams it owns; the assignment says how many streams
each event of that worker carries. These kernels merge the partials and build the
``EventData`` of every event that became complete, in one compiled pass per batch: the
merge is dict work, the models are built without validation (``_batch.construct``'s
shortcut). State lives in the caller's dicts (``dranspose_fast.worker.parts.Assembler``); no policy here.
"""

from cpython.dict cimport PyDict_GetItem, PyDict_SetItem, PyDict_DelItem, PyDict_Contains
from cpython.object cimport PyObject, PyObject_GenericSetAttr

cdef object _EVENT_FIELDS = frozenset(("event_number", "streams"))
# Looked up on first use: dranspose_fast.event imports the compiled modules.
cdef object EventData = None


cdef int _load() except -1:
    global EventData
    from dranspose_fast.event import EventData as ev
    EventData = ev
    return 0


cdef object _event(object evn, dict streams):
    if EventData is None:
        _load()
    obj = EventData.__new__(EventData)
    PyObject_GenericSetAttr(obj, "__dict__", {"event_number": evn, "streams": streams})
    PyObject_GenericSetAttr(obj, "__pydantic_fields_set__", set(_EVENT_FIELDS))
    PyObject_GenericSetAttr(obj, "__pydantic_extra__", None)
    PyObject_GenericSetAttr(obj, "__pydantic_private__", None)
    return obj


def make_event(object event_number, dict streams):
    """An ``EventData`` of ``streams`` (already ``StreamData``), without validation."""
    return _event(event_number, streams)


def add(list events, dict expected, dict pending, list ready):
    """Merge received partial events ``[(evn, {stream: StreamData}), ...]``.

    ``expected`` maps event numbers to the stream count the assignment gives them,
    ``pending`` holds partial events not yet complete. Events that become complete are
    removed from both and appended to ``ready`` as ``EventData``, in arrival order.
    Returns how many streams arrived twice for one event (the first copy is kept).
    """
    cdef Py_ssize_t duplicates = 0
    cdef PyObject *have_p
    cdef PyObject *count_p
    cdef dict have, streams
    for item in events:
        evn, streams = item
        have_p = PyDict_GetItem(pending, evn)
        if have_p == NULL:
            count_p = PyDict_GetItem(expected, evn)
            if count_p != NULL and len(streams) >= <object> count_p:
                PyDict_DelItem(expected, evn)  # the common case: one ingester
                ready.append(_event(evn, streams))
            else:
                PyDict_SetItem(pending, evn, streams)
            continue
        have = <dict> have_p
        for name, data in streams.items():
            if PyDict_Contains(have, name):
                duplicates += 1
            else:
                PyDict_SetItem(have, name, data)
        count_p = PyDict_GetItem(expected, evn)
        if count_p != NULL and len(have) >= <object> count_p:
            ready.append(_event(evn, have))
            PyDict_DelItem(expected, evn)
            PyDict_DelItem(pending, evn)
    return duplicates


def expect(list event_numbers, list counts, dict expected, dict pending, list ready):
    """Record that ``event_numbers[i]`` carries ``counts[i]`` streams for this worker.

    Events whose partials had all arrived already are removed from ``pending`` and appended
    to ``ready`` as ``EventData``; the others wait in ``expected``.
    """
    cdef Py_ssize_t i, n = len(event_numbers)
    cdef PyObject *have_p
    if len(counts) != n:
        raise ValueError(f"{n} event numbers but {len(counts)} stream counts")
    for i in range(n):
        evn = event_numbers[i]
        count = counts[i]
        have_p = PyDict_GetItem(pending, evn)
        if have_p != NULL and len(<dict> have_p) >= count:
            ready.append(_event(evn, <dict> have_p))
            PyDict_DelItem(pending, evn)
        else:
            PyDict_SetItem(expected, evn, count)
