# Integer codes shared with Python (the activation ids live in abi.h, shared with the C kernels).
# Mirrors src/fusedense/activations.py (activation ids) and
# src/fusedense/abi.py (losses, optimizers, hyper positions); tests/test_abi.py checks they agree
# through the ABI dict that fusedense._kernels.activations exports.

cdef extern from "abi.h":  # the activation ids are defined once, for C and Cython alike
    enum:
        ACT_IDENTITY
        ACT_RELU
        ACT_LEAKY_RELU
        ACT_ELU
        ACT_SIGMOID
        ACT_TANH
        ACT_GELU
        ACT_GELU_ERF
        ACT_SILU
        ACT_SOFTPLUS
        ACT_SOFTMAX
        ACT_LOG_SOFTMAX
        N_ACTIVATIONS

cdef enum:
    LOSS_SPARSE_XENT = 0
    LOSS_CATEGORICAL_XENT = 1
    LOSS_BINARY_XENT = 2
    LOSS_MSE = 3

cdef enum:
    OPT_SGD = 0
    OPT_ADAM = 1
    OPT_ADAGRAD = 2
    OPT_RMSPROP = 3

cdef enum:
    H_OPTIMIZER = 0
    H_LR = 1
    H_BETA1 = 2
    H_BETA2 = 3
    H_EPS = 4
    H_WEIGHT_DECAY = 5
    H_NESTEROV = 6
    H_DECOUPLED = 7
    H_STEP = 8
    H_APPLIED = 9
    H_PENALTY_SCALE = 10
    N_HYPER = 11
