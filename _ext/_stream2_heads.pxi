# Included by _stream2.pyx (one compilation unit): reading CBOR heads and strings, and the
# error helpers, below the walker.  RFC 8949 section 3 for the head layout.

# === errors ===

cdef object _err(str problem, Py_ssize_t at):
    return Stream2DecodeError("", problem, at)


cdef int _prefix(object exc, str part) except -1:
    exc.field = part + exc.field
    exc.args = (exc.field, exc.problem, exc.offset)
    return 0


cdef str _short(str text):
    # Keys and values come from the network: keep messages bounded.
    return text if len(text) <= 60 else text[:57] + "..."


cdef str _key_part(_W* w, object key, Py_ssize_t kat, bint root):
    """The path element of the value under ``key`` (decoded here when scanning)."""
    cdef _W sub
    if not w.build:
        sub = w[0]
        sub.pos = kat
        sub.build = True
        try:
            key = _item(&sub, 0, False)
        except Stream2DecodeError:
            return "[?]"
    if type(key) is str:
        return key if root else f"[{_short(json.dumps(key, ensure_ascii=False))}]"
    return f"[{_short(repr(key))}]"


cdef str _kind(_W* w, Py_ssize_t at):
    cdef _H h = _peek(w, at)
    if at >= w.end:
        return "the end of the message"
    return f"tag {h.arg}" if h.kind == H_DEF and h.major == 6 else _KINDS[h.major]


# === heads and counts ===

cdef inline _H _peek(_W* w, Py_ssize_t at) noexcept:
    cdef _H h
    cdef int ai, i
    h.kind, h.major, h.arg, h.nxt = H_SHORT, -1, 0, at + 1
    if at >= w.end:
        return h
    h.major = w.p[at] >> 5
    ai = w.p[at] & 31
    if ai < 24:
        h.kind, h.arg = H_DEF, ai
    elif ai == 31:
        h.kind = H_INDEF
    elif ai > 27:
        h.kind = H_RESERVED
    elif w.end - at - 1 >= (1 << (ai - 24)):
        h.kind, h.nxt = H_DEF, at + 1 + (1 << (ai - 24))
        for i in range(at + 1, h.nxt):
            h.arg = (h.arg << 8) | w.p[i]
    return h


cdef inline int _head(_W* w, int* major, uint64_t* arg) except -1:
    """Read the head at w.pos and move past it; 1 for an indefinite length, else 0."""
    cdef _H h = _peek(w, w.pos)
    if h.kind == H_SHORT:
        raise _err("message is truncated", w.pos)
    if h.kind == H_RESERVED:
        raise _err(f"reserved additional information {w.p[w.pos] & 31}", w.pos)
    w.pos = h.nxt
    major[0] = h.major
    arg[0] = h.arg
    return h.kind


cdef inline Py_ssize_t _count(_W* w, uint64_t arg, int per, Py_ssize_t at) except -1:
    # Every item takes at least one byte: a count the rest cannot hold is a truncation,
    # found before anything is allocated for it.
    if arg > <uint64_t>((w.end - w.pos) // per):
        raise _err("message is truncated", at)
    return <Py_ssize_t>arg


cdef inline int _more(_W* w, Py_ssize_t* left) except -1:
    """1 while a container (``left`` items, -1: indefinite) has another; eats the break."""
    if left[0] >= 0:
        if left[0] == 0:
            return 0
        left[0] -= 1
        return 1
    if w.pos >= w.end:
        raise _err("message is truncated", w.pos)
    if w.p[w.pos] == 0xFF:
        w.pos += 1
        return 0
    return 1


cdef inline Py_ssize_t _open(_W* w, Py_ssize_t want, str what) except -2:
    """Head of an array that must hold ``want`` items: their count, or -1 if indefinite."""
    cdef _H h = _peek(w, w.pos)
    cdef int major = 0
    cdef uint64_t arg = 0
    if w.pos >= w.end or h.major != 4:
        raise _err(f"{what}, got {_kind(w, w.pos)}", w.pos)
    if h.kind > H_INDEF:
        return _head(w, &major, &arg)       # raises: cut off or reserved
    if h.kind == H_DEF and h.arg != <uint64_t>want:
        raise _err(f"{what}, got an array of {h.arg}", w.pos)
    w.pos = h.nxt
    return want if h.kind == H_DEF else -1


# === strings ===

cdef object _text(_W* w, Py_ssize_t start, Py_ssize_t n, Py_ssize_t at):
    try:
        return PyUnicode_DecodeUTF8(<char*>(w.p + start), n, NULL)
    except UnicodeDecodeError as exc:
        raise _err(f"invalid UTF-8 in a text string ({exc.reason})", at) from None


cdef inline Py_ssize_t _span(_W* w, uint64_t n, Py_ssize_t at) except -1:
    """Skip the n content bytes of the string whose head is at ``at``; where they start."""
    if n > <uint64_t>(w.end - w.pos):
        raise _err("message is truncated", at)
    w.pos += <Py_ssize_t>n
    return w.pos - <Py_ssize_t>n


cdef object _string(_W* w, int major, bint join, const uint8_t** ptr, Py_ssize_t* n):
    """The byte (2) or text (3) string at w.pos, definite or chunked (RFC 8949 3.2.3).

    A definite byte string stays in place (``ptr``, ``n``; returns None), a text one is
    decoded if ``join``; chunks are joined into bytes / str if ``join``, else only measured.
    """
    cdef Py_ssize_t at = w.pos, cat, start
    cdef int m = 0
    cdef uint64_t arg = 0
    if _head(w, &m, &arg) == 0:
        start = _span(w, arg, at)
        ptr[0], n[0] = w.p + start, <Py_ssize_t>arg
        return _text(w, start, n[0], at) if join and major == 3 else None
    parts = [] if join else None
    ptr[0], n[0] = NULL, 0
    while True:
        if w.pos >= w.end:
            raise _err("message is truncated", w.pos)
        if w.p[w.pos] == 0xFF:
            w.pos += 1
            break
        cat = w.pos
        if _head(w, &m, &arg) != 0 or m != major:
            raise _err(f"a chunk of an indefinite-length {_KINDS[major][2:]} must be a "
                       f"definite one, got {_kind(w, cat)}", cat)
        start = _span(w, arg, cat)
        n[0] += <Py_ssize_t>arg
        if join:
            parts.append(_text(w, start, <Py_ssize_t>arg, cat) if major == 3
                         else PyBytes_FromStringAndSize(<char*>(w.p + start), <Py_ssize_t>arg))
    if not join:
        return None
    if major == 3:
        return "".join(parts)
    joined = b"".join(parts)
    ptr[0] = <const uint8_t*>PyBytes_AS_STRING(joined)
    return joined


cdef object _bytes(_W* w, bint join, const uint8_t** ptr, Py_ssize_t* n, str what,
                   uint64_t tag):
    """Content of ``tag`` that must be a byte string: in place (None) or joined (bytes)."""
    if w.pos >= w.end or w.p[w.pos] >> 5 != 2:
        raise _err(f"{what} (tag {tag}) needs a byte string, got {_kind(w, w.pos)}", w.pos)
    return _string(w, 2, join, ptr, n)
