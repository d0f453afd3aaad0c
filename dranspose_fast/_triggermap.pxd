# C layout of the compiled trigger map (``_ext/_triggermap.pyx``), shared with the binding
# engine (``_ext/_binding.pyx``: ``from dranspose_fast._triggermap cimport TriggerMap``).
# It lives in the package, not in ``_ext/``, because Cython looks a cimported module's .pxd up
# by its full name (``dranspose_fast/_triggermap.pxd``) from the build directory.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t


cdef class TriggerMap:
    # public sizes
    cdef readonly Py_ssize_t n_streams
    cdef readonly bint closed
    cdef readonly Py_ssize_t n_parts
    cdef readonly Py_ssize_t n_instances
    # used entries of the pools
    cdef Py_ssize_t n_cells, n_vw, n_pev, n_econs, n_ebm, n_cons
    # pool name -> numpy array (owner); the views below alias these and are refreshed on growth
    cdef dict _a
    # cells, event-major: kind and CSR of virtual workers (constraint id or -1, tag mask)
    cdef uint8_t[::1] kind
    cdef int64_t[::1] cell_ptr
    cdef int32_t[::1] vw_cons
    cdef uint64_t[::1] vw_mask
    # per part event: distinct constraints and distinct broadcast masks (CSR)
    cdef int64_t[::1] ev_cptr
    cdef int32_t[::1] ev_cons
    cdef int64_t[::1] ev_bptr
    cdef uint64_t[::1] ev_bmask
    # per constraint: events, union tag mask, first local event
    cdef int64_t[::1] c_nev
    cdef uint64_t[::1] c_mask
    cdef int64_t[::1] c_first
    # per part: event base, events, constraint base, constraints, max constraints in one event
    cdef int64_t[::1] p_ev_base
    cdef int64_t[::1] p_nev
    cdef int64_t[::1] p_c_base
    cdef int64_t[::1] p_ncons
    cdef int64_t[::1] p_maxc
    # per instance: part, start event (n + 1 entries), global constraint offset (n + 1)
    cdef int32_t[::1] seq_part
    cdef int64_t[::1] seq_start
    cdef int64_t[::1] seq_coff


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
