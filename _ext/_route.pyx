# cython: language_level=3, embedsignature=True, freethreading_compatible=True
"""Route and pack in one step: assignment rows + drained upstream messages → per-worker batches.

The ingester's data loop drains what its upstream sockets hold, then calls ``route_pack`` once
per assignment batch.  The kernel walks the rows, takes one message per present cell, and
writes every forwarded message into the packed batch (``_batch`` layout) of each worker its
cell's mask names.  Python only sends the batches it returns.

Layout written (identical to ``_batch.pack``, read by ``_batch.unpack``): index = header,
``Entry[nentries]``, ``FrameRef[nframes]``; payload = small frames back to back; frames of
``threshold`` bytes or more are returned as the very objects received (sent zero-copy).
Stream ids are the caller's stream (column) indices.

Passes: (1) with the GIL, walk rows and take a buffer of every frame forwarded, counting sizes
per worker slot; (2) without the GIL, fill every index and copy small frames; (3) with the GIL,
list the large frames per slot in the order pass 2 numbered them.  No policy lives here: the
threshold, which slots are valid and how many rows to route come from the caller.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset

cdef extern from *:
    int __builtin_ctzll(unsigned long long) nogil  # GCC and clang: index of the lowest set bit

include "_batch_layout.pxi"

DEF MAX_SLOTS = 64
DEF MAX_STREAMS = 64

# One forwarded cell: its row, stream, mask and its frames in the frame table.
cdef struct Cell:
    int64_t row
    uint32_t stream
    uint32_t nframes
    uint64_t mask
    Py_ssize_t first
    bint has_big

cdef struct SlotOut:
    Py_ssize_t nentries
    Py_ssize_t nframes
    Py_ssize_t payload
    Py_ssize_t nevents
    int64_t last_row
    char *index
    char *data
    Entry *ent
    FrameRef *ref
    Py_ssize_t e
    Py_ssize_t f
    uint64_t off
    int64_t ext


cdef inline Py_ssize_t _lowest_bit(uint64_t bits) noexcept nogil:
    return __builtin_ctzll(bits)


from dranspose_fast.errors import UsageError


class RouteError(UsageError):
    """Arguments of ``route_pack`` that do not fit together (names the mismatch)."""


cdef class _Tables:
    """C arrays of one call, freed (and every buffer released) however the call ends."""
    cdef Cell *cells
    cdef Py_ssize_t ncells, cap_cells
    cdef Py_buffer *bufs
    cdef Py_ssize_t nbufs, cap_bufs

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.bufs != NULL:
            for i in range(self.nbufs):
                PyBuffer_Release(&self.bufs[i])
            free(self.bufs)
        free(self.cells)

    cdef int grow_cells(self) except -1:
        cdef Py_ssize_t cap = self.cap_cells * 2 + 64
        cdef Cell *p = <Cell *> realloc(self.cells, cap * sizeof(Cell))
        if p == NULL:
            raise MemoryError()
        self.cells, self.cap_cells = p, cap
        return 0

    cdef int grow_bufs(self) except -1:
        cdef Py_ssize_t cap = self.cap_bufs * 2 + 128
        cdef Py_buffer *p = <Py_buffer *> realloc(self.bufs, cap * sizeof(Py_buffer))
        if p == NULL:
            raise MemoryError()
        self.bufs, self.cap_bufs = p, cap
        return 0


def route_pack(
    const uint8_t[:, ::1] present,
    const uint64_t[:, ::1] masks,
    Py_ssize_t pos,
    Py_ssize_t max_rows,
    int64_t first_event,
    list messages,
    Py_ssize_t[::1] taken,
    uint64_t valid_slots,
    Py_ssize_t threshold,
):
    """Route rows ``pos..`` of one assignment batch while every message they need is drained.

    Parameters
    ----------
    present, masks : arrays of shape (rows, nstreams)
        This ingester's columns of the batch: a frame in the cell, and the worker bits of it
        (0 = consumed and discarded).
    pos : int
        First row to route.
    max_rows : int
        Route at most this many rows that have a cell (empty rows are skipped for free).
    first_event : int
        Event number of row 0.
    messages : list of lists
        Per stream, the drained messages (each a list of bytes-like frames).
    taken : int array of nstreams, updated in place
        Per stream, the index in ``messages[k]`` of the next message to take.
    valid_slots : int
        Bit ``w`` set if worker slot ``w`` names a worker; cells naming other bits are bad.
    threshold : int
        Frames of this many bytes or more are not copied but returned as they are.

    Returns
    -------
    tuple
        ``(pos, routed, forwarded, discarded, bad, first_bad_event, batches)``: the next row,
        rows routed (with a cell), messages forwarded / discarded by the map / dropped for a
        bad mask (``first_bad_event`` the first such event, or -1), and for every slot
        that got something ``(slot, index, payload, externals, nevents)``, slots ascending.
    """
    cdef Py_ssize_t nrows = present.shape[0]
    cdef Py_ssize_t nstreams = present.shape[1]
    if masks.shape[0] != nrows or masks.shape[1] != nstreams:
        raise RouteError(f"masks of shape ({masks.shape[0]}, {masks.shape[1]}) do not match "
                         f"present of shape ({nrows}, {nstreams})")
    if len(messages) != nstreams or taken.shape[0] != nstreams:
        raise RouteError(f"{nstreams} streams but {len(messages)} message lists and "
                         f"{taken.shape[0]} positions")
    if nstreams > MAX_STREAMS:
        raise RouteError(f"{nstreams} streams: at most {MAX_STREAMS} per ingester")
    if pos < 0 or pos > nrows:
        raise RouteError(f"row {pos} is outside the batch of {nrows} rows")
    cdef Py_ssize_t k, j, w, r
    cdef Py_ssize_t avail[MAX_STREAMS]
    cdef Py_ssize_t cur[MAX_STREAMS]
    cdef PyObject *lists[MAX_STREAMS]
    for k in range(nstreams):
        lst = messages[k]
        if type(lst) is not list:
            raise RouteError(f"messages[{k}] is a {type(lst).__name__}, not a list")
        lists[k] = <PyObject *> lst
        avail[k] = PyList_GET_SIZE(lst)
        cur[k] = taken[k]
        if cur[k] < 0 or cur[k] > avail[k]:
            raise RouteError(f"position {cur[k]} of stream {k} is outside its "
                             f"{avail[k]} messages")

    cdef SlotOut slots[MAX_SLOTS]
    memset(slots, 0, sizeof(slots))
    for w in range(MAX_SLOTS):
        slots[w].last_row = -1
    cdef _Tables t = _Tables()
    cdef Py_ssize_t routed = 0, forwarded = 0, discarded = 0, bad = 0
    cdef int64_t first_bad = -1
    cdef uint64_t mask, bits
    cdef bint any_cell, missing
    cdef PyObject *msg
    cdef PyObject *frame
    cdef Py_ssize_t nf, small, length
    cdef Cell *cell

    # Pass 1 (GIL): take messages row by row, buffers of forwarded frames, sizes per slot.
    r = pos
    while r < nrows and routed < max_rows:
        any_cell = missing = False
        for k in range(nstreams):
            if present[r, k]:
                any_cell = True
                if cur[k] >= avail[k]:
                    missing = True
        if missing:
            break  # a message of this row has not arrived: never hold the others back
        if not any_cell:
            r += 1
            continue
        for k in range(nstreams):
            if not present[r, k]:
                continue
            msg = PyList_GET_ITEM(<object> lists[k], cur[k])
            cur[k] += 1
            mask = masks[r, k]
            if mask == 0:
                discarded += 1
                continue
            if mask & ~valid_slots:
                bad += 1
                if first_bad < 0:
                    first_bad = first_event + r
                continue
            if type(<object> msg) is not list:
                raise RouteError(f"message {cur[k] - 1} of stream {k} is a "
                                 f"{type(<object> msg).__name__}, not a list of frames")
            forwarded += 1
            if t.ncells == t.cap_cells:
                t.grow_cells()
            cell = &t.cells[t.ncells]
            nf = PyList_GET_SIZE(<object> msg)
            cell.row = r
            cell.stream = <uint32_t> k
            cell.nframes = <uint32_t> nf
            cell.mask = mask
            cell.first = t.nbufs
            cell.has_big = False
            small = 0
            for j in range(nf):
                frame = PyList_GET_ITEM(<object> msg, j)
                if t.nbufs == t.cap_bufs:
                    t.grow_bufs()
                PyObject_GetBuffer(<object> frame, &t.bufs[t.nbufs], PyBUF_SIMPLE)
                length = t.bufs[t.nbufs].len
                t.nbufs += 1
                if length >= threshold:
                    cell.has_big = True
                else:
                    small += length
            t.ncells += 1
            bits = mask
            while bits:
                w = _lowest_bit(bits)
                bits &= bits - 1
                slots[w].nentries += 1
                slots[w].nframes += nf
                slots[w].payload += small
                if slots[w].last_row != r:
                    slots[w].last_row = r
                    slots[w].nevents += 1
        routed += 1
        r += 1
    for k in range(nstreams):
        taken[k] = cur[k]

    # Allocate every slot's index and payload (GIL), then fill them (no GIL).
    cdef list out = []
    cdef list externals = [None] * MAX_SLOTS
    cdef BatchHeader *hdr
    for w in range(MAX_SLOTS):
        if slots[w].nentries == 0:
            continue
        index = PyBytes_FromStringAndSize(
            NULL, sizeof(BatchHeader) + slots[w].nentries * sizeof(Entry)
            + slots[w].nframes * sizeof(FrameRef))
        payload = PyBytes_FromStringAndSize(NULL, slots[w].payload)
        ext = []
        out.append((w, index, payload, ext, slots[w].nevents))
        externals[w] = ext
        slots[w].index = PyBytes_AS_STRING(index)
        slots[w].data = PyBytes_AS_STRING(payload)
        hdr = <BatchHeader *> slots[w].index
        hdr.magic = MAGIC
        hdr.version = VERSION
        hdr.nentries = <uint32_t> slots[w].nentries
        hdr.nframes = <uint32_t> slots[w].nframes
        slots[w].ent = <Entry *> (slots[w].index + sizeof(BatchHeader))
        slots[w].ref = <FrameRef *> (slots[w].index + sizeof(BatchHeader)
                                     + slots[w].nentries * sizeof(Entry))
    with nogil:
        _fill(t.cells, t.ncells, t.bufs, slots, first_event, threshold)

    # Pass 3 (GIL): large frames per slot, in the order pass 2 numbered them.
    cdef list ext_list
    cdef Py_ssize_t c
    for c in range(t.ncells):
        cell = &t.cells[c]
        if not cell.has_big:
            continue
        for j in range(cell.first, cell.first + cell.nframes):
            if t.bufs[j].len < threshold:
                continue
            bits = cell.mask
            while bits:
                w = _lowest_bit(bits)
                bits &= bits - 1
                ext_list = externals[w]
                ext_list.append(<object> t.bufs[j].obj)
    return r, routed, forwarded, discarded, bad, first_bad, out


cdef void _fill(Cell *cells, Py_ssize_t ncells, Py_buffer *bufs, SlotOut *slots,
                int64_t first_event, Py_ssize_t threshold) noexcept nogil:
    cdef Py_ssize_t c, j, w
    cdef uint64_t bits
    cdef Cell *cell
    cdef SlotOut *s
    cdef Entry *e
    cdef FrameRef *f
    cdef Py_ssize_t length
    for c in range(ncells):
        cell = &cells[c]
        bits = cell.mask
        while bits:
            w = __builtin_ctzll(bits)
            bits &= bits - 1
            s = &slots[w]
            e = &s.ent[s.e]
            s.e += 1
            e.event_number = first_event + cell.row
            e.stream_id = cell.stream
            e.first_frame = <uint32_t> s.f
            e.nframes = cell.nframes
            e.reserved = 0
            for j in range(cell.first, cell.first + cell.nframes):
                length = bufs[j].len
                f = &s.ref[s.f]
                s.f += 1
                f.length = <uint64_t> length
                if length >= threshold:
                    f.offset = 0
                    f.external = s.ext
                    s.ext += 1
                else:
                    f.offset = s.off
                    f.external = EXTERNAL_NONE
                    if length:
                        memcpy(s.data + s.off, bufs[j].buf, length)
                    s.off += <uint64_t> length
