# cython: language_level=3, embedsignature=True, freethreading_compatible=True
"""Index the records of a dranspose dump held in memory (see dranspose_fast/dump.py).

``scan`` walks the fast record layout

    tag 55799, tag 42877, array(2|3) [uint event, map{text -> tag 42878 array(2)
    [text typ, array of byte strings]}, optional tag 0 text datetime]

accepting every definite CBOR length encoding, and fills caller-allocated int64 tables with
offsets.  A record that does not fit is measured with ``skip_item`` (a generic, iterative CBOR
well-formedness walker), so the caller learns whether it is cut off, not CBOR at all, or valid
CBOR in another shape.  No Python object is created per record or frame; the loop runs
without the GIL.  Policy (what to do with each outcome) lives in dump.py.
"""

from libc.stdint cimport int64_t, uint8_t, uint64_t

# === Codes shared with dump.py (Python IntEnums, mirrored in _cborscan.pyi) ===

cpdef enum Status:
    ST_OK = 0           # scan: all bytes up to `stop` consumed; skip_item: item measured
    ST_FULL = 1         # an output table is full; resume at out[1]
    ST_INCOMPLETE = 2   # the item at out[1] runs past `stop`
    ST_FOREIGN = 3      # well-formed CBOR item at out[1]..out[5], not the fast layout
    ST_INVALID = 4      # not well-formed CBOR; offending byte at out[6]

cpdef enum Why:
    # why a record is not the fast layout (the part that did not fit) ...
    WHY_NONE = 0
    WHY_SELF_TAG = 1
    WHY_MSG_TAG = 2
    WHY_MSG_ARRAY = 3
    WHY_EVENT = 4
    WHY_STREAMS = 5
    WHY_NAME = 6
    WHY_STREAM_TAG = 7
    WHY_STREAM_ARRAY = 8
    WHY_TYP = 9
    WHY_FRAMES = 10
    WHY_FRAME = 11
    WHY_DATE_TAG = 12
    WHY_DATE_TEXT = 13
    # ... or why bytes are not well-formed CBOR
    WHY_RESERVED = 20   # additional information 28..30
    WHY_BREAK = 21      # 0xff outside an indefinite-length item
    WHY_CHUNK = 22      # chunk of an indefinite string is not a definite string of its type
    WHY_INDEF = 23      # indefinite length on a type that has none
    WHY_SIMPLE = 24     # two-byte simple value below 32
    WHY_DEPTH = 25      # nested deeper than MAX_DEPTH

# Columns of the caller's int64 tables (dump.py unpacks rows in this order).
cdef enum:
    REC_START = 0       # record table: first byte
    REC_END = 1         # one past the last byte
    REC_EVENT = 2
    REC_STREAM0 = 3     # first row of the stream table
    REC_NSTREAMS = 4
    REC_DATE_OFF = 5    # created_at text; -1 for a 2-element record
    REC_DATE_LEN = 6
    REC_COLS_ = 7
    STREAM_NAME_OFF = 0  # stream table
    STREAM_NAME_LEN = 1
    STREAM_TYP_OFF = 2
    STREAM_TYP_LEN = 3
    STREAM_FRAME0 = 4   # first row of the frame table
    STREAM_NFRAMES = 5
    STREAM_COLS_ = 6
    FRAME_OFF = 0       # frame table
    FRAME_LEN = 1
    FRAME_COLS_ = 2
    OUT_SIZE_ = 8
    MAX_DEPTH = 512

REC_COLS = REC_COLS_
STREAM_COLS = STREAM_COLS_
FRAME_COLS = FRAME_COLS_
OUT_SIZE = OUT_SIZE_
MAX_NESTING = MAX_DEPTH

cdef int64_t I64_MAX = 0x7FFFFFFFFFFFFFFF

# Results of read_head().
cdef enum:
    H_OK = 0
    H_SHORT = 1       # header runs past the end
    H_INDEF = 2       # additional information 31
    H_RESERVED = 3    # additional information 28..30


cdef inline int read_head(const uint8_t* p, int64_t pos, int64_t end, int* major,
                          uint64_t* arg, int64_t* nxt) noexcept nogil:
    """Decode the head at p[pos]; pos < end is not required."""
    cdef int ai
    cdef int n
    cdef int i
    cdef uint64_t v
    if pos >= end:
        return H_SHORT
    major[0] = p[pos] >> 5
    ai = p[pos] & 31
    if ai < 24:
        arg[0] = ai
        nxt[0] = pos + 1
        return H_OK
    if ai == 31:
        nxt[0] = pos + 1
        return H_INDEF
    if ai > 27:
        return H_RESERVED
    n = 1 << (ai - 24)
    if end - pos - 1 < n:
        return H_SHORT
    v = 0
    for i in range(n):
        v = (v << 8) | p[pos + 1 + i]
    arg[0] = v
    nxt[0] = pos + 1 + n
    return H_OK


cdef inline int64_t sat_add(int64_t a, uint64_t b) noexcept nogil:
    """a + b, saturated at the int64 maximum (needed sizes may be absurd in corrupt files)."""
    if b > <uint64_t>(I64_MAX - a):
        return I64_MAX
    return a + <int64_t>b


cdef int skip(const uint8_t* p, int64_t pos, int64_t end, int64_t* res, int* reason) noexcept nogil:
    """Measure one CBOR item at pos.

    ST_OK: res = end of item.  ST_INCOMPLETE: res = a lower bound of the end it needs.
    ST_INVALID: res = offending byte, reason set.
    """
    # Per open container: items still expected (definite) or -1 (indefinite); chunk_major is
    # the string major type an indefinite string expects, or -1 for containers.
    cdef int64_t remaining[MAX_DEPTH]
    cdef int chunk_major[MAX_DEPTH]
    cdef int depth = 0
    cdef int major = 0
    cdef int h
    cdef uint64_t arg = 0
    cdef int64_t nxt = 0
    cdef int64_t need = 0
    cdef bint done
    while True:
        if pos >= end:
            # counts claimed by open containers may tell that much more is needed
            res[0] = need if need > pos else pos + 1
            return ST_INCOMPLETE
        if p[pos] == 0xFF:
            if depth == 0 or remaining[depth - 1] != -1:
                res[0] = pos
                reason[0] = WHY_BREAK
                return ST_INVALID
            depth -= 1
            pos += 1
            done = True
        else:
            h = read_head(p, pos, end, &major, &arg, &nxt)
            if h == H_SHORT:
                res[0] = pos + 1 + (1 << ((p[pos] & 31) - 24))
                return ST_INCOMPLETE
            if h == H_RESERVED:
                res[0] = pos
                reason[0] = WHY_RESERVED
                return ST_INVALID
            if depth > 0 and chunk_major[depth - 1] >= 0:
                if major != chunk_major[depth - 1] or h == H_INDEF:
                    res[0] = pos
                    reason[0] = WHY_CHUNK
                    return ST_INVALID
            done = False
            if h == H_INDEF or (4 <= major <= 5 and arg > 0):
                # open a container (or an indefinite string)
                if h == H_INDEF and (major < 2 or major == 6):
                    res[0] = pos
                    reason[0] = WHY_INDEF
                    return ST_INVALID
                if depth == MAX_DEPTH:
                    res[0] = pos
                    reason[0] = WHY_DEPTH
                    return ST_INVALID
                if h == H_INDEF:
                    remaining[depth] = -1
                    chunk_major[depth] = major if major <= 3 else -1
                else:
                    # clamp absurd counts: the buffer runs out long before they do
                    if arg > <uint64_t>(I64_MAX // 2):
                        arg = <uint64_t>(I64_MAX // 2)
                    remaining[depth] = <int64_t>(arg * 2 if major == 5 else arg)
                    chunk_major[depth] = -1
                    # every item takes at least one byte
                    if sat_add(nxt, <uint64_t>remaining[depth]) > need:
                        need = sat_add(nxt, <uint64_t>remaining[depth])
                depth += 1
                pos = nxt
            elif major <= 1 or major >= 4 and major != 6:
                # integers, empty containers, simple values and floats
                if major == 7 and p[pos] == 0xF8 and arg < 32:
                    res[0] = pos
                    reason[0] = WHY_SIMPLE
                    return ST_INVALID
                pos = nxt
                done = True
            elif major <= 3:
                if arg > <uint64_t>(end - nxt):
                    res[0] = sat_add(nxt, arg)
                    return ST_INCOMPLETE
                pos = nxt + <int64_t>arg
                done = True
            else:
                pos = nxt   # a tag: the tagged item follows
        # An item finished: count it against the open definite containers.
        while done:
            if depth == 0:
                res[0] = pos
                return ST_OK
            if remaining[depth - 1] == -1:
                done = False
            else:
                remaining[depth - 1] -= 1
                if remaining[depth - 1] == 0:
                    depth -= 1
                else:
                    done = False


cdef inline bint expect(const uint8_t* p, int64_t* pos, int64_t end, int want_major,
                        uint64_t* arg) noexcept nogil:
    """Read a definite head of the given major type at pos[0] and advance; False if not."""
    cdef int major = 0
    cdef int64_t nxt = 0
    if read_head(p, pos[0], end, &major, arg, &nxt) != H_OK or major != want_major:
        return False
    pos[0] = nxt
    return True


cdef inline bint expect_tag(const uint8_t* p, int64_t* pos, int64_t end,
                            uint64_t tag) noexcept nogil:
    cdef uint64_t arg = 0
    cdef int64_t save = pos[0]
    if expect(p, pos, end, 6, &arg) and arg == tag:
        return True
    pos[0] = save
    return False


cdef inline bint expect_string(const uint8_t* p, int64_t* pos, int64_t end, int want_major,
                               int64_t* off, int64_t* length) noexcept nogil:
    """A definite text (3) or byte (2) string that lies completely before end."""
    cdef uint64_t arg = 0
    cdef int64_t save = pos[0]
    if not expect(p, pos, end, want_major, &arg) or arg > <uint64_t>(end - pos[0]):
        pos[0] = save
        return False
    off[0] = pos[0]
    length[0] = <int64_t>arg
    pos[0] += <int64_t>arg
    return True


cdef int parse_record(const uint8_t* p, int64_t pos, int64_t end,
                      int64_t* rec, int64_t* st, int64_t st_free, int64_t* fr,
                      int64_t fr_free, int64_t* n_st, int64_t* n_fr,
                      int64_t* fail_pos, int* reason) noexcept nogil:
    """Parse one fast-layout record at pos into rec, st[...] and fr[...].

    Rows past st_free / fr_free are counted in n_st / n_fr but not written.  Returns 1 on
    success (rec[REC_END] set), 0 on the first byte that does not fit (fail_pos, reason).
    """
    cdef uint64_t arg = 0
    cdef uint64_t n_items
    cdef uint64_t n_streams
    cdef uint64_t n_frames
    cdef uint64_t i
    cdef uint64_t j
    cdef int64_t off = 0
    cdef int64_t length = 0
    cdef int64_t* row
    rec[REC_START] = pos
    n_st[0] = 0
    n_fr[0] = 0
    fail_pos[0] = pos
    if not expect_tag(p, &pos, end, 55799):
        reason[0] = WHY_SELF_TAG
        return 0
    fail_pos[0] = pos
    if not expect_tag(p, &pos, end, 42877):
        reason[0] = WHY_MSG_TAG
        return 0
    fail_pos[0] = pos
    if not expect(p, &pos, end, 4, &n_items) or (n_items != 2 and n_items != 3):
        reason[0] = WHY_MSG_ARRAY
        return 0
    fail_pos[0] = pos
    if not expect(p, &pos, end, 0, &arg) or arg > <uint64_t>I64_MAX:
        reason[0] = WHY_EVENT
        return 0
    rec[REC_EVENT] = <int64_t>arg
    fail_pos[0] = pos
    if not expect(p, &pos, end, 5, &n_streams):
        reason[0] = WHY_STREAMS
        return 0
    rec[REC_NSTREAMS] = <int64_t>n_streams if n_streams <= <uint64_t>I64_MAX else 0
    for i in range(n_streams):
        row = st + STREAM_COLS_ * n_st[0] if n_st[0] < st_free else NULL
        fail_pos[0] = pos
        if not expect_string(p, &pos, end, 3, &off, &length):
            reason[0] = WHY_NAME
            return 0
        if row != NULL:
            row[STREAM_NAME_OFF] = off
            row[STREAM_NAME_LEN] = length
        fail_pos[0] = pos
        if not expect_tag(p, &pos, end, 42878):
            reason[0] = WHY_STREAM_TAG
            return 0
        fail_pos[0] = pos
        if not expect(p, &pos, end, 4, &arg) or arg != 2:
            reason[0] = WHY_STREAM_ARRAY
            return 0
        fail_pos[0] = pos
        if not expect_string(p, &pos, end, 3, &off, &length):
            reason[0] = WHY_TYP
            return 0
        if row != NULL:
            row[STREAM_TYP_OFF] = off
            row[STREAM_TYP_LEN] = length
        fail_pos[0] = pos
        if not expect(p, &pos, end, 4, &n_frames):
            reason[0] = WHY_FRAMES
            return 0
        if row != NULL:
            row[STREAM_FRAME0] = n_fr[0]
            row[STREAM_NFRAMES] = <int64_t>n_frames if n_frames <= <uint64_t>I64_MAX else 0
        for j in range(n_frames):
            fail_pos[0] = pos
            if not expect_string(p, &pos, end, 2, &off, &length):
                reason[0] = WHY_FRAME
                return 0
            if n_fr[0] < fr_free:
                fr[FRAME_COLS_ * n_fr[0] + FRAME_OFF] = off
                fr[FRAME_COLS_ * n_fr[0] + FRAME_LEN] = length
            n_fr[0] += 1
        n_st[0] += 1
    rec[REC_DATE_OFF] = -1
    rec[REC_DATE_LEN] = -1
    if n_items == 3:
        fail_pos[0] = pos
        if not expect_tag(p, &pos, end, 0):
            reason[0] = WHY_DATE_TAG
            return 0
        fail_pos[0] = pos
        if not expect_string(p, &pos, end, 3, &off, &length):
            reason[0] = WHY_DATE_TEXT
            return 0
        rec[REC_DATE_OFF] = off
        rec[REC_DATE_LEN] = length
    rec[REC_END] = pos
    return 1


def scan(const uint8_t[::1] buf, Py_ssize_t start, Py_ssize_t stop,
         int64_t[:, ::1] records, int64_t[:, ::1] streams, int64_t[:, ::1] frames,
         int64_t[::1] out):
    """scan(buf, start, stop, records, streams, frames, out) -> status

    Index the fast-layout records in ``buf[start:stop]`` into the tables (columns: ``Col``).  Stream rows refer to frame rows and record rows to stream rows
    of this call, counting from 0.  ``out`` (int64, OUT_SIZE) receives
    ``[status, pos, n_records, n_streams, n_frames, aux, err_pos, reason]``: pos is where
    scanning stopped (a record start); aux is the needed end (INCOMPLETE), the item end
    (FOREIGN) or the stream rows one record needs (FULL, err_pos then holds the frame rows).
    """
    if (records.shape[1] < REC_COLS_ or streams.shape[1] < STREAM_COLS_
            or frames.shape[1] < FRAME_COLS_):
        raise ValueError("table has too few columns")
    if out.shape[0] < OUT_SIZE_:
        raise ValueError("out needs OUT_SIZE entries")
    if records.shape[0] < 1 or streams.shape[0] < 1 or frames.shape[0] < 1:
        raise ValueError("tables need at least one row")
    if not 0 <= start <= stop <= buf.shape[0]:
        raise ValueError(f"need 0 <= start <= stop <= len(buf), got {start}, {stop}")
    cdef const uint8_t* p = &buf[0] if buf.shape[0] > 0 else NULL
    cdef int64_t pos = start
    cdef int64_t end = stop
    cdef int64_t rec_cap = records.shape[0]
    cdef int64_t st_cap = streams.shape[0]
    cdef int64_t fr_cap = frames.shape[0]
    cdef int64_t* rec = &records[0, 0]
    cdef int64_t* st = &streams[0, 0]
    cdef int64_t* fr = &frames[0, 0]
    cdef int64_t n_rec = 0
    cdef int64_t n_st = 0
    cdef int64_t n_fr = 0
    cdef int64_t rec_st = 0
    cdef int64_t rec_fr = 0
    cdef int64_t fail_pos = 0
    cdef int64_t res = 0
    cdef int64_t* row
    cdef int64_t k
    cdef int reason = WHY_NONE
    cdef int skip_reason = WHY_NONE
    cdef int status = ST_OK
    with nogil:
        while pos < end:
            if n_rec == rec_cap:
                status = ST_FULL
                res = 0
                fail_pos = 0
                break
            row = rec + REC_COLS_ * n_rec
            if parse_record(p, pos, end, row, st + STREAM_COLS_ * n_st, st_cap - n_st,
                            fr + FRAME_COLS_ * n_fr, fr_cap - n_fr, &rec_st, &rec_fr,
                            &fail_pos, &reason):
                if n_st + rec_st > st_cap or n_fr + rec_fr > fr_cap:
                    status = ST_FULL
                    res = rec_st
                    fail_pos = rec_fr
                    break
                row[REC_STREAM0] = n_st
                # frame rows were numbered from this record's first row: make them absolute
                for k in range(rec_st):
                    st[STREAM_COLS_ * (n_st + k) + STREAM_FRAME0] += n_fr
                n_st += rec_st
                n_fr += rec_fr
                n_rec += 1
                pos = row[REC_END]
                continue
            status = skip(p, pos, end, &res, &skip_reason)
            if status == ST_OK:
                status = ST_FOREIGN
            elif status == ST_INVALID:
                fail_pos = res
                reason = skip_reason
            break
    out[0] = status
    out[1] = pos
    out[2] = n_rec
    out[3] = n_st
    out[4] = n_fr
    out[5] = res
    out[6] = fail_pos
    out[7] = reason
    return status


def skip_item(const uint8_t[::1] buf, Py_ssize_t start, Py_ssize_t stop, int64_t[::1] out):
    """skip_item(buf, start, stop, out) -> status

    Measure the one CBOR data item at ``buf[start]`` (any well-formed item, tags, indefinite
    lengths included) without decoding it.  ``out`` receives ``[status, value, reason]``:
    OK -> value is the item's end, INCOMPLETE -> the minimal end it needs, INVALID -> the
    offending byte.
    """
    if out.shape[0] < 3:
        raise ValueError("out needs 3 entries")
    if not 0 <= start <= stop <= buf.shape[0]:
        raise ValueError(f"need 0 <= start <= stop <= len(buf), got {start}, {stop}")
    cdef const uint8_t* p = &buf[0] if buf.shape[0] > 0 else NULL
    cdef int64_t res = 0
    cdef int reason = WHY_NONE
    cdef int status
    with nogil:
        status = skip(p, start, stop, &res, &reason)
    out[0] = status
    out[1] = res
    out[2] = reason
    return status
