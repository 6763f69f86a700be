"""Quantized layers and networks: the entry points quantized_dense_forward,
quantized_mlp_forward and quantized_sparse_forward over the kernels of quantized.h (int8: AVX-512 VNNI / AVX2 / portable;
bf16: AVX-512 BF16 / AVX-512F / AVX2 / portable, picked at run time)."""
cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t, uint8_t

from arrays cimport buffer
from thread_policy cimport fd_num_threads, fd_set_num_threads, network_threads_for

cnp.import_array()

cdef extern from "quantized.h" nogil:
    ctypedef struct fd_qlayer:
        long long fan_in, fan_out, k_pad, n_pad, kind
    int fd_q_dense_forward(const fd_qlayer* layers, Py_ssize_t n_layers, Py_ssize_t layer,
                           const uint8_t* buffer, Py_ssize_t B, const float* x, float* y, int32_t* acc)
    int fd_q_mlp_forward(const fd_qlayer* layers, Py_ssize_t n_layers, const uint8_t* buffer, Py_ssize_t B,
                         const float* x, float* out, int threads)
    int fd_q_generate(const fd_qlayer* layers, Py_ssize_t n_layers, const uint8_t* buffer, const float* table,
                      Py_ssize_t dim, Py_ssize_t context, const double* uniforms, Py_ssize_t n, Py_ssize_t max_len,
                      double temperature, int64_t boundary, int64_t* tokens, int64_t* lengths)
    void fd_q_sparse_forward(Py_ssize_t B, const int64_t* indptr, const int64_t* indices, const float* values,
                             const void* table, int bf16, const float* scales, const float* bias, Py_ssize_t n,
                             int act, float alpha, float* y, int threads)
    const char* fd_q_int8_path()
    const char* fd_q_bf16_path()


def set_num_threads(int n):
    """OpenMP threads of this module's kernels."""
    fd_set_num_threads(n)


def paths():
    """The builds the dispatch runs here: {"int8": ..., "bf16": ...} (FUSEDENSE_SIMD caps them)."""
    return {"int8": fd_q_int8_path().decode(), "bf16": fd_q_bf16_path().decode()}


cdef inline const fd_qlayer* qrecords(object qlayers, Py_ssize_t* L) noexcept:
    """The structs of a QLAYER record array, read in place (the gate hands engines only those)."""
    L[0] = cnp.PyArray_DIMS(<cnp.ndarray>qlayers)[0]
    return <const fd_qlayer*>cnp.PyArray_DATA(<cnp.ndarray>qlayers)


def quantized_dense_forward(x, qbuffer, qlayers, Py_ssize_t layer, y, acc):
    cdef Py_ssize_t L
    cdef const fd_qlayer* layers = qrecords(qlayers, &L)
    cdef Py_ssize_t B = cnp.PyArray_DIMS(<cnp.ndarray>x)[0]
    cdef Py_ssize_t k = layers[layer].fan_in, n = layers[layer].fan_out
    cdef const float* xp = <float*>buffer(x, "x", cnp.NPY_FLOAT32, B, k)
    cdef float* yp = <float*>buffer(y, "y", cnp.NPY_FLOAT32, B, n, True)
    cdef int32_t* accp = NULL
    cdef const uint8_t* qp = <uint8_t*>cnp.PyArray_DATA(<cnp.ndarray>qbuffer)
    cdef int failed
    if acc is not None:
        accp = <int32_t*>buffer(acc, "acc", cnp.NPY_INT32, B, n, True)
    with nogil:
        failed = fd_q_dense_forward(layers, L, layer, qp, B, xp, yp, accp)
    if failed:
        raise MemoryError()


def quantized_mlp_forward(x, qbuffer, qlayers, out):
    cdef Py_ssize_t L, l
    cdef const fd_qlayer* layers = qrecords(qlayers, &L)
    cdef Py_ssize_t B = cnp.PyArray_DIMS(<cnp.ndarray>x)[0]
    cdef const float* xp = <float*>buffer(x, "x", cnp.NPY_FLOAT32, B, layers[0].fan_in)
    cdef float* outp = <float*>buffer(out, "out", cnp.NPY_FLOAT32, B, layers[L - 1].fan_out, True)
    cdef const uint8_t* qp = <uint8_t*>cnp.PyArray_DATA(<cnp.ndarray>qbuffer)
    cdef Py_ssize_t work = 0
    cdef int failed, threads
    for l in range(L):
        work += layers[l].k_pad * layers[l].n_pad
    threads = network_threads_for(B * work, False)
    with nogil:
        failed = fd_q_mlp_forward(layers, L, qp, B, xp, outp, threads)
    if failed:
        raise MemoryError()


def quantized_embedding_generate(embeddings, qbuffer, qlayers, Py_ssize_t context, uniforms, double temperature,
                                 int64_t boundary, tokens, lengths):
    cdef Py_ssize_t L
    cdef const fd_qlayer* layers = qrecords(qlayers, &L)
    cdef Py_ssize_t vocab = cnp.PyArray_DIMS(<cnp.ndarray>embeddings)[0]
    cdef Py_ssize_t dim = cnp.PyArray_DIMS(<cnp.ndarray>embeddings)[1]
    cdef Py_ssize_t n = cnp.PyArray_DIMS(<cnp.ndarray>uniforms)[0], max_len = cnp.PyArray_DIMS(<cnp.ndarray>uniforms)[1]
    cdef const float* table = <float*>buffer(embeddings, "embeddings", cnp.NPY_FLOAT32, vocab, dim)
    cdef const double* up = <double*>buffer(uniforms, "uniforms", cnp.NPY_FLOAT64, n, max_len)
    cdef int64_t* tp = <int64_t*>buffer(tokens, "tokens", cnp.NPY_INT64, n, max_len, True)
    cdef int64_t* lp = <int64_t*>buffer(lengths, "lengths", cnp.NPY_INT64, -1, n, True)
    cdef const uint8_t* qp = <uint8_t*>cnp.PyArray_DATA(<cnp.ndarray>qbuffer)
    cdef int failed
    with nogil:
        failed = fd_q_generate(layers, L, qp, table, dim, context, up, n, max_len, temperature, boundary, tp, lp)
    if failed:
        raise MemoryError()


def quantized_sparse_forward(indptr, indices, values, table, scales, b, int act_id, double alpha, y):
    cdef Py_ssize_t B = cnp.PyArray_DIMS(<cnp.ndarray>indptr)[0] - 1
    cdef Py_ssize_t nnz = cnp.PyArray_DIMS(<cnp.ndarray>indices)[0]
    cdef Py_ssize_t k = cnp.PyArray_DIMS(<cnp.ndarray>table)[0], n = cnp.PyArray_DIMS(<cnp.ndarray>table)[1]
    cdef int bf16 = cnp.PyArray_TYPE(<cnp.ndarray>table) == cnp.NPY_UINT16
    cdef const int64_t* ip = <int64_t*>buffer(indptr, "X.indptr", cnp.NPY_INT64, -1, B + 1)
    cdef const int64_t* jp = <int64_t*>buffer(indices, "X.indices", cnp.NPY_INT64, -1, nnz)
    cdef const float* vp = <float*>buffer(values, "X.data", cnp.NPY_FLOAT32, -1, nnz)
    cdef const void* tp = buffer(table, "table", cnp.NPY_UINT16 if bf16 else cnp.NPY_INT8, k, n)
    cdef const float* sp = <float*>buffer(scales, "scales", cnp.NPY_FLOAT32, -1, n)
    cdef const float* bp = <float*>buffer(b, "b", cnp.NPY_FLOAT32, -1, n)
    cdef float* yp = <float*>buffer(y, "y", cnp.NPY_FLOAT32, B, n, True)
    cdef int threads = network_threads_for(nnz * n, False)
    with nogil:
        fd_q_sparse_forward(B, ip, jp, vp, tp, bf16, sp, bp, n, act_id, <float>alpha, yp, threads)
