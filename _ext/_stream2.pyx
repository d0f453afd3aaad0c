# cython: language_level=3, embedsignature=True, freethreading_compatible=True
# cython: boundscheck=False, wraparound=False, cdivision=True
"""DECTRIS Stream V2 messages (one CBOR item each, RFC 8949): ``decode`` and ``scan``.

``decode`` interprets the tags Stream V2 uses (date-times, RFC 8746 typed and
multi-dimensional arrays as read-only numpy views of the caller's buffer, DECTRIS'
compressed byte strings); the rest is generic CBOR.  ``scan`` makes the same checks without
building or decompressing anything, for the ingester's every message.  One recursive C
walker serves both (``_W.build``); errors are raised where found and containers prefix
their key or index while they unwind.  Policy lives in ``middlewares.stream2``.
"""

cimport numpy as cnp
from cpython.buffer cimport (PyBUF_FULL_RO, PyBuffer_IsContiguous, PyBuffer_Release,
                             PyObject_GetBuffer)
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
from cpython.long cimport PyLong_FromLongLong, PyLong_FromUnsignedLongLong
from cpython.memoryview cimport PyMemoryView_FromObject, PyMemoryView_GET_BUFFER
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcmp

import json
from datetime import datetime, timezone

import numpy as np
from dectris.compression import decompress as _decompress

from dranspose_fast.errors import DecodeError

cnp.import_array()

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX
    # Public since Python 3.11; they fail only on non-IEEE platforms.
    double PyFloat_Unpack2(const char* p, int le) except? -1.0
    double PyFloat_Unpack4(const char* p, int le) except? -1.0
    double PyFloat_Unpack8(const char* p, int le) except? -1.0
    object PyMemoryView_FromMemory(char* mem, Py_ssize_t size, int flags)
    enum: PyBUF_READ

cdef extern from "numpy/arrayobject.h":
    # Steals a reference to the descriptor, also on failure.
    object PyArray_NewFromDescr(PyTypeObject* subtype, cnp.dtype descr, int nd,
                                cnp.npy_intp* dims, cnp.npy_intp* strides, void* data,
                                int flags, PyObject* obj)
    enum: NPY_ARRAY_F_CONTIGUOUS

cdef enum:
    MAX_DEPTH = 64          # nesting of containers and tags; deeper input is refused
    HEADER = 12             # HDF5-filter framing: uint64 BE size, uint32 BE block size
    LZ4_RATIO = 255         # an LZ4 sequence of k bytes yields < 255 k bytes (LZ4 block format)
    # tags: RFC 8949 section 3.4 (0, 1, 2, 3, 55799), RFC 8746 (40, 1040, 64..87), DECTRIS
    # cbor/dectris-compression-tag.md (56500)
    T_DATE = 0, T_EPOCH = 1, T_UBIG = 2, T_NBIG = 3, T_MD = 40, T_MD_F = 1040
    T_TYPED0 = 64, T_TYPED1 = 87, T_SELF = 55799, T_ZIP = 56500
    # _H.kind: a definite head, indefinite (additional information 31), cut off, 28..30
    H_DEF = 0, H_INDEF = 1, H_SHORT = 2, H_RESERVED = 3

# Largest element count of a multi-dimensional array: numpy refuses shapes whose byte count
# (items up to 16 bytes) overflows, even when another dim is 0.
cdef Py_ssize_t LIMIT = PY_SSIZE_T_MAX // 16

cdef tuple _KINDS = ("an unsigned integer", "a negative integer", "a byte string",
                     "a text string", "an array", "a map", "a tag", "a simple value or float")
cdef tuple _MD_SHAPE = tuple(f"multi-dimensional array (tag {t}) needs [dims, elements]"
                             for t in (T_MD, T_MD_F))
cdef str _ZIP_SHAPE = "compressed byte string (tag 56500) needs [algorithm, modifier, data]"


class Stream2DecodeError(DecodeError):
    """A Stream V2 message is not well-formed CBOR or breaks a rule of a tag it uses.

    ``field``: where ('' for the message itself, else a path such as ``data["threshold_1"]``
    or ``channels[2]``); ``problem``: what is wrong; ``offset``: the byte of the message
    where it was found (-1: not tied to a byte).
    """

    def __init__(self, field, problem, offset=-1):
        super().__init__(field, problem, offset)
        self.field = field
        self.problem = problem
        self.offset = offset

    def __str__(self):
        text = self.problem if self.offset < 0 else f"{self.problem} (byte {self.offset})"
        return f"{self.field}: {text}" if self.field else text


cdef class Tagged:
    """A CBOR item under a tag this decoder does not interpret (RFC 8949 section 3.4)."""

    cdef readonly object tag
    cdef readonly object value

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        if not isinstance(other, Tagged):
            return NotImplemented
        return self.tag == (<Tagged>other).tag and self.value == (<Tagged>other).value

    def __hash__(self):
        return hash((self.tag, self.value))

    def __repr__(self):
        return f"Tagged({self.tag!r}, {self.value!r})"

    def __reduce__(self):
        return (Tagged, (self.tag, self.value))


cdef inline int _itemsize(uint64_t tag) noexcept:
    # RFC 8746 section 2.1: tag = 0b010_f_s_e_ll; ll selects 1, 2, 4, 8 byte integers or
    # 2, 4, 8, 16 byte floats (f); s: signed, e: little endian.
    return (2 if tag & 16 else 1) << (tag & 3)


cdef tuple _make_dtypes():
    # 76 (little-endian int8) is reserved; numpy has no IEEE binary128 (83, 87).
    out = []
    for tag in range(T_TYPED0, T_TYPED1 + 1):
        kind = "f" if tag & 16 else ("i" if tag & 8 else "u")
        out.append(None if tag in (76, 83, 87) else
                   np.dtype(f"{'<' if tag & 4 else '>'}{kind}{_itemsize(tag)}"))
    return tuple(out)


cdef tuple _DTYPES = _make_dtypes()


cdef struct _W:
    const uint8_t* p
    Py_ssize_t end
    Py_ssize_t pos
    bint build              # decode (build objects) or scan (check only)
    PyObject* owner         # what views of the message keep alive (borrowed)
    Py_ssize_t type_at      # scan: offset of the top-level "type" text, or -1
    bint sid_ok, iid_ok     # scan: top-level "series_id", "image_id"
    uint64_t sid, iid


cdef struct _H:             # a head (RFC 8949 section 3)
    int kind                # H_DEF, H_INDEF, H_SHORT, H_RESERVED
    int major
    uint64_t arg
    Py_ssize_t nxt          # where its content starts


include "_stream2_heads.pxi"


# === the walker ===

cdef object _item(_W* w, int depth, bint root):
    """The item at w.pos (None when scanning); ``root``: the message itself."""
    cdef Py_ssize_t at = w.pos, n = 0
    cdef int major = 0, indef
    cdef uint64_t arg = 0
    cdef const uint8_t* ptr = NULL
    if depth > MAX_DEPTH:
        raise _err(f"nested deeper than {MAX_DEPTH} levels", at)
    indef = _head(w, &major, &arg)
    if major == 4:
        return _list(w, arg, indef, at, depth, False, &n)
    if major == 5:
        return _map(w, arg, indef, at, depth, root)
    if major == 2 or major == 3:
        w.pos = at
        s = _string(w, major, w.build, &ptr, &n)
        if s is None and w.build and major == 2:
            return PyBytes_FromStringAndSize(<char*>ptr, n)
        return s
    if indef:
        raise _err("break code outside an indefinite-length item" if major == 7 else
                   f"indefinite length is not allowed for {_KINDS[major]}", at)
    if major == 6:
        return _tag(w, arg, at, depth, root)
    if major == 7:
        return _simple(w, arg, at)
    if not w.build:
        return None
    if major == 0:
        return PyLong_FromUnsignedLongLong(arg)
    if arg <= <uint64_t>0x7FFFFFFFFFFFFFFF:
        return PyLong_FromLongLong(-1 - <int64_t>arg)
    return -1 - PyLong_FromUnsignedLongLong(arg)  # down to -2**64 (RFC 8949 section 3.1)


cdef object _simple(_W* w, uint64_t arg, Py_ssize_t at):
    # RFC 8949 section 3.3: 20 false, 21 true, 22 null, 23 undefined, 25/26/27 floats.
    cdef int ai = w.p[at] & 31
    cdef const char* raw = <const char*>(w.p + at + 1)
    if ai == 24 and arg < 32:
        raise _err(f"two-byte simple value {arg} is not well-formed", at)
    if ai < 20 or ai == 24:
        raise _err(f"unsupported simple value {arg}", at)
    if not w.build or ai <= 23:
        return (False, True, None, None)[ai - 20] if w.build else None
    if ai == 25:
        return PyFloat_Unpack2(raw, 0)
    return PyFloat_Unpack4(raw, 0) if ai == 26 else PyFloat_Unpack8(raw, 0)


cdef object _list(_W* w, uint64_t arg, int indef, Py_ssize_t at, int depth, bint scalars,
                  Py_ssize_t* count):
    """An array; ``scalars``: the elements of a multi-dimensional one (no nesting)."""
    cdef Py_ssize_t left = -1 if indef else _count(w, arg, 1, at)
    cdef Py_ssize_t i = 0
    cdef list out = [] if w.build else None
    cdef _H h
    try:
        while _more(w, &left):
            if scalars:
                h = _peek(w, w.pos)
                if h.kind <= H_INDEF and (h.major == 4 or h.major == 5 or h.major == 6 and (
                        T_TYPED0 <= h.arg <= T_TYPED1 or h.arg == T_MD or h.arg == T_MD_F)):
                    raise _err(f"element of a multi-dimensional array is "
                               f"{_kind(w, w.pos)}, not a scalar", w.pos)
            value = _item(w, depth + 1, False)
            if w.build:
                out.append(value)
            i += 1
    except Stream2DecodeError as exc:
        _prefix(exc, f"[{i}]")
        raise
    count[0] = i
    return out


cdef object _map(_W* w, uint64_t arg, int indef, Py_ssize_t at, int depth, bint root):
    cdef Py_ssize_t left = -1 if indef else _count(w, arg, 2, at)
    cdef Py_ssize_t kat = at
    cdef bint in_value = False
    cdef dict out = {} if w.build else None
    key = None
    try:
        while _more(w, &left):
            kat = w.pos
            in_value = False
            if kat < w.end and (w.p[kat] >> 5 == 4 or w.p[kat] >> 5 == 5):
                raise _err(f"map key is {_KINDS[w.p[kat] >> 5]}, which is not hashable", kat)
            key = _item(w, depth + 1, False)
            if root and not w.build:
                _capture(w, kat)
            in_value = True
            value = _item(w, depth + 1, False)
            in_value = False
            if w.build:
                try:
                    out[key] = value
                except TypeError:
                    raise _err(f"map key {_short(repr(key))} is not hashable", kat) from None
    except Stream2DecodeError as exc:
        if in_value:
            _prefix(exc, _key_part(w, key, kat, root))
        raise
    return out


cdef void _capture(_W* w, Py_ssize_t kat) noexcept:
    """scan: note the top-level "type", "series_id" and "image_id" (definite-length keys)."""
    cdef _H k = _peek(w, kat)
    cdef _H v = _peek(w, w.pos)
    cdef const uint8_t* key = w.p + k.nxt
    if k.kind != H_DEF or k.major != 3 or k.nxt + <Py_ssize_t>k.arg != w.pos:
        return
    if k.arg == 4 and memcmp(key, b"type", 4) == 0:
        w.type_at = w.pos if v.major == 3 and v.kind <= H_INDEF else -1
    elif k.arg == 9 and memcmp(key, b"series_id", 9) == 0:
        w.sid_ok, w.sid = v.major == 0 and v.kind == H_DEF, v.arg
    elif k.arg == 8 and memcmp(key, b"image_id", 8) == 0:
        w.iid_ok, w.iid = v.major == 0 and v.kind == H_DEF, v.arg


# === tags ===

cdef object _tag(_W* w, uint64_t tag, Py_ssize_t at, int depth, bint root):
    cdef Py_ssize_t cat = w.pos, n = 0
    cdef const uint8_t* ptr = NULL
    cdef _H h = _peek(w, cat)
    if tag == T_SELF:                       # self-described CBOR (RFC 8949 section 3.4.6)
        return _item(w, depth + 1, root)
    if T_TYPED0 <= tag <= T_TYPED1:
        return _typed(w, tag, at, NULL, 0, -1, False)
    if tag == T_MD or tag == T_MD_F:
        return _mdarray(w, tag, depth)
    if tag == T_ZIP:
        return _zipped(w, &ptr, &n, NULL)
    if tag == T_UBIG or tag == T_NBIG:      # RFC 8949 section 3.4.3
        owner = _bytes(w, w.build, &ptr, &n, "bignum", tag)
        if not w.build:
            return None
        value = int.from_bytes(owner if owner is not None else (<char*>ptr)[:n], "big")
        return value if tag == T_UBIG else -1 - value
    # RFC 8949 section 3.4.1 and 3.4.2: date-time text, epoch seconds (int or float)
    if tag == T_DATE and h.major != 3:
        raise _err(f"date-time (tag 0) needs a text string, got {_kind(w, cat)}", cat)
    if tag == T_EPOCH and not (h.major == 0 or h.major == 1 or h.major == 7 and
                               h.kind == H_DEF and 25 <= (w.p[cat] & 31) <= 27):
        raise _err(f"epoch date-time (tag 1) needs a number, got {_kind(w, cat)}", cat)
    value = _item(w, depth + 1, False)
    if not w.build:
        return None
    if tag == T_DATE:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise _err(f"date-time {_short(repr(value))} is not RFC 3339", cat) from None
    if tag == T_EPOCH:
        try:
            return datetime.fromtimestamp(value, timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise _err(f"epoch date-time {value!r} is out of range", cat) from None
    return Tagged(tag, value)


cdef struct _Shape:         # what the bytes of a typed array must fill
    uint64_t tag
    int itemsize
    Py_ssize_t want         # elements the dims ask for; -1: no dims
    cnp.npy_intp* dims
    int ndim
    Py_ssize_t at           # where the typed array's content starts


cdef int _fits(_Shape* s, Py_ssize_t n) except -1:
    """Check that ``n`` bytes make whole elements, as many as the dims ask for."""
    if n % s.itemsize:
        raise _err(f"typed array (tag {s.tag}) of {n} bytes is not a whole number of "
                   f"{s.itemsize}-byte elements", s.at)
    if s.want >= 0 and n // s.itemsize != s.want:
        raise _err(f"dims {[s.dims[i] for i in range(s.ndim)]} need {s.want} elements, the "
                   f"typed array (tag {s.tag}) holds {n // s.itemsize}", s.at)
    return 0


cdef object _typed(_W* w, uint64_t tag, Py_ssize_t at, cnp.npy_intp* dims, int ndim,
                   Py_ssize_t want, bint fortran):
    """A typed array (RFC 8746 section 2); in tag 40/1040 ``dims`` hold ``want`` items."""
    cdef Py_ssize_t cat = w.pos, n = 0, count
    cdef const uint8_t* ptr = NULL
    cdef int itemsize = _itemsize(tag)
    cdef _H h = _peek(w, cat)
    cdef _Shape shape = _Shape(tag, itemsize, want, dims, ndim, cat)
    cdef cnp.npy_intp flat[1]
    cdef cnp.dtype descr
    if tag == 76:
        raise _err("tag 76 (little-endian int8 typed array) is reserved (RFC 8746)", at)
    if tag == 83 or tag == 87:
        raise _err(f"tag {tag}: IEEE binary128 typed arrays are not supported "
                   "(numpy has no binary128 type)", at)
    if h.kind == H_DEF and h.major == 6 and h.arg == T_ZIP:
        w.pos = h.nxt                       # equivalent to its decompressed byte string
        owner = _zipped(w, &ptr, &n, &shape)
    else:
        owner = _bytes(w, w.build, &ptr, &n, "typed array", tag)
        _fits(&shape, n)
    count = n // itemsize
    if not w.build:
        return None
    if want < 0:
        flat[0], dims, ndim = count, flat, 1
    # A read-only view, unaligned if so (numpy copes); its base keeps the memory alive.
    descr = <cnp.dtype>_DTYPES[tag - T_TYPED0]
    Py_INCREF(descr)
    arr = PyArray_NewFromDescr(<PyTypeObject*>cnp.ndarray, descr, ndim, dims, NULL,
                               <void*>ptr, NPY_ARRAY_F_CONTIGUOUS if fortran else 0, NULL)
    cnp.set_array_base(arr, owner if owner is not None else <object>w.owner)
    return arr


cdef object _mdarray(_W* w, uint64_t tag, int depth):
    """Tag 40 (row-major) / 1040 (column-major): [dims, elements] (RFC 8746 section 3)."""
    cdef cnp.npy_intp dims[cnp.NPY_MAXDIMS]
    cdef Py_ssize_t cat = w.pos, left, dleft, eat, count = 0, want = 1
    cdef bint zero = False
    cdef int ndim = 0, major = 0, indef
    cdef uint64_t arg = 0
    cdef _H h
    cdef str what = _MD_SHAPE[tag == T_MD_F]
    left = _open(w, 2, what)
    if not _more(w, &left):
        raise _err(f"{what}, got an empty array", cat)
    eat = w.pos
    if eat >= w.end or w.p[eat] >> 5 != 4:
        raise _err(f"dims of tag {tag} must be an array, got {_kind(w, eat)}", eat)
    indef = _head(w, &major, &arg)
    dleft = -1 if indef else _count(w, arg, 1, eat)
    while _more(w, &dleft):
        eat = w.pos
        if _head(w, &major, &arg) != 0 or major != 0:
            raise _err(f"dims of tag {tag} must be unsigned integers", eat)
        if ndim == cnp.NPY_MAXDIMS:
            raise _err(f"more than {cnp.NPY_MAXDIMS} dims (numpy's limit)", eat)
        if arg == 0:
            zero = True
        elif arg > <uint64_t>(LIMIT // want):
            raise _err(f"dims of tag {tag} multiply beyond any buffer", eat)
        else:
            want *= <Py_ssize_t>arg
        dims[ndim] = <cnp.npy_intp>arg
        ndim += 1
    want = 0 if zero else want
    if not _more(w, &left):
        raise _err(f"{what}, the elements are missing", w.pos)
    eat = w.pos
    h = _peek(w, eat)
    if h.kind == H_DEF and h.major == 6 and T_TYPED0 <= h.arg <= T_TYPED1:
        w.pos = h.nxt
        out = _typed(w, h.arg, eat, dims, ndim, want, tag == T_MD_F)
    elif eat < w.end and h.major == 4:
        indef = _head(w, &major, &arg)
        if not indef and arg != <uint64_t>want:
            raise _err(f"dims need {want} elements, the array holds {arg}", eat)
        out = _list(w, arg, indef, eat, depth + 1, True, &count)
        if count != want:
            raise _err(f"dims need {want} elements, the array holds {count}", eat)
        if w.build:
            out = _reshape(out, dims, ndim, tag == T_MD_F, eat)
    else:
        raise _err(f"elements of tag {tag} must be a typed array or an array, "
                   f"got {_kind(w, eat)}", eat)
    if _more(w, &left):
        raise _err(f"{what}, got more than 2 items", w.pos)
    return out


cdef object _reshape(list items, cnp.npy_intp* dims, int ndim, bint fortran, Py_ssize_t at):
    try:
        flat = np.array(items)
        if flat.ndim == 1:
            return flat.reshape(tuple([dims[i] for i in range(ndim)]),
                                order="F" if fortran else "C")
    except (ValueError, TypeError, OverflowError) as exc:
        raise _err(f"elements of a multi-dimensional array make no numpy array: {exc}",
                   at) from None
    raise _err("elements of a multi-dimensional array must be scalars", at)


cdef object _zipped(_W* w, const uint8_t** ptr, Py_ssize_t* n, _Shape* shape):
    """Tag 56500 content [algorithm, modifier, data] (DECTRIS cbor/dectris-compression-tag.md).

    Decompressed bytes when decoding, None when scanning; ``n``: the uncompressed size,
    checked against the ``shape`` of a typed array before anything is decompressed.
    """
    cdef Py_ssize_t left = _open(w, 3, _ZIP_SHAPE), at = w.pos, clen = 0
    cdef int major = 0, i
    cdef uint64_t modifier = 0, size = 0
    cdef const uint8_t* data = NULL
    if not _more(w, &left) or at >= w.end or w.p[at] >> 5 != 3:
        raise _err(f"{_ZIP_SHAPE}: the algorithm must be a text string", at)
    algorithm = _string(w, 3, True, &data, &clen)
    if algorithm != "bslz4" and algorithm != "lz4":
        raise _err(f"unknown compression {_short(repr(algorithm))}", at)
    at = w.pos
    if not _more(w, &left) or _head(w, &major, &modifier) != 0 or major != 0:
        raise _err(f"{_ZIP_SHAPE}: the modifier must be an unsigned integer", at)
    if algorithm == "bslz4" and modifier == 0:
        raise _err("bslz4 needs its element size (the modifier) above 0", at)
    if not _more(w, &left):
        raise _err(f"{_ZIP_SHAPE}: the data is missing", w.pos)
    at = w.pos
    owner = _bytes(w, True, &data, &clen, "compressed data", T_ZIP)
    if _more(w, &left):
        raise _err(f"{_ZIP_SHAPE}, got more than 3 items", w.pos)
    if clen < HEADER:
        raise _err(f"compressed data of {clen} bytes is shorter than its {HEADER}-byte header",
                   at)
    for i in range(8):
        size = (size << 8) | data[i]
    if size > <uint64_t>LZ4_RATIO * <uint64_t>clen:
        raise _err(f"{algorithm} header claims {size} bytes, more than {clen} compressed "
                   "bytes can hold", at)
    n[0] = <Py_ssize_t>size
    if shape != NULL:
        _fits(shape, n[0])
    if not w.build:
        return None
    # dectris.compression reads any buffer: hand it the bytes in place
    src = PyMemoryView_FromMemory(<char*>data, clen, PyBUF_READ)
    try:
        if algorithm == "bslz4":
            raw = _decompress(src, algorithm, elem_size=modifier)
        else:
            raw = _decompress(src, algorithm)
    except Exception as exc:
        raise _err(f"{algorithm} decompression failed: {exc!r}", at) from None
    if not PyBytes_CheckExact(raw) or PyBytes_GET_SIZE(raw) != <Py_ssize_t>size:
        raise _err(f"{algorithm} data decompressed to {len(raw)} bytes, its header says "
                   f"{size}", at)
    ptr[0] = <const uint8_t*>PyBytes_AS_STRING(raw)
    return raw


# === entry points ===

cdef inline void _start(_W* w, const void* p, Py_ssize_t n, bint build, object owner) noexcept:
    w.p, w.end, w.pos, w.build, w.owner = <const uint8_t*>p, n, 0, build, <PyObject*>owner
    w.type_at, w.sid_ok, w.iid_ok, w.sid, w.iid = -1, False, False, 0, 0


cdef int _whole(_W* w) except -1:
    if w.pos != w.end:
        raise _err(f"{w.end - w.pos} bytes after the end of the message", w.pos)
    return 0


def decode(buf):
    """decode(buf)

    Decode one whole message (one CBOR item, nothing after it) held in ``buf`` (bytes,
    bytearray, memoryview, mmap, zmq.Frame, numpy array: C-contiguous).  Typed arrays are
    read-only numpy views of ``buf`` (keeping it alive) or of their decompressed bytes;
    unknown tags become ``Tagged``.  Raises ``Stream2DecodeError`` (field, problem, byte),
    ``BufferError``/``TypeError`` if ``buf`` is not contiguous or not a buffer.
    """
    cdef _W w
    cdef Py_buffer* view
    if PyBytes_CheckExact(buf):
        owner = buf
        _start(&w, PyBytes_AS_STRING(buf), PyBytes_GET_SIZE(buf), True, owner)
    else:
        owner = PyMemoryView_FromObject(buf)   # holds the export while views live
        view = PyMemoryView_GET_BUFFER(owner)
        if not PyBuffer_IsContiguous(view, b"C"):
            raise BufferError("a Stream V2 message must be in C-contiguous memory")
        _start(&w, view.buf, view.len, True, owner)
    result = _item(&w, 0, True)
    _whole(&w)
    return result


def scan(buf):
    """scan(buf) -> (type, series_id, image_id)

    Check one whole message as ``decode`` would, building and decompressing nothing: byte
    strings are skipped, not read; text is not checked for UTF-8; compressed sizes come
    from their 12-byte headers.  Returns the top-level map's ``type`` (None: absent or not
    text), ``series_id`` and ``image_id`` (-1: absent or not unsigned), keys matched in
    definite-length encoding.  Raises ``Stream2DecodeError`` where ``decode`` would for a
    structural problem.
    """
    cdef _W w
    cdef Py_buffer view
    cdef bint release = False
    cdef const uint8_t* t
    if PyBytes_CheckExact(buf):
        _start(&w, PyBytes_AS_STRING(buf), PyBytes_GET_SIZE(buf), False, buf)
    else:
        PyObject_GetBuffer(buf, &view, PyBUF_FULL_RO)
        release = True
        _start(&w, view.buf, view.len, False, buf)
    try:
        if release and not PyBuffer_IsContiguous(&view, b"C"):
            raise BufferError("a Stream V2 message must be in C-contiguous memory")
        _item(&w, 0, True)
        _whole(&w)
        kind = None
        if w.type_at >= 0:
            # the types Stream V2 defines without building a str (head 0x60 + length)
            t = w.p + w.type_at
            if t[0] == 0x65 and memcmp(t + 1, b"image", 5) == 0:
                kind = "image"
            elif t[0] == 0x65 and memcmp(t + 1, b"start", 5) == 0:
                kind = "start"
            elif t[0] == 0x63 and memcmp(t + 1, b"end", 3) == 0:
                kind = "end"
            else:
                w.pos, w.build = w.type_at, True
                try:
                    kind = _item(&w, 1, False)
                except Stream2DecodeError as exc:
                    _prefix(exc, "type")
                    raise
    finally:
        if release:
            PyBuffer_Release(&view)
    return (kind,
            PyLong_FromUnsignedLongLong(w.sid) if w.sid_ok else -1,
            PyLong_FromUnsignedLongLong(w.iid) if w.iid_ok else -1)
