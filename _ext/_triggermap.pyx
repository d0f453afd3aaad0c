# cython: language_level=3, embedsignature=True, freethreading_compatible=True
"""Compiled trigger map and constraint-binding engine (kernel of ``dranspose_fast.mapping``).

``TriggerMap`` holds every distinct part once, as flat pools (CSR per (event, stream) cell),
plus the sequence of part instances. ``Engine`` binds constraints to workers and emits whole
events as credits allow, in one compiled loop. The rules are documented in
``dranspose_fast/mapping.py`` and ``docs/mapping.md``; this module only checks what could make
it read out of bounds. Parsing, tag numbering and user-facing wording live in ``mapping.py``.
"""

cimport cython
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc, realloc

import numpy as np

from dranspose_fast.errors import MapError

__all__ = ["MAX_WORKERS", "Engine", "TriggerMap"]

MAX_WORKERS = 64

cdef extern from *:
    int __builtin_ctzll(unsigned long long) nogil

# === Compiled map ===

# name -> dtype of every pool; each pool keeps a capacity >= 1 so &view[0] is always valid
_POOLS = {
    "kind": np.uint8, "cell_ptr": np.int64, "vw_cons": np.int32, "vw_mask": np.uint64,
    "ev_cptr": np.int64, "ev_cons": np.int32, "ev_bptr": np.int64, "ev_bmask": np.uint64,
    "c_nev": np.int64, "c_mask": np.uint64, "c_first": np.int64,
    "p_ev_base": np.int64, "p_nev": np.int64, "p_c_base": np.int64, "p_ncons": np.int64,
    "p_maxc": np.int64, "seq_part": np.int32, "seq_start": np.int64, "seq_coff": np.int64,
}


cdef class TriggerMap:
    """Flat pools of all compiled parts plus the instance sequence (append-only).

    Global event ``e`` lies in instance ``i`` with ``seq_start[i] <= e < seq_start[i+1]``;
    its part is ``seq_part[i]``. Constraint ``(i, local)`` has the global id
    ``seq_coff[i] + local``, so a part repeated in the sequence gets fresh constraints.
    """
    cdef readonly Py_ssize_t n_streams
    cdef readonly bint closed
    cdef readonly Py_ssize_t n_parts
    cdef readonly Py_ssize_t n_instances
    cdef Py_ssize_t n_cells, n_vw, n_pev, n_econs, n_ebm, n_cons
    cdef dict _a
    cdef uint8_t[::1] kind
    cdef int64_t[::1] cell_ptr
    cdef int32_t[::1] vw_cons
    cdef uint64_t[::1] vw_mask
    cdef int64_t[::1] ev_cptr
    cdef int32_t[::1] ev_cons
    cdef int64_t[::1] ev_bptr
    cdef uint64_t[::1] ev_bmask
    cdef int64_t[::1] c_nev
    cdef uint64_t[::1] c_mask
    cdef int64_t[::1] c_first
    cdef int64_t[::1] p_ev_base
    cdef int64_t[::1] p_nev
    cdef int64_t[::1] p_c_base
    cdef int64_t[::1] p_ncons
    cdef int64_t[::1] p_maxc
    cdef int32_t[::1] seq_part
    cdef int64_t[::1] seq_start
    cdef int64_t[::1] seq_coff

    def __cinit__(self, Py_ssize_t n_streams):
        if n_streams < 0:
            raise MapError(f"n_streams must be >= 0, got {n_streams}")
        self.n_streams = n_streams
        self._a = {name: np.zeros(16, dtype=dt) for name, dt in _POOLS.items()}
        self._views()

    def _views(self):
        a = self._a
        self.kind = a["kind"]
        self.cell_ptr = a["cell_ptr"]
        self.vw_cons = a["vw_cons"]
        self.vw_mask = a["vw_mask"]
        self.ev_cptr = a["ev_cptr"]
        self.ev_cons = a["ev_cons"]
        self.ev_bptr = a["ev_bptr"]
        self.ev_bmask = a["ev_bmask"]
        self.c_nev = a["c_nev"]
        self.c_mask = a["c_mask"]
        self.c_first = a["c_first"]
        self.p_ev_base = a["p_ev_base"]
        self.p_nev = a["p_nev"]
        self.p_c_base = a["p_c_base"]
        self.p_ncons = a["p_ncons"]
        self.p_maxc = a["p_maxc"]
        self.seq_part = a["seq_part"]
        self.seq_start = a["seq_start"]
        self.seq_coff = a["seq_coff"]

    def _reserve(self, str name, Py_ssize_t need):
        old = self._a[name]
        cdef Py_ssize_t cap = old.shape[0]
        if cap >= need:
            return
        while cap < need:
            cap *= 2
        new = np.zeros(cap, dtype=old.dtype)
        new[: old.shape[0]] = old
        self._a[name] = new
        self._views()

    @property
    def n_events(self):
        """Events of all instances appended so far."""
        return int(self.seq_start[self.n_instances])

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def add_part(self, const uint8_t[::1] kind, const int64_t[::1] cell_ptr,
                 const int32_t[::1] vw_cons, const uint64_t[::1] vw_mask,
                 Py_ssize_t n_events, Py_ssize_t n_cons):
        """Compile one part; return its index.

        ``kind[e*S+s]`` is 0 (no frame) or 1 (frame; its virtual workers are
        ``cell_ptr[k]..cell_ptr[k+1]`` of ``vw_cons``/``vw_mask``, none means discard).
        ``vw_cons`` holds dense local constraint ids ``0..n_cons-1`` or -1 (broadcast).
        """
        cdef Py_ssize_t S = self.n_streams
        cdef Py_ssize_t nc, V, i, j, e, s, k, cell
        cdef int32_t c
        cdef uint64_t m
        cdef int64_t ke, kb, ec0, b0, maxc = 0
        cdef bint dup
        if n_events < 0 or n_cons < 0:
            raise MapError(f"n_events and n_cons must be >= 0, got {n_events}, {n_cons}")
        nc = n_events * S
        V = vw_cons.shape[0]
        if kind.shape[0] != nc or cell_ptr.shape[0] != nc + 1:
            raise MapError(
                f"part arrays do not match {n_events} events x {S} streams: "
                f"kind has {kind.shape[0]}, cell_ptr {cell_ptr.shape[0]} entries")
        if vw_mask.shape[0] != V or cell_ptr[0] != 0 or cell_ptr[nc] != V:
            raise MapError(f"cell_ptr must run from 0 to {V} = len(vw_cons) = len(vw_mask)")
        for i in range(nc):
            if cell_ptr[i + 1] < cell_ptr[i]:
                raise MapError(f"cell_ptr decreases at cell {i}")
            if kind[i] > 1 or (kind[i] == 0 and cell_ptr[i + 1] != cell_ptr[i]):
                raise MapError(f"cell {i}: kind {kind[i]} with {cell_ptr[i+1]-cell_ptr[i]} vws")
        for j in range(V):
            if vw_cons[j] < -1 or vw_cons[j] >= n_cons:
                raise MapError(f"vw {j}: constraint id {vw_cons[j]} not in [-1, {n_cons})")
        self._reserve("kind", self.n_cells + nc)
        self._reserve("cell_ptr", self.n_cells + nc + 1)
        self._reserve("vw_cons", self.n_vw + V)
        self._reserve("vw_mask", self.n_vw + V)
        self._reserve("ev_cptr", self.n_pev + n_events + 1)
        self._reserve("ev_bptr", self.n_pev + n_events + 1)
        self._reserve("ev_cons", self.n_econs + V)
        self._reserve("ev_bmask", self.n_ebm + V)
        for name in ("c_nev", "c_mask", "c_first"):
            self._reserve(name, self.n_cons + n_cons)
        for name in ("p_ev_base", "p_nev", "p_c_base", "p_ncons", "p_maxc"):
            self._reserve(name, self.n_parts + 1)
        stamp_a = np.full(max(n_cons, 1), -1, dtype=np.int64)
        cdef int64_t[::1] stamp = stamp_a
        cdef Py_ssize_t bc = self.n_cells, bv = self.n_vw, bp = self.n_pev, cb = self.n_cons
        with nogil:
            for i in range(nc):
                self.kind[bc + i] = kind[i]
                self.cell_ptr[bc + i + 1] = bv + cell_ptr[i + 1]
            for j in range(V):
                self.vw_cons[bv + j] = vw_cons[j]
                self.vw_mask[bv + j] = vw_mask[j]
            for k in range(n_cons):
                self.c_nev[cb + k] = 0
                self.c_mask[cb + k] = 0
                self.c_first[cb + k] = -1
            ke = self.n_econs
            kb = self.n_ebm
            for e in range(n_events):
                ec0 = ke
                b0 = kb
                for s in range(S):
                    cell = e * S + s
                    for j in range(cell_ptr[cell], cell_ptr[cell + 1]):
                        c = vw_cons[j]
                        m = vw_mask[j]
                        if c >= 0:
                            self.c_mask[cb + c] |= m
                            if stamp[c] != e:
                                stamp[c] = e
                                self.ev_cons[ke] = c
                                ke += 1
                                self.c_nev[cb + c] += 1
                                if self.c_first[cb + c] < 0:
                                    self.c_first[cb + c] = e
                        else:
                            dup = False
                            for k in range(b0, kb):
                                if self.ev_bmask[k] == m:
                                    dup = True
                                    break
                            if not dup:
                                self.ev_bmask[kb] = m
                                kb += 1
                self.ev_cptr[bp + e + 1] = ke
                self.ev_bptr[bp + e + 1] = kb
                if ke - ec0 > maxc:
                    maxc = ke - ec0
        for k in range(n_cons):
            if self.c_nev[cb + k] == 0:
                raise MapError(f"constraint id {k} is never used (ids must be dense)")
        cdef Py_ssize_t p = self.n_parts
        self.p_ev_base[p] = bp
        self.p_nev[p] = n_events
        self.p_c_base[p] = cb
        self.p_ncons[p] = n_cons
        self.p_maxc[p] = maxc
        self.n_cells += nc
        self.n_vw += V
        self.n_pev += n_events
        self.n_econs = ke
        self.n_ebm = kb
        self.n_cons += n_cons
        self.n_parts += 1
        return p

    def append(self, const int32_t[::1] parts):
        """Append instances of already compiled parts to the sequence."""
        cdef Py_ssize_t n = parts.shape[0], i, base = self.n_instances
        cdef int32_t p
        if self.closed:
            raise MapError("the sequence is closed; nothing can be appended")
        for i in range(n):
            if parts[i] < 0 or parts[i] >= self.n_parts:
                raise MapError(f"part index {parts[i]} at position {i} is not compiled")
        for name in ("seq_part", "seq_start", "seq_coff"):
            self._reserve(name, base + n + 1)
        for i in range(n):
            p = parts[i]
            self.seq_part[base + i] = p
            self.seq_start[base + i + 1] = self.seq_start[base + i] + self.p_nev[p]
            self.seq_coff[base + i + 1] = self.seq_coff[base + i] + self.p_ncons[p]
        self.n_instances = base + n

    def close(self):
        """Mark the sequence complete: its length is final."""
        self.closed = True

    def part_info(self, Py_ssize_t p):
        """``(n_events, n_constraints, max distinct constraints in one event)`` of part ``p``."""
        if p < 0 or p >= self.n_parts:
            raise MapError(f"part index {p} is not compiled")
        return int(self.p_nev[p]), int(self.p_ncons[p]), int(self.p_maxc[p])

    def part_constraints(self, Py_ssize_t p):
        """Copies of ``(events per constraint, union tag mask, first local event)`` of part ``p``."""
        if p < 0 or p >= self.n_parts:
            raise MapError(f"part index {p} is not compiled")
        b = self.p_c_base[p]
        n = self.p_ncons[p]
        a = self._a
        return (a["c_nev"][b:b + n].copy(), a["c_mask"][b:b + n].copy(),
                a["c_first"][b:b + n].copy())

    def sequence(self):
        """Copies of ``(part index per instance, start event per instance + total)``."""
        n = self.n_instances
        return self._a["seq_part"][:n].copy(), self._a["seq_start"][:n + 1].copy()

    def locate(self, int64_t evn):
        """``(instance, part, local event)`` of global event ``evn``."""
        if evn < 0 or evn >= self.seq_start[self.n_instances]:
            raise MapError(f"event {evn} is outside the known sequence "
                           f"(0..{self.seq_start[self.n_instances] - 1})")
        i = _upper(&self.seq_start[0], self.n_instances, evn)
        return int(i), int(self.seq_part[i]), int(evn - self.seq_start[i])

    def part_cells(self, Py_ssize_t p):
        """Copies of part ``p``'s cells: ``(kind[E*S], ptr[E*S+1], vw_cons, vw_mask)``.

        ``ptr`` is relative to the returned vw arrays; constraint ids are local to the part.
        """
        if p < 0 or p >= self.n_parts:
            raise MapError(f"part index {p} is not compiled")
        S = self.n_streams
        c0 = self.p_ev_base[p] * S
        c1 = c0 + self.p_nev[p] * S
        a = self._a
        ptr = a["cell_ptr"][c0:c1 + 1]
        v0 = int(ptr[0])
        v1 = int(ptr[-1])
        return (a["kind"][c0:c1].copy(), ptr - v0,
                a["vw_cons"][v0:v1].copy(), a["vw_mask"][v0:v1].copy())

    def event_cells(self, Py_ssize_t p, int64_t local_event):
        """Raw cells of one event of part ``p``: ``(kind[S], ptr[S+1], vw_cons, vw_mask)``.

        ``ptr`` is relative to the returned vw arrays; constraint ids are local to the part.
        """
        if p < 0 or p >= self.n_parts or local_event < 0 or local_event >= self.p_nev[p]:
            raise MapError(f"event {local_event} is not in part index {p}")
        S = self.n_streams
        c0 = (self.p_ev_base[p] + local_event) * S
        a = self._a
        ptr = a["cell_ptr"][c0:c0 + S + 1]
        v0 = int(ptr[0])
        v1 = int(ptr[S])
        return (a["kind"][c0:c0 + S].copy(), ptr - v0,
                a["vw_cons"][v0:v1].copy(), a["vw_mask"][v0:v1].copy())

    def pool_sizes(self):
        """Used entries of each pool (memory checks in tests)."""
        return {"cells": self.n_cells, "vws": self.n_vw, "part_events": self.n_pev,
                "event_constraints": self.n_econs, "event_broadcasts": self.n_ebm,
                "constraints": self.n_cons, "parts": self.n_parts,
                "instances": self.n_instances}

    @property
    def nbytes(self):
        """Bytes held by all pools (capacity, not fill)."""
        return sum(int(arr.nbytes) for arr in self._a.values())


cdef inline int64_t _upper(const int64_t* starts, int64_t n_inst, int64_t e) noexcept nogil:
    # largest i in [0, n_inst) with starts[i] <= e; zero-length instances share a start
    # with their successor, so this lands on the non-empty instance that holds e
    cdef int64_t lo = 0, hi = n_inst, mid
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if starts[mid] <= e:
            lo = mid
        else:
            hi = mid
    return lo


# === Binding engine ===

cdef struct MV:
    int64_t S
    const uint8_t* kind
    const int64_t* cell_ptr
    const int32_t* vw_cons
    const uint64_t* vw_mask
    const int64_t* ev_cptr
    const int32_t* ev_cons
    const int64_t* ev_bptr
    const uint64_t* ev_bmask
    const int64_t* c_nev
    const uint64_t* c_mask
    const int64_t* c_first
    const int64_t* p_ev_base
    const int64_t* p_c_base
    const int64_t* p_ncons
    const int32_t* seq_part
    const int64_t* seq_start
    const int64_t* seq_coff
    int64_t n_inst
    int64_t total


cdef class Engine:
    """Binds constraints to workers and emits events in order (see ``mapping.py``).

    Workers are slots 0..63 with a tag mask, ``credit`` (granted minus charged deliveries)
    and ``pending`` (deliveries reserved by bound constraints, not yet emitted).
    Constraint state (bound worker, events left) lives in a ring indexed by the global
    constraint id, holding only instances between the first unemitted event and the
    furthest event looked at.
    """
    cdef TriggerMap tm
    cdef readonly int64_t horizon
    cdef readonly int64_t next_event
    cdef int64_t frontier
    cdef int64_t head_inst
    cdef int64_t init_inst
    cdef uint64_t active
    cdef uint64_t wmask[64]
    cdef int64_t credit_[64]
    cdef int64_t pending_[64]
    cdef int8_t* r_w
    cdef int64_t* r_left
    cdef int64_t r_cap
    cdef int64_t* b_buf
    cdef int64_t b_n
    cdef int64_t b_cap

    def __cinit__(self, TriggerMap tmap not None, int64_t horizon):
        if horizon < 1:
            raise MapError(f"horizon must be >= 1, got {horizon}")
        self.tm = tmap
        self.horizon = horizon
        self.r_cap = 64
        self.r_w = <int8_t*> malloc(self.r_cap * sizeof(int8_t))
        self.r_left = <int64_t*> malloc(self.r_cap * sizeof(int64_t))
        self.b_cap = 256
        self.b_buf = <int64_t*> malloc(self.b_cap * 4 * sizeof(int64_t))
        if self.r_w == NULL or self.r_left == NULL or self.b_buf == NULL:
            raise MemoryError()
        self.frontier = 1

    def __dealloc__(self):
        free(self.r_w)
        free(self.r_left)
        free(self.b_buf)

    # --- workers (Python side, cheap) ---

    def add_worker(self, uint64_t mask):
        """Occupy the lowest free slot with tag ``mask``; return the slot."""
        if self.active == <uint64_t> -1:
            raise MapError(f"at most {MAX_WORKERS} workers can be bound at once")
        cdef int w = __builtin_ctzll(~self.active)
        self.active |= (<uint64_t> 1) << w
        self.wmask[w] = mask
        self.credit_[w] = 0
        self.pending_[w] = 0
        return w

    cdef int _slot(self, int w) except -1:
        if w < 0 or w >= 64 or not (self.active >> w) & 1:
            raise MapError(f"worker slot {w} is not in use")
        return w

    def set_mask(self, int w, uint64_t mask):
        """Replace the tag mask of slot ``w`` (after the map learnt new tags)."""
        self.wmask[self._slot(w)] = mask

    def grant(self, int w, int64_t n):
        """Add ``n`` credits (deliveries) to slot ``w``."""
        self.credit_[self._slot(w)] += n

    def credit(self, int w):
        return self.credit_[self._slot(w)]

    def pending(self, int w):
        return self.pending_[self._slot(w)]

    @property
    def active_mask(self):
        return self.active

    @property
    def positive_credit(self):
        """Sum of the positive credits of all workers (a hint for sizing output rows)."""
        cdef int64_t total = 0
        cdef int w
        for w in range(64):
            if (self.active >> w) & 1 and self.credit_[w] > 0:
                total += self.credit_[w]
        return total

    def remove_worker(self, int w):
        """Free slot ``w`` and unbind its constraints that still have unemitted events.

        Returns an int64 array ``(n, 3)``: instance, local constraint, events of it already
        emitted to the removed worker (what the caller may have lost).
        """
        self._slot(w)
        cdef MV v = self._mv()
        self._advance_head(&v)
        out = []
        cdef int64_t j, local, g, idx, p, cb, mask = self.r_cap - 1
        for j in range(self.head_inst, self.init_inst):
            p = v.seq_part[j]
            cb = v.p_c_base[p]
            for local in range(v.p_ncons[p]):
                g = v.seq_coff[j] + local
                idx = g & mask
                if self.r_w[idx] == w and self.r_left[idx] > 0:
                    self.r_w[idx] = -1
                    out.append((j, local, v.c_nev[cb + local] - self.r_left[idx]))
        self.active &= ~((<uint64_t> 1) << w)
        self.credit_[w] = 0
        self.pending_[w] = 0
        self.frontier = self.next_event + 1
        return np.array(out, dtype=np.int64).reshape(-1, 3)

    def bound_worker(self, int64_t instance, int64_t local):
        """Worker slot bound to constraint ``(instance, local)``, -1 if unbound.

        For a finished constraint this is the slot it was bound to, which a later
        ``add_worker`` may have reused.
        """
        cdef MV v = self._mv()
        self._advance_head(&v)
        if instance < 0 or instance >= v.n_inst or local < 0 or \
                local >= v.p_ncons[v.seq_part[instance]]:
            raise MapError(f"constraint ({instance}, {local}) does not exist")
        if instance < self.head_inst:
            raise MapError(f"instance {instance} is fully emitted; its state is dropped")
        if instance >= self.init_inst:
            return -1
        return self.r_w[(v.seq_coff[instance] + local) & (self.r_cap - 1)]

    # --- compiled core ---

    cdef MV _mv(self):
        cdef MV v
        cdef TriggerMap t = self.tm
        v.S = t.n_streams
        v.kind = &t.kind[0]
        v.cell_ptr = &t.cell_ptr[0]
        v.vw_cons = &t.vw_cons[0]
        v.vw_mask = &t.vw_mask[0]
        v.ev_cptr = &t.ev_cptr[0]
        v.ev_cons = &t.ev_cons[0]
        v.ev_bptr = &t.ev_bptr[0]
        v.ev_bmask = &t.ev_bmask[0]
        v.c_nev = &t.c_nev[0]
        v.c_mask = &t.c_mask[0]
        v.c_first = &t.c_first[0]
        v.p_ev_base = &t.p_ev_base[0]
        v.p_c_base = &t.p_c_base[0]
        v.p_ncons = &t.p_ncons[0]
        v.seq_part = &t.seq_part[0]
        v.seq_start = &t.seq_start[0]
        v.seq_coff = &t.seq_coff[0]
        v.n_inst = t.n_instances
        v.total = t.seq_start[t.n_instances]
        return v

    cdef inline void _advance_head(self, MV* v) noexcept nogil:
        while self.head_inst + 1 < v.n_inst and v.seq_start[self.head_inst + 1] <= self.next_event:
            self.head_inst += 1

    cdef int _ensure(self, MV* v, int64_t inst) noexcept nogil:
        # give every instance up to ``inst`` its ring state; grow the ring if needed
        cdef int64_t need, cap, g, lo, hi, j, local, p, cb, m
        cdef int8_t* nw
        cdef int64_t* nl
        if inst < self.init_inst:
            return 0
        need = v.seq_coff[inst + 1] - v.seq_coff[self.head_inst]
        if need > self.r_cap:
            cap = self.r_cap
            while cap < need:
                cap *= 2
            nw = <int8_t*> malloc(cap * sizeof(int8_t))
            nl = <int64_t*> malloc(cap * sizeof(int64_t))
            if nw == NULL or nl == NULL:
                free(nw)
                free(nl)
                return -1
            lo = v.seq_coff[self.head_inst]
            hi = v.seq_coff[self.init_inst] if self.init_inst > self.head_inst else lo
            for g in range(lo, hi):
                nw[g & (cap - 1)] = self.r_w[g & (self.r_cap - 1)]
                nl[g & (cap - 1)] = self.r_left[g & (self.r_cap - 1)]
            free(self.r_w)
            free(self.r_left)
            self.r_w = nw
            self.r_left = nl
            self.r_cap = cap
        m = self.r_cap - 1
        for j in range(self.init_inst, inst + 1):
            p = v.seq_part[j]
            cb = v.p_c_base[p]
            for local in range(v.p_ncons[p]):
                g = v.seq_coff[j] + local
                self.r_w[g & m] = -1
                self.r_left[g & m] = v.c_nev[cb + local]
        self.init_inst = inst + 1
        return 0

    cdef int _record(self, int64_t inst, int64_t local, int64_t w, int64_t first) noexcept nogil:
        cdef int64_t* nb
        if self.b_n == self.b_cap:
            nb = <int64_t*> realloc(self.b_buf, self.b_cap * 2 * 4 * sizeof(int64_t))
            if nb == NULL:
                return -1
            self.b_buf = nb
            self.b_cap *= 2
        nb = self.b_buf + 4 * self.b_n
        nb[0] = inst
        nb[1] = local
        nb[2] = w
        nb[3] = first
        self.b_n += 1
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef int _bind_event(self, MV* v, int64_t e, int64_t inst, bint head) noexcept nogil:
        # bind every unbound constraint of event e; 1 = all bound, 0 = some left, -1 = no memory
        cdef int64_t p = v.seq_part[inst]
        cdef int64_t pe = v.p_ev_base[p] + e - v.seq_start[inst]
        cdef int64_t cb = v.p_c_base[p], coff = v.seq_coff[inst], rm = self.r_cap - 1
        cdef int64_t k, local, idx, av, bestv = 0
        cdef uint64_t cm, bits
        cdef int w, best
        cdef int done = 1
        for k in range(v.ev_cptr[pe], v.ev_cptr[pe + 1]):
            local = v.ev_cons[k]
            idx = (coff + local) & rm
            if self.r_w[idx] >= 0:
                continue
            cm = v.c_mask[cb + local]
            best = -1
            bits = self.active
            while bits:
                w = __builtin_ctzll(bits)
                bits &= bits - 1
                if (self.wmask[w] & cm) != cm:
                    continue
                av = self.credit_[w] - self.pending_[w]
                # head of line may use any positive credit: reservations are for later events
                if (self.credit_[w] >= 1) if head else (av >= 1):
                    if best < 0 or av > bestv:
                        best = w
                        bestv = av
            if best < 0:
                done = 0
                continue
            self.r_w[idx] = <int8_t> best
            self.pending_[best] += self.r_left[idx]
            if self._record(inst, local, best, v.seq_start[inst] + v.c_first[cb + local]) < 0:
                return -1
        return done

    cdef inline uint64_t _receivers(self, uint64_t m) noexcept nogil:
        cdef uint64_t bits = self.active, out = 0
        cdef int w
        while bits:
            w = __builtin_ctzll(bits)
            bits &= bits - 1
            if (self.wmask[w] & m) == m:
                out |= (<uint64_t> 1) << w
        return out

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef int _try_emit(self, MV* v, int64_t e, int64_t inst, uint8_t* prow,
                       uint64_t* mrow) noexcept nogil:
        cdef int64_t p = v.seq_part[inst]
        cdef int64_t pe = v.p_ev_base[p] + e - v.seq_start[inst]
        cdef int64_t coff = v.seq_coff[inst], rm = self.r_cap - 1
        cdef int64_t k, j, s, cell, idx, S = v.S
        cdef int32_t c
        cdef int8_t w8
        cdef uint64_t ucons = 0, ubc = 0, bits, mm
        cdef int w
        for k in range(v.ev_cptr[pe], v.ev_cptr[pe + 1]):
            w8 = self.r_w[(coff + v.ev_cons[k]) & rm]
            if w8 < 0:
                return 0
            ucons |= (<uint64_t> 1) << w8
        for k in range(v.ev_bptr[pe], v.ev_bptr[pe + 1]):
            ubc |= self._receivers(v.ev_bmask[k])
        bits = ubc & ~ucons
        while bits:
            w = __builtin_ctzll(bits)
            bits &= bits - 1
            if self.credit_[w] < 1:
                return 0
        for s in range(S):
            cell = pe * S + s
            prow[s] = v.kind[cell]
            mm = 0
            for j in range(v.cell_ptr[cell], v.cell_ptr[cell + 1]):
                c = v.vw_cons[j]
                if c < 0:
                    mm |= self._receivers(v.vw_mask[j])
                else:
                    mm |= (<uint64_t> 1) << self.r_w[(coff + c) & rm]
            mrow[s] = mm
        for k in range(v.ev_cptr[pe], v.ev_cptr[pe + 1]):
            idx = (coff + v.ev_cons[k]) & rm
            self.pending_[self.r_w[idx]] -= 1
            self.r_left[idx] -= 1
        bits = ucons | ubc
        while bits:
            w = __builtin_ctzll(bits)
            bits &= bits - 1
            self.credit_[w] -= 1
        return 1

    cdef int64_t _run(self, MV* v, int64_t max_ev, uint8_t* pres, uint64_t* msk) noexcept nogil:
        cdef int64_t count = 0, e, wend, li = -1, first_fail = -1
        cdef int64_t scan = self.frontier
        cdef int r
        cdef bint lost = False
        while count < max_ev:
            e = self.next_event
            if e >= v.total:
                break
            self._advance_head(v)
            if self._ensure(v, self.head_inst) < 0:
                return -1
            if self._bind_event(v, e, self.head_inst, True) < 0:
                return -1
            # look ahead: bind in event order up to e + horizon, from uncommitted credit only
            if scan <= e:
                scan = e + 1
            wend = e + self.horizon
            if wend > v.total:
                wend = v.total
            while scan < wend:
                if li < 0:
                    li = _upper(v.seq_start, v.n_inst, scan)
                while li + 1 < v.n_inst and v.seq_start[li + 1] <= scan:
                    li += 1
                if self._ensure(v, li) < 0:
                    return -1
                r = self._bind_event(v, scan, li, False)
                if r < 0:
                    return -1
                if r == 0 and first_fail < 0:
                    first_fail = scan
                scan += 1
            if not self._try_emit(v, e, self.head_inst, pres + count * v.S, msk + count * v.S):
                break
            self.next_event = e + 1
            count += 1
            if first_fail >= 0 and first_fail <= e + 1:
                # the failed event became the head; later failures were not tracked
                first_fail = -1
                lost = True
        # next call resumes the look-ahead at the first event that may hold an unbound
        # constraint (conservatively right after the head when that was not tracked)
        if lost:
            self.frontier = self.next_event + 1
        elif first_fail > self.next_event:
            self.frontier = first_fail
        else:
            self.frontier = scan if scan > self.next_event else self.next_event + 1
        self._advance_head(v)
        return count

    def bind(self, uint8_t[:, ::1] present, uint64_t[:, ::1] masks, bint keep_bound=False):
        """Bind and emit up to ``present.shape[0]`` events into the caller's rows.

        Returns ``(count, bound)`` where rows ``0..count-1`` hold events
        ``next_event_before .. +count-1`` and ``bound`` is an int64 ``(n, 4)`` array of new
        bindings: instance, local constraint, worker slot, first event of the constraint.
        With ``keep_bound`` the bindings of the previous call are returned again, first.
        """
        cdef int64_t max_ev = present.shape[0]
        cdef MV v = self._mv()
        cdef uint8_t* pp = NULL
        cdef uint64_t* mp = NULL
        cdef int64_t count
        if masks.shape[0] != max_ev or present.shape[1] != v.S or masks.shape[1] != v.S:
            raise MapError(f"output rows must be ({max_ev}, {v.S}) for present and masks")
        if max_ev > 0 and v.S > 0:
            pp = &present[0, 0]
            mp = &masks[0, 0]
        if not keep_bound:
            self.b_n = 0
        with nogil:
            count = self._run(&v, max_ev, pp, mp)
        if count < 0:
            raise MemoryError("trigger-map engine could not grow its state")
        bound = np.empty((self.b_n, 4), dtype=np.int64)
        cdef int64_t[:, ::1] bv = bound
        cdef int64_t i, j
        for i in range(self.b_n):
            for j in range(4):
                bv[i, j] = self.b_buf[4 * i + j]
        return count, bound
