"""Sparse softmax cross-entropy: mean loss and ``(softmax − onehot)/B`` in one pass."""
import numpy as np

from fusedense import abi, reference
from fusedense.benchmarking import numpy_user

GRID = {"logits": ([(32, 10), (256, 1000)], [(b, c) for b in (1, 32, 256, 4096) for c in (10, 1000, 4096)])}


def test_softmax_xent(benchmark, kernels, check, system, logits, dtype):
    batch, n_classes = logits
    rng = np.random.default_rng(0)
    z = (3 * rng.normal(size=logits)).astype(dtype)
    labels = rng.integers(0, n_classes, size=batch).astype(np.int64)
    if kernels is None:
        def run():
            return numpy_user.softmax_cross_entropy(z, labels)
    else:
        dz = np.empty_like(z)

        def run():
            return kernels.loss(abi.LOSS_SPARSE_XENT, z, labels, dz), dz
    loss, grad = run()
    expected_loss, expected_grad = reference.softmax_cross_entropy(z, labels)
    check(np.asarray(loss, dtype), expected_loss)
    check(grad, expected_grad)
    benchmark.group = f"softmax_xent B={batch} C={n_classes} {dtype.__name__}"
    benchmark(run)
