# cython: language_level=3, embedsignature=True, freethreading_compatible=True
"""Packed batches: many small frames of consecutive events in one ZMQ frame.

A batch travels as the multipart message ``[meta, index, payload, big_0, big_1, ...]``:

* ``meta`` is built by the Python wrapper (stream names and types, msgpack);
* ``index`` is a ``BatchHeader`` followed by ``Entry[nentries]`` and ``FrameRef[nframes]``;
* ``payload`` holds the small frames back to back;
* frames at or above the caller's threshold travel as their own (zero-copy) ZMQ frames.

The kernels here only copy bytes and build containers; the wrapper
(``dranspose_fast.runtime.dataplane``) decides thresholds and socket use.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.object cimport PyObject_GenericSetAttr
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

include "_batch_layout.pxi"

HEADER_SIZE = sizeof(BatchHeader)
ENTRY_SIZE = sizeof(Entry)
FRAMEREF_SIZE = sizeof(FrameRef)

cdef object _STREAM_FIELDS = frozenset(("typ", "frames"))
cdef object _EVENT_FIELDS = frozenset(("event_number", "streams"))
# The container classes, looked up on first use: dranspose_fast.event imports this module.
cdef object StreamData = None
cdef object EventData = None


cdef int _load_classes() except -1:
    global StreamData, EventData
    from dranspose_fast.event import EventData as ev, StreamData as sd
    StreamData, EventData = sd, ev
    return 0


from dranspose_fast.errors import DecodeError


class BatchFormatError(DecodeError):
    """The index of a packed batch is inconsistent with its payload (names the check)."""


def construct(cls, dict values, fields_set):
    """A pydantic model instance from already checked ``values``, without validation.

    What ``BaseModel.model_construct`` does for a model without defaults, extras or private
    attributes, at a fraction of its cost: the hot path builds several models per event.
    """
    obj = cls.__new__(cls)
    PyObject_GenericSetAttr(obj, "__dict__", values)
    PyObject_GenericSetAttr(obj, "__pydantic_fields_set__", set(fields_set))
    PyObject_GenericSetAttr(obj, "__pydantic_extra__", None)
    PyObject_GenericSetAttr(obj, "__pydantic_private__", None)
    return obj


cdef object _stream_data(str typ, list frames):
    if StreamData is None:
        _load_classes()
    return construct(StreamData, {"typ": typ, "frames": frames}, _STREAM_FIELDS)


def make_event(int64_t event_number, dict streams):
    """Build an ``EventData`` without validation (streams already hold ``StreamData``)."""
    if EventData is None:
        _load_classes()
    return construct(EventData, {"event_number": event_number, "streams": streams},
                     _EVENT_FIELDS)


def pack(list entries, Py_ssize_t threshold):
    """Pack ``entries`` = [(event_number, stream_id, frames), ...] into (index, payload, externals).

    ``frames`` are bytes-like objects.  Frames of ``threshold`` bytes or more are not copied:
    they are returned in ``externals`` (the same objects) to be sent as their own ZMQ frames.
    Entries of one event must be consecutive.
    """
    cdef Py_ssize_t nentries = len(entries)
    cdef Py_ssize_t nframes = 0
    cdef Py_ssize_t payload_size = 0
    cdef Py_ssize_t i, j, k
    cdef const unsigned char[::1] view
    cdef list externals = []
    cdef list views = []
    for i in range(nentries):
        frames = entries[i][2]
        for f in frames:
            view = memoryview(f).cast("B")
            if view.shape[0] < threshold:
                payload_size += view.shape[0]
            views.append(view)
        nframes += len(frames)

    index = PyBytes_FromStringAndSize(
        NULL, sizeof(BatchHeader) + nentries * sizeof(Entry) + nframes * sizeof(FrameRef))
    payload = PyBytes_FromStringAndSize(NULL, payload_size)
    cdef char *ip = PyBytes_AS_STRING(index)
    cdef char *pp = PyBytes_AS_STRING(payload)
    cdef BatchHeader *hdr = <BatchHeader *> ip
    cdef Entry *ent = <Entry *> (ip + sizeof(BatchHeader))
    cdef FrameRef *ref = <FrameRef *> (ip + sizeof(BatchHeader) + nentries * sizeof(Entry))
    hdr.magic = MAGIC
    hdr.version = VERSION
    hdr.nentries = <uint32_t> nentries
    hdr.nframes = <uint32_t> nframes

    cdef uint64_t offset = 0
    cdef Py_ssize_t length
    k = 0
    for i in range(nentries):
        evn, stream_id, frames = entries[i]
        ent[i].event_number = evn
        ent[i].stream_id = stream_id
        ent[i].first_frame = <uint32_t> k
        ent[i].nframes = <uint32_t> len(frames)
        ent[i].reserved = 0
        for j in range(len(frames)):
            view = views[k]
            length = view.shape[0]
            ref[k].length = length
            if length >= threshold:
                ref[k].offset = 0
                ref[k].external = len(externals)
                externals.append(frames[j])
            else:
                ref[k].offset = offset
                ref[k].external = EXTERNAL_NONE
                if length:
                    memcpy(pp + offset, &view[0], length)
                offset += length
            k += 1
    return index, payload, externals


def unpack(index, payload, list externals, list streams):
    """Unpack a batch into ``[(event_number, {stream_name: StreamData}), ...]``.

    ``streams`` maps stream ids to ``(name, typ)``.  Small frames become ``bytes`` (one copy
    out of the payload); external frames are handed on as the objects received.
    Raises ``BatchFormatError`` naming the inconsistency.
    """
    cdef const unsigned char[::1] iv = memoryview(index).cast("B")
    cdef const unsigned char[::1] pv = memoryview(payload).cast("B")
    cdef Py_ssize_t isize = iv.shape[0]
    cdef Py_ssize_t psize = pv.shape[0]
    if isize < <Py_ssize_t> sizeof(BatchHeader):
        raise BatchFormatError(f"batch index of {isize} bytes is shorter than its header")
    cdef const BatchHeader *hdr = <const BatchHeader *> &iv[0]
    if hdr.magic != MAGIC or hdr.version != VERSION:
        raise BatchFormatError(f"batch index has magic {hdr.magic:#x} version {hdr.version}")
    cdef Py_ssize_t nentries = hdr.nentries
    cdef Py_ssize_t nframes = hdr.nframes
    if isize != <Py_ssize_t> (sizeof(BatchHeader) + nentries * sizeof(Entry)
                              + nframes * sizeof(FrameRef)):
        raise BatchFormatError(
            f"batch index of {isize} bytes does not hold {nentries} entries and {nframes} frames")
    cdef const Entry *ent = <const Entry *> (&iv[0] + sizeof(BatchHeader))
    cdef const FrameRef *ref = <const FrameRef *> (
        &iv[0] + sizeof(BatchHeader) + nentries * sizeof(Entry))
    cdef const char *pp = <const char *> &pv[0] if psize else NULL
    cdef Py_ssize_t nstreams = len(streams)
    cdef Py_ssize_t nexternal = len(externals)
    cdef Py_ssize_t i, k
    cdef list out = []
    cdef dict current = None
    cdef int64_t current_evn = 0
    cdef list frames
    for i in range(nentries):
        if ent[i].stream_id >= nstreams:
            raise BatchFormatError(f"entry {i} names stream id {ent[i].stream_id} of {nstreams}")
        if <Py_ssize_t> ent[i].first_frame + ent[i].nframes > nframes:
            raise BatchFormatError(f"entry {i} refers to frames beyond the {nframes} indexed")
        frames = []
        for k in range(ent[i].first_frame, ent[i].first_frame + ent[i].nframes):
            if ref[k].external >= 0:
                if ref[k].external >= nexternal:
                    raise BatchFormatError(
                        f"frame {k} is external frame {ref[k].external} of {nexternal} received")
                frames.append(externals[ref[k].external])
            else:
                if ref[k].offset + ref[k].length > <uint64_t> psize:
                    raise BatchFormatError(
                        f"frame {k} spans bytes {ref[k].offset}..{ref[k].offset + ref[k].length}"
                        f" of a {psize}-byte payload")
                frames.append(PyBytes_FromStringAndSize(pp + ref[k].offset, ref[k].length))
        name, typ = streams[ent[i].stream_id]
        if current is None or ent[i].event_number != current_evn:
            current = {}
            current_evn = ent[i].event_number
            out.append((current_evn, current))
        current[name] = _stream_data(typ, frames)
    return out


def pack_results(list results):
    """Pack ``[(event_number, payload_bytes), ...]`` into (index, payload) for the reducer."""
    cdef Py_ssize_t n = len(results)
    cdef Py_ssize_t total = 0
    cdef Py_ssize_t i
    cdef const unsigned char[::1] view
    cdef list views = []
    for i in range(n):
        view = memoryview(results[i][1]).cast("B")
        views.append(view)
        total += view.shape[0]
    index = PyBytes_FromStringAndSize(NULL, n * 16)
    payload = PyBytes_FromStringAndSize(NULL, total)
    cdef int64_t *ip = <int64_t *> PyBytes_AS_STRING(index)
    cdef char *pp = PyBytes_AS_STRING(payload)
    cdef Py_ssize_t offset = 0
    for i in range(n):
        view = views[i]
        ip[2 * i] = results[i][0]
        ip[2 * i + 1] = view.shape[0]
        if view.shape[0]:
            memcpy(pp + offset, &view[0], view.shape[0])
        offset += view.shape[0]
    return index, payload


def unpack_results(index, payload):
    """Inverse of ``pack_results``: ``[(event_number, memoryview of payload bytes), ...]``."""
    cdef const unsigned char[::1] iv = memoryview(index).cast("B")
    mv = memoryview(payload).cast("B")
    cdef Py_ssize_t psize = len(mv)
    if iv.shape[0] % 16:
        raise BatchFormatError(f"result index of {iv.shape[0]} bytes is not a multiple of 16")
    cdef Py_ssize_t n = iv.shape[0] // 16
    cdef const int64_t *ip = <const int64_t *> &iv[0] if n else NULL
    cdef Py_ssize_t offset = 0
    cdef Py_ssize_t i, length
    cdef list out = []
    for i in range(n):
        length = ip[2 * i + 1]
        if length < 0 or offset + length > psize:
            raise BatchFormatError(f"result {i} overruns the {psize}-byte payload")
        out.append((ip[2 * i], mv[offset:offset + length]))
        offset += length
    return out
