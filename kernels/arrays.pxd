# Argument checks for the def entry points: cheap C-level tests (type, dtype, contiguity,
# exact shape) so that a kernel can never be handed a buffer smaller than it will touch,
# whoever calls it. The functional API has already validated with friendly messages; these
# guard the compiled code itself and cost nanoseconds, unlike typed-memoryview acquisition.
cimport numpy as cnp

from real cimport real


cdef inline int typenum(real tag) noexcept nogil:
    return cnp.NPY_FLOAT32 if real is float else cnp.NPY_FLOAT64


cdef inline bint is_float32(object a) except -1:
    if not cnp.PyArray_Check(a):
        raise TypeError(f"expected a numpy array, got {type(a).__name__}")
    return cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_FLOAT32


cdef inline void* buffer(object a, str name, int type_num, Py_ssize_t rows, Py_ssize_t cols,
                         bint writeable=False) except NULL:
    """Data pointer of a C-contiguous array of dtype type_num and shape (rows, cols), or of
    shape (cols,) when rows < 0."""
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name}: expected a numpy array, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int ndim = cnp.PyArray_NDIM(arr)
    cdef cnp.npy_intp* shape = cnp.PyArray_DIMS(arr)
    if cnp.PyArray_TYPE(arr) != type_num:
        raise TypeError(f"{name}: expected dtype {cnp.PyArray_DescrFromType(type_num)}, got {(<object>a).dtype}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{name}: expected a C-contiguous array")
    if writeable and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{name}: expected a writeable array")
    if (ndim != 2 or shape[0] != rows or shape[1] != cols) if rows >= 0 else (ndim != 1 or shape[0] != cols):
        expected = <object>(rows, cols) if rows >= 0 else <object>(cols,)
        raise ValueError(f"{name}: expected shape {expected}, got {(<object>a).shape}")
    return cnp.PyArray_DATA(arr)


cdef inline void* optional_buffer(object a, str name, int type_num, Py_ssize_t rows,
                                  Py_ssize_t cols, bint writeable=False) except? NULL:
    """buffer(), or NULL for None."""
    if a is None:
        return NULL
    return buffer(a, name, type_num, rows, cols, writeable)


cdef inline Py_ssize_t dim(object a, int axis, str name) except -1:
    if not cnp.PyArray_Check(a) or cnp.PyArray_NDIM(<cnp.ndarray>a) <= axis:
        raise ValueError(f"{name}: expected a numpy array with at least {axis + 1} dimensions")
    return cnp.PyArray_DIMS(<cnp.ndarray>a)[axis]
