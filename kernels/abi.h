/* The activation ids for the C kernels (act_rows.h); kernels/abi.pxd declares these same names
 * for Cython, and tests/test_abi.py checks them against the registry (fusedense.activations). */
#ifndef FUSEDENSE_ABI_H
#define FUSEDENSE_ABI_H

enum {
    ACT_IDENTITY = 0,
    ACT_RELU = 1,
    ACT_LEAKY_RELU = 2,
    ACT_ELU = 3,
    ACT_SIGMOID = 4,
    ACT_TANH = 5,
    ACT_GELU = 6,
    ACT_GELU_ERF = 7,
    ACT_SILU = 8,
    ACT_SOFTPLUS = 9,
    ACT_SOFTMAX = 10,
    ACT_LOG_SOFTMAX = 11,
    N_ACTIVATIONS = 12
};

#endif
