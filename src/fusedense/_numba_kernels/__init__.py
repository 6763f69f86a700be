"""The numba kernels behind ``fusedense._backends.numba_backend``.

Importing this package imports numba, so only the numba backend imports it (lazily, on first
use); ``import fusedense`` never does. One module per concern, mirroring the Cython kernels:

- ``jit``          the one place where the njit options live
- ``fastexp``      e^x - 1 and e^x for x <= 0 without libm, so that loops calling them vectorise
- ``activations``  the registry's activations by integer id: forward and vector-Jacobian product
- ``gemm``         matrix products: BLAS for large ones, register tiles for small ones
- ``dense``        one dense layer: matmul + bias + activation, and its fused backward
- ``losses``       softmax cross-entropy (and the losses mlp_train_step folds in)
- ``optimizers``   SGD and Adam/AdamW over a flat parameter buffer
- ``mlp``          a whole network: forward, and a fused training step
"""
