# cython: language_level=3, embedsignature=True, freethreading_compatible=True
"""Compiled trigger map: flat pools of every part plus the instance sequence.

``TriggerMap`` holds every distinct part once, as flat pools (CSR per (event, stream) cell),
plus the sequence of part instances. Its C layout is declared in
``dranspose_fast/_triggermap.pxd`` so that the binding engine (``_ext/_binding.pyx``) reads the
pools directly. The rules are documented in ``dranspose_fast/mapping/sequence.py`` and
``docs/mapping.md``; this module only checks what could make it read out of bounds. Parsing,
tag numbering and user-facing wording live in ``mapping/sequence.py``.
"""

cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

import numpy as np

from dranspose_fast.errors import MapError

__all__ = ["TriggerMap"]

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
