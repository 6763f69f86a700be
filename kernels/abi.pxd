# Integer codes shared with Python. Mirrors src/fusedense/activations.py (activation ids) and
# src/fusedense/abi.py (losses, optimizers, hyper positions); tests/test_abi.py checks they agree
# through the ABI dict that fusedense._kernels.activations exports.

cdef enum:
    ACT_IDENTITY = 0
    ACT_RELU = 1
    ACT_LEAKY_RELU = 2
    ACT_ELU = 3
    ACT_SIGMOID = 4
    ACT_TANH = 5
    ACT_GELU = 6
    ACT_GELU_ERF = 7
    ACT_SILU = 8
    ACT_SOFTPLUS = 9
    ACT_SOFTMAX = 10
    ACT_LOG_SOFTMAX = 11
    N_ACTIVATIONS = 12

cdef enum:
    LOSS_SPARSE_XENT = 0
    LOSS_CATEGORICAL_XENT = 1
    LOSS_BINARY_XENT = 2
    LOSS_MSE = 3

cdef enum:
    OPT_SGD = 0
    OPT_ADAM = 1

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
    N_HYPER = 9
