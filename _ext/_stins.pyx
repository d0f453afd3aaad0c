# cython: language_level=3, embedsignature=True, freethreading_compatible=True
"""STINS image kernels: overflow-safe size checks and zero-copy numpy views onto buffers.

Only memory-safety invariants are checked here (the buffer is exactly as large as the shape
says, no Python objects are read out of raw bytes).  Which dtypes and compressions are
accepted, and how errors are worded for users, is decided by
``dranspose_fast.middlewares.stream1``.
"""

cimport numpy as cnp
from cpython.bool cimport PyBool_Check
from cpython.buffer cimport PyBuffer_IsContiguous
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next, PyDict_SetItem
from cpython.list cimport PyList_CheckExact
from cpython.long cimport PyLong_AsSsize_t, PyLong_Check
from cpython.memoryview cimport PyMemoryView_FromObject, PyMemoryView_GET_BUFFER
from cpython.object cimport PyObject, PyObject_GenericSetAttr, PyTypeObject
from cpython.ref cimport Py_INCREF
from cpython.set cimport PySet_Add, PySet_Contains
from cpython.tuple cimport PyTuple_CheckExact
from cpython.type cimport PyType_Check

from dranspose_fast.errors import DecodeError

cnp.import_array()

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX
    PyTypeObject PyBaseObject_Type

cdef extern from "numpy/arrayobject.h":
    # Steals a reference to the descriptor, also on failure.
    object PyArray_NewFromDescr(PyTypeObject* subtype, cnp.dtype descr, int nd,
                                cnp.npy_intp* dims, cnp.npy_intp* strides, void* data,
                                int flags, PyObject* obj)
    enum:
        NPY_ARRAY_WRITEABLE
        NPY_ITEM_REFCOUNT

#: Largest number of dimensions numpy accepts (64 on numpy 2).
MAX_NDIM = cnp.NPY_MAXDIMS


cdef str _short(object item):
    # Header values come from the network: keep error messages bounded.
    cdef str text = repr(item)
    if len(text) > 40:
        return text[:37] + "..."
    return text


cdef Py_ssize_t _fill_dims(object shape, Py_ssize_t itemsize, cnp.npy_intp* dims,
                          int* ndim_out) except -1:
    """Copy ``shape`` into ``dims`` and ``ndim_out``; return ``prod(shape) * itemsize`` bytes."""
    cdef Py_ssize_t ndim, i, dim
    cdef Py_ssize_t total = itemsize
    cdef bint empty = False
    if not (PyList_CheckExact(shape) or PyTuple_CheckExact(shape)):
        raise DecodeError(f"shape must be a list of integers, got {type(shape).__name__}")
    ndim = len(shape)
    if ndim == 0:
        raise DecodeError("shape must have at least one dimension, got []")
    if ndim > cnp.NPY_MAXDIMS:
        raise DecodeError(f"shape has {ndim} dimensions, numpy allows at most {cnp.NPY_MAXDIMS}")
    for i in range(ndim):
        item = shape[i]
        if not PyLong_Check(item) or PyBool_Check(item):
            raise DecodeError(f"shape[{i}] is not an integer: {_short(item)}")
        try:
            dim = PyLong_AsSsize_t(item)
        except OverflowError:
            raise DecodeError(
                f"shape[{i}] = {_short(item)} does not fit in a signed 64-bit integer"
            ) from None
        if dim < 0:
            raise DecodeError(f"shape[{i}] = {dim} is negative")
        dims[i] = dim
        if dim == 0:
            # numpy still rejects the other dimensions overflowing, so keep checking them.
            empty = True
            continue
        if total > PY_SSIZE_T_MAX // dim:
            raise DecodeError(
                f"shape {_short(shape)} with {itemsize}-byte items overflows the address space"
            )
        total *= dim
    ndim_out[0] = <int>ndim
    return 0 if empty else total


def image_nbytes(object shape, Py_ssize_t itemsize):
    """image_nbytes(shape, itemsize) -> int

    Bytes an image of ``shape`` with ``itemsize``-byte elements occupies.

    Raises ``DecodeError`` if ``shape`` is not a non-empty list/tuple of non-negative ints,
    has more than ``MAX_NDIM`` entries, or the size overflows ``Py_ssize_t``;
    ``ValueError`` if ``itemsize < 1``.
    """
    cdef cnp.npy_intp dims[cnp.NPY_MAXDIMS]
    cdef int ndim
    if itemsize < 1:
        raise ValueError(f"itemsize must be at least 1, got {itemsize}")
    return _fill_dims(shape, itemsize, dims, &ndim)


def image_view(object buffer, cnp.dtype dtype not None, object shape):
    """image_view(buffer, dtype, shape) -> numpy.ndarray

    A C-ordered array of ``dtype`` and ``shape`` over the memory of ``buffer``, without copying.

    ``buffer`` is any C-contiguous object with the buffer protocol (``bytes``, ``memoryview``,
    ``zmq.Frame``, ...).  The array keeps the buffer alive and is writeable only if the buffer
    is.  Raises ``DecodeError`` if the shape is invalid (see ``image_nbytes``), the buffer size
    differs from ``prod(shape) * dtype.itemsize``, the buffer is not contiguous or not a
    buffer, or the dtype holds Python objects or has no size.
    """
    cdef cnp.npy_intp dims[cnp.NPY_MAXDIMS]
    cdef Py_ssize_t itemsize = dtype.itemsize
    cdef Py_ssize_t nbytes, length
    cdef char* data
    cdef bint writeable
    cdef object base
    cdef Py_buffer* view
    cdef int ndim
    if dtype.flags & NPY_ITEM_REFCOUNT:
        raise DecodeError(f"dtype {dtype} holds Python objects and cannot view raw bytes")
    if itemsize < 1:
        raise DecodeError(f"dtype {dtype} has no item size")
    nbytes = _fill_dims(shape, itemsize, dims, &ndim)
    if PyBytes_CheckExact(buffer):
        # bytes are immutable and own their memory: the object itself is a safe base.
        base = buffer
        data = PyBytes_AS_STRING(buffer)
        length = PyBytes_GET_SIZE(buffer)
        writeable = False
    else:
        try:
            # The memoryview holds the buffer export for as long as the array lives.
            base = PyMemoryView_FromObject(buffer)
        except TypeError:
            raise DecodeError(
                f"image buffer of type {type(buffer).__name__} does not support the buffer protocol"
            ) from None
        view = PyMemoryView_GET_BUFFER(base)
        if not PyBuffer_IsContiguous(view, b"C"):
            raise DecodeError("image buffer is not C-contiguous")
        data = <char*>view.buf
        length = view.len
        writeable = not view.readonly
    if length != nbytes:
        raise DecodeError(
            f"image buffer holds {length} bytes, shape {_short(shape)} of {dtype} "
            f"needs {nbytes} bytes"
        )
    Py_INCREF(dtype)
    arr = PyArray_NewFromDescr(
        <PyTypeObject*>cnp.ndarray, dtype, ndim, dims, NULL, data,
        NPY_ARRAY_WRITEABLE if writeable else 0, NULL,
    )
    cnp.set_array_base(arr, base)
    return arr


cdef tuple _NO_ARGS = ()


def new_model(object cls, dict values not None, frozenset names not None, object private,
              dict more=None):
    """new_model(cls, values, names, private, more=None) -> cls instance

    A pydantic model instance built from already checked values, without validation: the
    four slots ``model_validate`` fills are set directly.  Keys of ``values`` in ``names``
    become fields (``__dict__``), the others extras (``__pydantic_extra__``), and so do the
    items of ``more``; ``__pydantic_fields_set__`` holds every key; ``__pydantic_private__`` is
    ``private``.  When ``values`` has no extra key it becomes ``__dict__`` itself, not a copy,
    so the caller must hand over a dict it no longer uses.

    Raises ``TypeError`` if ``cls`` is not a class allocated by ``object.__new__`` (a plain
    model); ``AttributeError`` if it lacks the pydantic slots.
    """
    cdef Py_ssize_t pos = 0
    cdef PyObject* key
    cdef PyObject* value
    cdef dict fields
    cdef dict extras = {}
    cdef set fields_set = set(values)
    cdef Py_ssize_t n_fields = 0
    if not PyType_Check(cls):
        raise TypeError(f"new_model needs a class, got {type(cls).__name__}")
    if (<PyTypeObject*>cls).tp_new != PyBaseObject_Type.tp_new:
        raise TypeError(f"{cls.__name__} has its own __new__; new_model builds plain models only")
    while PyDict_Next(values, &pos, &key, &value):
        n_fields += PySet_Contains(names, <object>key)
    if n_fields == len(values):
        fields = values
    else:
        fields = {}
        pos = 0
        while PyDict_Next(values, &pos, &key, &value):
            if PySet_Contains(names, <object>key):
                PyDict_SetItem(fields, <object>key, <object>value)
            else:
                PyDict_SetItem(extras, <object>key, <object>value)
    if more is not None:
        pos = 0
        while PyDict_Next(more, &pos, &key, &value):
            PyDict_SetItem(extras, <object>key, <object>value)
            PySet_Add(fields_set, <object>key)
    obj = PyBaseObject_Type.tp_new(cls, <PyObject*>_NO_ARGS, NULL)
    PyObject_GenericSetAttr(obj, "__dict__", fields)
    PyObject_GenericSetAttr(obj, "__pydantic_fields_set__", fields_set)
    PyObject_GenericSetAttr(obj, "__pydantic_extra__", extras)
    PyObject_GenericSetAttr(obj, "__pydantic_private__", private)
    return obj
