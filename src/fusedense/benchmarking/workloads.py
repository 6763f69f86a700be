"""What gets benchmarked: stacks of dense layers, run forward (inference) or trained one step.

A single dense layer, the origin text's MLP and a transformer FFN are all layer stacks, so one
:class:`Workload` describes them and one :class:`Problem` (inputs + flat parameter buffer in the
:mod:`fusedense.layout` format) feeds every system. The expected answer comes from
:mod:`fusedense.reference`, computed before anything is timed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import abi, reference
from ..gate import checked_record
from ..layout import layer_views, make_layout
from ..sparse import CSR, is_sparse

#: Tolerance of every pre-timing check, per dtype, relative to the largest expected magnitude:
#: implementations sum in their own order (blocking, FMA, other BLAS) over up to 4096 terms, and
#: ONNX Runtime's float64 Gelu is only good to ~3e-9. Tight enough to catch any real mistake
#: (a transposed weight, a lost bias); the unit tests hold the backends to much tighter bounds.
CHECK_TOLERANCE = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-7}


def check_error(actual, expected) -> float:
    """Largest absolute difference over the largest expected magnitude (at least 1); inf when
    the shapes differ. Compare with :data:`CHECK_TOLERANCE` of the dtype."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        return np.inf
    return float(np.abs(actual - expected).max()) / max(1.0, float(np.abs(expected).max()))


#: Optimizer settings of the training workload: Adam as ``torch.optim.Adam``'s defaults, but ε.
#: Every system is checked on the parameters after one step, which moves each by
#: lr·g/(|g| + ε): with ε = 1e-8 a gradient that cancels to ~1e-8 moves anywhere in (−lr, lr)
#: with the last bits of its sum (docs/performance-notes.md). With ε = 1e-3 that move stays
#: proportional to g, and the arithmetic timed is the same.
ADAM = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-3)


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    sizes: tuple  # layer widths, input first
    activations: tuple  # one per layer
    batches: tuple  # default batch sizes
    train: bool = False  # one training step (fwd + sparse softmax xent + bwd + Adam), else inference

    def flops(self, batch: int) -> float:
        """Multiply-adds ×2 of the matrix products (bias and activations not counted)."""
        per_layer = [2.0 * batch * n_in * n_out for n_in, n_out in zip(self.sizes, self.sizes[1:])]
        if not self.train:
            return sum(per_layer)
        # forward, dW = xᵀ dz, and dx = dz Wᵀ for every layer but the first
        return 2 * sum(per_layer) + sum(per_layer[1:])

    def problem(self, batch: int, dtype, seed: int = 0) -> "Problem":
        rng = np.random.default_rng(seed)
        layout, alphas, n_params = make_layout(self.sizes, self.activations)
        params = np.empty(n_params, dtype)
        for W, b in layer_views(params, layout):
            W[...] = rng.normal(size=W.shape) * np.sqrt(2.0 / W.shape[0])  # He init keeps relu alive
            b[...] = 0.1 * rng.normal(size=b.shape)
        x = rng.normal(size=(batch, self.sizes[0])).astype(dtype)
        labels = rng.integers(0, self.sizes[-1], size=batch).astype(np.int64)
        return Problem(self, x, labels, params, layout, alphas)


@dataclass
class Problem:
    """One workload at one batch size and dtype. Systems copy what they mutate. ``x`` is an
    array, or a SciPy CSR matrix (:attr:`sparse`: inference of a sparse-fed first layer)."""
    workload: Workload
    x: object
    labels: np.ndarray
    params: np.ndarray  # flat buffer, fusedense.layout format
    layout: np.ndarray
    alphas: np.ndarray
    _expected: object = field(default=None, repr=False)
    _record: object = field(default=None, repr=False)

    @classmethod
    def from_layers(cls, layers, activations, x, title="given weights") -> "Problem":
        """Inference of given weights ``[(W, b), ...]`` (W as (fan_in, fan_out); a trained
        model's, say) on the inputs ``x`` (an array, or SciPy sparse / fd CSR rows), in the dtype of ``x``."""
        if isinstance(x, CSR):
            x = x.to_scipy()
        x = x.tocsr() if is_sparse(x) else np.ascontiguousarray(x)
        sizes = (layers[0][0].shape[0], *(W.shape[1] for W, _ in layers))
        workload = Workload("model", title, sizes, tuple(activations), batches=(x.shape[0],))
        layout, alphas, _ = make_layout(sizes, workload.activations)
        params = flatten_layers(layers).astype(x.dtype)
        return cls(workload, x, np.zeros(x.shape[0], np.int64), params, layout, alphas)

    @property
    def sparse(self) -> bool:
        return is_sparse(self.x)

    def flops(self) -> float:
        """:meth:`Workload.flops` at this batch; a sparse first layer gathers only its non-zeros' rows."""
        batch, flops = self.x.shape[0], self.workload.flops(self.x.shape[0])
        if self.sparse:
            flops -= 2.0 * (batch * self.workload.sizes[0] - self.x.nnz) * self.workload.sizes[1]
        return flops

    def network(self, backend=None):
        """An fd.MLP holding the problem's weights, in its dtype, on ``backend``."""
        from ..network import MLP
        net = MLP(self.workload.sizes, list(self.workload.activations), dtype=self.x.dtype, backend=backend)
        net.set_weights([a for pair in self.layers() for a in pair])
        return net

    @property
    def record(self) -> np.ndarray:
        """The layer record the engines read (fusedense.layout)."""
        if self._record is None:
            self._record = checked_record(self.layout, self.alphas, self.params.size)
        return self._record

    def layers(self):
        """``[(W, b), ...]`` as fresh arrays (W is (fan_in, fan_out))."""
        return [(W.copy(), b.copy()) for W, b in layer_views(self.params, self.layout)]

    def hyper(self) -> np.ndarray:
        """The ``mlp_train_step`` hyper vector for :data:`ADAM` at step 1."""
        hyper = np.zeros(abi.N_HYPER)
        hyper[abi.H_OPTIMIZER] = abi.OPT_ADAM
        hyper[abi.H_LR], hyper[abi.H_BETA1] = ADAM["lr"], ADAM["beta1"]
        hyper[abi.H_BETA2], hyper[abi.H_EPS] = ADAM["beta2"], ADAM["eps"]
        hyper[abi.H_STEP] = 1
        return hyper

    def expected(self) -> np.ndarray:
        """Inference: the network's output. Training: the flat parameters after one step."""
        if self._expected is None:
            if self.workload.train:
                params = self.params.copy()
                opt_state = np.zeros((2, params.size), params.dtype)
                reference.mlp_train_step(self.x, self.labels, params, self.record, opt_state,
                                         abi.LOSS_SPARSE_XENT, self.hyper())
                self._expected = params
            elif self.sparse:  # the oracle engine's sparse first layer, then its dense stack
                self._expected = self.network("numpy").predict(self.x)
            else:
                self._expected = reference.mlp_forward(self.x, self.params, self.record)
        return self._expected


def flatten_layers(layers) -> np.ndarray:
    """``[(W, b), ...]`` (W as (fan_in, fan_out)) → one flat buffer in the fusedense layout."""
    return np.concatenate([a.ravel() for layer in layers for a in layer])


def dense_workload(n_in: int, n_out: int, activation: str) -> Workload:
    return Workload("dense", f"dense {n_in}→{n_out} {activation}", (n_in, n_out), (activation,),
                    batches=(1, 64, 1024))


MLP = Workload("mlp", "MLP 784→128→64→10 (relu, softmax out)", (784, 128, 64, 10),
               ("relu", "relu", "softmax"), batches=(1, 32, 1024))
FFN = Workload("ffn", "transformer FFN 1024→4096 gelu→1024", (1024, 4096, 1024),
               ("gelu", "identity"), batches=(1, 64))
TRAIN = Workload("train", "train step 784-128-64-10 (xent + Adam)",
                 (784, 128, 64, 10), ("relu", "relu", "softmax"), batches=(32, 256), train=True)

#: Workload names the CLI accepts, in report order ("dense" is built from --dense-shape/--activation).
NAMES = ("dense", "mlp", "ffn", "train")


def workloads(names, dense_shape=(1024, 1024), activation="relu"):
    fixed = {"mlp": MLP, "ffn": FFN, "train": TRAIN}
    return [dense_workload(*dense_shape, activation) if name == "dense" else fixed[name] for name in names]
