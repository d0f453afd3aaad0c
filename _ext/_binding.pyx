# cython: language_level=3, embedsignature=True, freethreading_compatible=True
"""Compiled constraint-binding engine (kernel of ``dranspose_fast.mapping.binding``).

``Engine`` binds constraints to workers and emits whole events as credits allow, in one
compiled loop, reading the pools of a ``TriggerMap`` (``_ext/_triggermap.pyx``) through the
layout declared in ``dranspose_fast/_triggermap.pxd``. The rules are documented in
``dranspose_fast/mapping/binding.py`` and ``docs/mapping.md``; this module only checks what could make
it read out of bounds.
"""

cimport cython
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc, realloc

from dranspose_fast._triggermap cimport TriggerMap, _upper

import numpy as np

from dranspose_fast.errors import MapError

__all__ = ["MAX_WORKERS", "Engine"]

MAX_WORKERS = 64

cdef extern from *:
    int __builtin_ctzll(unsigned long long) nogil


# raw pointers into the map's pools, taken once per call (pools move when the map grows)
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
    """Binds constraints to workers and emits events in order (see ``dranspose_fast/mapping/binding.py``).

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

    # --- resume (a controller that took over a running scan) ---

    def spans(self, int64_t[:, ::1] bound):
        """For rows ``(instance, local, ...)`` of ``bind``'s ``bound``: 1 where the constraint
        has more than one event (only those can be partly emitted when a controller dies)."""
        cdef MV v = self._mv()
        cdef int64_t i, inst, local
        out = np.zeros(bound.shape[0], dtype=np.uint8)
        cdef uint8_t[::1] o = out
        for i in range(bound.shape[0]):
            inst = bound[i, 0]
            local = bound[i, 1]
            if 0 <= inst < v.n_inst and 0 <= local < v.p_ncons[v.seq_part[inst]]:
                o[i] = v.c_nev[v.p_c_base[v.seq_part[inst]] + local] > 1
        return out

    def restore(self, int64_t next_event, int64_t[:, ::1] bound):
        """Put a fresh engine where an earlier one stood: events below ``next_event`` emitted.

        ``bound`` rows are ``(instance, local, slot)``: the slot each constraint was bound to.
        Only constraints of the instance holding ``next_event`` that already emitted some but
        not all of their events keep their worker (a stateful group stays on it); every other
        constraint binds anew. Credits are the caller's (``grant``). Returns the bindings kept.
        """
        cdef MV v = self._mv()
        if self.next_event != 0 or self.init_inst != 0:
            raise MapError("restore needs an engine that has not bound anything")
        if next_event < 0 or next_event > v.total:
            raise MapError(f"cannot restore at event {next_event}: the map has {v.total}")
        self.next_event = next_event
        self.frontier = next_event + 1
        if next_event == v.total or v.n_inst == 0:
            self._advance_head(&v)
            self.init_inst = self.head_inst
            return 0
        self._advance_head(&v)
        self.init_inst = self.head_inst
        if self._ensure(&v, self.head_inst) < 0:
            raise MemoryError("trigger-map engine could not grow its state")
        cdef int64_t inst = self.head_inst, p = v.seq_part[inst], cb = v.p_c_base[p]
        cdef int64_t coff = v.seq_coff[inst], m = self.r_cap - 1, e, pe, k, i, local, idx
        cdef int w, kept = 0
        for e in range(v.seq_start[inst], next_event):
            pe = v.p_ev_base[p] + e - v.seq_start[inst]
            for k in range(v.ev_cptr[pe], v.ev_cptr[pe + 1]):
                self.r_left[(coff + v.ev_cons[k]) & m] -= 1
        for i in range(bound.shape[0]):
            if bound[i, 0] != inst:
                continue
            local = bound[i, 1]
            if local < 0 or local >= v.p_ncons[p]:
                raise MapError(f"constraint ({inst}, {local}) does not exist")
            w = self._slot(<int> bound[i, 2])
            idx = (coff + local) & m
            if self.r_left[idx] <= 0 or self.r_left[idx] == v.c_nev[cb + local]:
                continue  # done, or not started: nothing ties it to a worker
            self.r_w[idx] = <int8_t> w
            self.pending_[w] += self.r_left[idx]
            kept += 1
        return kept

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
