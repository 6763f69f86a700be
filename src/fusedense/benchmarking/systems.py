"""Who runs the workloads: fusedense (kernel and public API), NumPy as users write it, and the
peers PyTorch eager, ONNX Runtime and JAX when they are installed (imported only when used).

``system.prepare(problem, threads)`` returns ``(run, result)``: ``run()`` does one inference or
one training step; ``result()`` is what is checked against the reference (the output, or the
flat parameters after training). A system that cannot run a workload raises :class:`NotSupported`.
"""
from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np

from .. import _backends, abi, functional
from ..activations import get_activation
from ..layout import QUANT_KINDS, layer_views
from . import numpy_user
from .workloads import ADAM, flatten_layers


class NotSupported(Exception):
    """This system cannot run this workload (the reason is the message)."""


class System:
    name = ""
    module = None  # import name of the peer package; None: always available
    #: largest error (of the reference's scale) of a right answer; None: the dtype's CHECK_TOLERANCE.
    #: Quantized systems set their own: they compute with other numbers than the reference.
    tolerance = None

    def missing(self) -> str | None:
        """Why this system cannot run here, or None."""
        if self.module and importlib.util.find_spec(self.module) is None:
            return "not installed"
        return None

    def prepare(self, problem, threads):
        raise NotImplementedError


# --- fusedense --------------------------------------------------------------------------


class FusedenseKernel(System):
    """The backend's kernel called directly with pre-validated arrays: the steady-state cost,
    what fd.MLP's predict fast path pays."""

    def __init__(self, backend):
        self.backend = backend
        self.name = f"fusedense-{backend}"

    def prepare(self, problem, threads):
        if problem.sparse:
            return _sparse_forward(problem, self.backend, checked=False)
        kernels = _backends.load_engine(self.backend)
        x, layout, alphas, layers = problem.x, problem.layout, problem.alphas, problem.record
        params = problem.params.copy()
        if problem.workload.train:
            grads = np.empty_like(params)
            opt_state = np.zeros((2, params.size), params.dtype)
            hyper = problem.hyper()
            labels = problem.labels

            def run():
                kernels.mlp_train_step(x, labels, params, grads, opt_state, layers, abi.LOSS_SPARSE_XENT,
                                       hyper, None, None)
                hyper[abi.H_STEP] += 1
            return run, lambda: params
        out = np.empty((x.shape[0], problem.workload.sizes[-1]), x.dtype)
        if len(layout) == 1:
            (W, b), = layer_views(params, layout)
            act_id, alpha = int(layout[0, 3]), float(alphas[0])
            return (lambda: kernels.dense_forward(x, W, b, act_id, alpha, out, None)), lambda: out
        return (lambda: kernels.mlp_forward(x, params, layers, out)), lambda: out


class FusedenseAPI(System):
    """The public call (fd.dense / fd.mlp_forward with out=): validation included."""

    def __init__(self, backend):
        self.backend = backend
        self.name = f"fusedense-{backend}-api"

    def prepare(self, problem, threads):
        if problem.workload.train:
            raise NotSupported("the functional API has no one-call training step (fd.MLP has)")
        if problem.sparse:
            return _sparse_forward(problem, self.backend, checked=True)
        x, params, layout, alphas = problem.x, problem.params.copy(), problem.layout, problem.alphas
        out = np.empty((x.shape[0], problem.workload.sizes[-1]), x.dtype)
        backend = self.backend
        if len(layout) == 1:
            (W, b), = layer_views(params, layout)
            activation = problem.workload.activations[0]
            return (lambda: functional.dense(x, W, b, activation, backend=backend, out=out)), lambda: out
        return (lambda: functional.mlp_forward(x, params, layout, alphas, backend=backend, out=out)), \
            lambda: out


def _sparse_forward(problem, backend, checked):
    """Inference of sparse rows through an fd.MLP: ``checked`` is the public ``predict`` (SciPy
    input converted and validated each call), else ``forward`` on rows converted once."""
    if problem.workload.train:
        raise NotSupported("sparse training is timed by bench/bench_text.py")
    net = problem.network(backend)
    if checked:
        outcome = {}

        def run():
            outcome["y"] = net.predict(problem.x)
        return run, lambda: outcome["y"]
    x = net.as_inputs(problem.x)
    out = np.empty((x.shape[0], net.sizes[-1]), net.dtype)
    return (lambda: net.forward(x, out)), lambda: out


# --- NumPy as users write it ------------------------------------------------------------


class NumpyUser(System):
    name = "numpy"

    def prepare(self, problem, threads):
        layers, x = problem.layers(), problem.x
        if problem.workload.train:
            trainer = numpy_user.MLPTrainer(layers, **ADAM)
            return (lambda: trainer.step(x, problem.labels)), lambda: flatten_layers(layers)
        acts = [numpy_user.activation(a) for a in problem.workload.activations]
        result = {}

        def run():
            result["y"] = numpy_user.mlp_forward(x, layers, acts)
        return run, lambda: result["y"]


class NumpyMatmul(System):
    """``x @ W`` alone, no bias or activation: the floor of any dense layer, against which the
    cost of a fused epilogue is judged. Single-layer inference only."""
    name = "numpy-matmul"

    @staticmethod
    def applies(workload) -> bool:
        return len(workload.sizes) == 2 and not workload.train

    def prepare(self, problem, threads):
        if not self.applies(problem.workload) or problem.sparse:
            raise NotSupported("x @ W alone is the baseline of single dense layers on dense inputs")
        (W, b), = problem.layers()
        x, act = problem.x, numpy_user.activation(problem.workload.activations[0])
        out = np.empty((x.shape[0], W.shape[1]), x.dtype)
        # the check adds the bias and activation outside the timing: the product must be right
        return (lambda: np.matmul(x, W, out=out)), lambda: act(out + b)


# --- peers ------------------------------------------------------------------------------


def _alpha(name):
    return get_activation(name).default_alpha


#: activation name → torch module (``nn`` is torch.nn)
TORCH_ACTIVATIONS = {
    "identity": lambda nn: nn.Identity(),
    "relu": lambda nn: nn.ReLU(),
    "leaky_relu": lambda nn: nn.LeakyReLU(_alpha("leaky_relu")),
    "elu": lambda nn: nn.ELU(_alpha("elu")),
    "sigmoid": lambda nn: nn.Sigmoid(),
    "tanh": lambda nn: nn.Tanh(),
    "gelu": lambda nn: nn.GELU(approximate="tanh"),
    "gelu_erf": lambda nn: nn.GELU(),
    "silu": lambda nn: nn.SiLU(),
    "softplus": lambda nn: nn.Softplus(),
    "softmax": lambda nn: nn.Softmax(dim=1),
    "log_softmax": lambda nn: nn.LogSoftmax(dim=1),
}


class Torch(System):
    name = "pytorch"
    module = "torch"

    def prepare(self, problem, threads):
        import torch
        from torch import nn

        torch.set_num_threads(threads)
        modules = self.modules(problem)
        if problem.sparse:
            return self._sparse(torch, modules, problem)
        x = torch.from_numpy(problem.x)
        if problem.workload.train:
            return self._train(torch, nn.Sequential(*modules[:-1]), x, torch.from_numpy(problem.labels))
        model, outcome = nn.Sequential(*modules), {}

        @torch.inference_mode()
        def run():
            outcome["y"] = model(x)
        return run, lambda: outcome["y"].numpy()

    @staticmethod
    def modules(problem):
        """[Linear, activation, Linear, ...] holding the problem's weights, in its dtype."""
        import torch
        from torch import nn

        dtype = torch.float32 if problem.x.dtype == np.float32 else torch.float64
        modules = []
        for (W, b), activation in zip(problem.layers(), problem.workload.activations):
            linear = nn.Linear(*W.shape, dtype=dtype)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(W.T))  # torch stores (out, in)
                linear.bias.copy_(torch.from_numpy(b))
            modules += [linear, TORCH_ACTIVATIONS[activation](nn)]
        return modules

    @staticmethod
    def _sparse(torch, modules, problem):
        """Sparse rows as a torch CSR tensor: ``torch.addmm(b, x, W)`` (a sparse × dense product),
        then the other modules."""
        if problem.workload.train:
            raise NotSupported("sparse training is timed by bench/bench_text.py")
        import warnings

        x = problem.x
        with warnings.catch_warnings():  # "sparse CSR tensor support is in beta"
            warnings.simplefilter("ignore")
            rows = torch.sparse_csr_tensor(torch.from_numpy(x.indptr.astype(np.int64)),
                                           torch.from_numpy(x.indices.astype(np.int64)), torch.from_numpy(x.data),
                                           size=x.shape, check_invariants=True)
        first, rest = modules[0], torch.nn.Sequential(*modules[1:])
        W, b = first.weight.detach().T.contiguous(), first.bias.detach()
        outcome = {}

        @torch.inference_mode()
        def run():
            outcome["y"] = rest(torch.addmm(b, rows, W))
        return run, lambda: outcome["y"].numpy()

    @staticmethod
    def _train(torch, model, x, labels):
        """The usual eager loop: cross-entropy of the logits (the model ends before softmax), Adam."""
        loss_fn = torch.nn.CrossEntropyLoss()
        optimizer = torch.optim.Adam(model.parameters(), lr=ADAM["lr"], betas=(ADAM["beta1"], ADAM["beta2"]),
                                     eps=ADAM["eps"])

        def run():
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), labels).backward()
            optimizer.step()

        def result():
            linears = [m for m in model if isinstance(m, torch.nn.Linear)]
            return flatten_layers([(m.weight.detach().numpy().T, m.bias.detach().numpy()) for m in linears])
        return run, result


def _onnx_activation(helper, name, inp, out):
    """The ONNX nodes computing ``out = name(inp)``."""
    simple = {"identity": "Identity", "relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh",
              "softplus": "Softplus"}
    if name in simple:
        return [helper.make_node(simple[name], [inp], [out])]
    if name == "leaky_relu":
        return [helper.make_node("LeakyRelu", [inp], [out], alpha=_alpha(name))]
    if name == "elu":
        return [helper.make_node("Elu", [inp], [out], alpha=_alpha(name))]
    if name in ("gelu", "gelu_erf"):
        return [helper.make_node("Gelu", [inp], [out], approximate="tanh" if name == "gelu" else "none")]
    if name == "silu":
        return [helper.make_node("Sigmoid", [inp], [out + "_sig"]),
                helper.make_node("Mul", [inp, out + "_sig"], [out])]
    if name in ("softmax", "log_softmax"):
        return [helper.make_node("Softmax" if name == "softmax" else "LogSoftmax", [inp], [out], axis=-1)]
    raise NotSupported(f"no ONNX mapping for activation {name!r}")


class OnnxRuntime(System):
    name = "onnxruntime"
    module = "onnxruntime"
    OPSET = 20  # Gelu (with approximate="tanh") arrived in opset 20

    def missing(self):
        if importlib.util.find_spec("onnx") is None:
            return "not installed (needs onnx too)"
        return super().missing()

    def prepare(self, problem, threads):
        if problem.workload.train:
            raise NotSupported("an inference session does not train")
        if problem.sparse:
            raise NotSupported("sparse inputs: the standard ONNX operators take dense tensors")
        import onnx

        model = self._graph(problem)
        onnx.checker.check_model(model)
        return self._session(model, problem.x, threads)

    def _graph(self, problem, matmul_add=False):
        """The network as an ONNX model: one Gemm per layer (matmul_add: MatMul then Add, the
        form ONNX Runtime's dynamic quantization rewrites), then its activation."""
        from onnx import helper, numpy_helper

        elem = helper.np_dtype_to_tensor_dtype(problem.x.dtype)
        nodes, weights, h = [], [], "x"
        for l, ((W, b), activation) in enumerate(zip(problem.layers(), problem.workload.activations)):
            weights += [numpy_helper.from_array(W, f"W{l}"), numpy_helper.from_array(b, f"b{l}")]
            if matmul_add:
                nodes += [helper.make_node("MatMul", [h, f"W{l}"], [f"p{l}"]),
                          helper.make_node("Add", [f"p{l}", f"b{l}"], [f"z{l}"])]
            else:
                nodes.append(helper.make_node("Gemm", [h, f"W{l}", f"b{l}"], [f"z{l}"]))
            h = f"h{l}"
            nodes += _onnx_activation(helper, activation, f"z{l}", h)
        graph = helper.make_graph(
            nodes, problem.workload.name, [helper.make_tensor_value_info("x", elem, ["batch", problem.x.shape[1]])],
            [helper.make_tensor_value_info(h, elem, ["batch", problem.workload.sizes[-1]])], weights)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.OPSET)])

    @staticmethod
    def _session(model, x, threads):
        """``(run, result)`` of an inference session of ``model`` on ``x``."""
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # idle threads that spin after a call would steal the cores from the next system timed
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                               providers=["CPUExecutionProvider"])
        feed, outcome = {"x": x}, {}

        def run():
            outcome["y"] = session.run(None, feed)[0]
        return run, lambda: outcome["y"]


def _jax_activations(jax):
    """activation name → jax function"""
    return {"identity": lambda z: z, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "tanh": jax.numpy.tanh,
            "leaky_relu": lambda z: jax.nn.leaky_relu(z, _alpha("leaky_relu")),
            "elu": lambda z: jax.nn.elu(z, _alpha("elu")),
            "gelu": lambda z: jax.nn.gelu(z, approximate=True),
            "gelu_erf": lambda z: jax.nn.gelu(z, approximate=False), "silu": jax.nn.silu,
            "softplus": jax.nn.softplus, "softmax": jax.nn.softmax, "log_softmax": jax.nn.log_softmax}


def _start_jax_on_one_cpu():
    """Starts JAX's CPU client while this process may run on one CPU only: XLA sizes its thread
    pool from the CPU affinity when the client starts, and its XLA_FLAGS thread options no longer
    cap it (docs/performance-notes.md). The process's affinity is restored afterwards; XLA's pool
    keeps one thread."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if not cpus:  # no affinity control here: the caller's import starts the client as it is
        return
    os.sched_setaffinity(0, {min(cpus)})
    try:
        import jax
        jax.devices()  # creates the client and its thread pool
    finally:
        os.sched_setaffinity(0, cpus)


class Jax(System):
    name = "jax"
    module = "jax"

    def prepare(self, problem, threads):
        if problem.sparse:
            raise NotSupported("sparse inputs: jax.experimental.sparse is not benchmarked")
        if threads == 1 and "jax" not in sys.modules:
            _start_jax_on_one_cpu()
        import jax

        if problem.x.dtype == np.float64:
            jax.config.update("jax_enable_x64", True)
        table = _jax_activations(jax)
        acts = [table[a] for a in problem.workload.activations]

        def forward(layers, x, last_activation=True):
            h = x
            for l, ((W, b), f) in enumerate(zip(layers, acts)):
                h = h @ W + b
                if l < len(layers) - 1 or last_activation:
                    h = f(h)
            return h

        layers = [(jax.numpy.asarray(W), jax.numpy.asarray(b)) for W, b in problem.layers()]
        x = jax.numpy.asarray(problem.x)
        if problem.workload.train:
            return self._train(jax, forward, layers, x, jax.numpy.asarray(problem.labels))
        compiled, outcome = jax.jit(forward), {}

        def run():
            outcome["y"] = compiled(layers, x).block_until_ready()
        return run, lambda: np.asarray(outcome["y"])

    @staticmethod
    def _train(jax, forward, layers, x, labels):
        """A jitted step: grad of the sparse softmax cross-entropy of the logits, then Adam."""
        jnp = jax.numpy
        beta1, beta2, eps, lr = ADAM["beta1"], ADAM["beta2"], ADAM["eps"], ADAM["lr"]

        def loss(layers, x, labels):
            logp = jax.nn.log_softmax(forward(layers, x, last_activation=False))
            return -jnp.take_along_axis(logp, labels[:, None], axis=1).mean()

        @jax.jit
        def step(layers, m, v, t, x, labels):
            grads = jax.grad(loss)(layers, x, labels)
            m = jax.tree.map(lambda m, g: beta1 * m + (1 - beta1) * g, m, grads)
            v = jax.tree.map(lambda v, g: beta2 * v + (1 - beta2) * g * g, v, grads)
            step_size, correction = lr / (1 - beta1**t), 1 - beta2**t
            layers = jax.tree.map(lambda p, m, v: p - step_size * m / (jnp.sqrt(v / correction) + eps), layers, m, v)
            return layers, m, v

        zeros = jax.tree.map(jnp.zeros_like, layers)
        state = {"layers": layers, "m": zeros, "v": zeros, "t": 0}

        def run():
            state["t"] += 1
            state["layers"], state["m"], state["v"] = step(state["layers"], state["m"], state["v"],
                                                           float(state["t"]), x, labels)
            jax.block_until_ready(state["layers"])
        return run, lambda: flatten_layers([(np.asarray(W), np.asarray(b)) for W, b in state["layers"]])


# --- quantized inference (fusedense bench --quantized int8|bf16) ----------------------------
#: a quantized answer is right within this error of the float reference's scale: int8's per-row
#: and per-column steps are 1/254 of the largest value, bf16's 2⁻⁹ of each (8 significant bits);
#: a transposed weight or a lost bias is off by O(1)
QUANTIZED_TOLERANCE = {"int8": 5e-2, "bf16": 2e-2}


class _QuantizedSystem(System):
    """A system of the quantized comparison: named ``<base>-<dtype>``, checked within
    QUANTIZED_TOLERANCE, float32 inference only."""

    def __init__(self, base, dtype):
        self.dtype, self.name, self.tolerance = dtype, f"{base}-{dtype}", QUANTIZED_TOLERANCE[dtype]

    @staticmethod
    def require_float32_inference(problem):
        if problem.workload.train or problem.x.dtype != np.float32 or problem.sparse:
            raise NotSupported("quantized inference of float32 models on dense inputs")


class FusedenseQuantized(_QuantizedSystem):
    """``fd.quantize(model, dtype)`` run through the engine's quantized_mlp_forward kernel."""

    def __init__(self, backend, dtype):
        super().__init__(f"fusedense-{backend}", dtype)
        self.backend = backend

    def prepare(self, problem, threads):
        self.require_float32_inference(problem)
        from ..quantized import quantize
        model = quantize(problem.network(), self.dtype, backend=self.backend)
        kernels, x = _backends.load_engine(self.backend), problem.x
        out = np.empty((x.shape[0], problem.workload.sizes[-1]), np.float32)
        return (lambda: kernels.quantized_mlp_forward(x, model.qbuffer, model.qlayers, out)), lambda: out


class TorchQuantized(_QuantizedSystem):
    """int8: ``torch.ao.quantization.quantize_dynamic`` (qint8 weights, per-row dynamic activations,
    the fbgemm/x86 engine); bf16: the model and its input in torch.bfloat16."""
    module = "torch"

    def __init__(self, dtype):
        super().__init__("pytorch", dtype)

    def prepare(self, problem, threads):
        self.require_float32_inference(problem)
        import warnings

        import torch
        from torch import nn

        torch.set_num_threads(threads)
        model, x, outcome = nn.Sequential(*Torch.modules(problem)).eval(), torch.from_numpy(problem.x), {}
        if self.dtype == "int8":
            if "fbgemm" in torch.backends.quantized.supported_engines:
                torch.backends.quantized.engine = "fbgemm"
            with warnings.catch_warnings():  # (torch.ao.quantization is deprecated in favour of torchao)
                warnings.simplefilter("ignore")
                model = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)

            @torch.inference_mode()
            def run():
                outcome["y"] = model(x)
        else:
            model = model.to(torch.bfloat16)

            @torch.inference_mode()
            def run():
                outcome["y"] = model(x.to(torch.bfloat16)).float()
        return run, lambda: outcome["y"].numpy()


class OnnxRuntimeQuantized(_QuantizedSystem, OnnxRuntime):
    """``onnxruntime.quantization.quantize_dynamic`` (int8 weights per column, uint8 activations
    quantized per call) of the MatMul + Add graph; int8 only."""

    def __init__(self, dtype):
        super().__init__("onnxruntime", dtype)

    def prepare(self, problem, threads):
        self.require_float32_inference(problem)
        if self.dtype != "int8":
            raise NotSupported("ONNX Runtime's dynamic quantization is int8 only")
        import tempfile

        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory() as tmp:
            source, target = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "int8.onnx")
            onnx.save(self._graph(problem, matmul_add=True), source)
            quantize_dynamic(source, target, per_channel=True, weight_type=QuantType.QInt8)
            quantized = onnx.load(target)
        return self._session(quantized, problem.x, threads)


QUANTIZED_DTYPES = tuple(QUANT_KINDS)


def all_systems(quantized=None):
    """Every system this installation knows, fusedense backends first, fastest first. With
    ``quantized`` ("int8" or "bf16"): the systems of a quantized comparison — fusedense's
    quantized engines, the peers' quantization, and float32 fusedense and NumPy beside them."""
    if quantized is not None:
        engines = [name for name in _backends.backends() if name != "numpy"]  # (the oracle is not timed)
        return ([FusedenseQuantized(name, quantized) for name in engines] + [FusedenseKernel("cython")]
                * ("cython" in engines) + [NumpyUser(), TorchQuantized(quantized), OnnxRuntimeQuantized(quantized)])
    fusedense = [cls(name) for name in _backends.backends() for cls in (FusedenseKernel, FusedenseAPI)]
    return fusedense + [NumpyUser(), NumpyMatmul(), Torch(), OnnxRuntime(), Jax()]


def _every_system():
    """all_systems() and then each quantized comparison's, each name once."""
    systems = {system.name: system for system in all_systems()}
    for dtype in QUANTIZED_DTYPES:
        systems.update({system.name: system for system in all_systems(dtype) if system.name not in systems})
    return systems


def known_names():
    """Every system name `fusedense bench --systems` accepts (with or without --quantized)."""
    return list(_every_system())


def system_named(name):
    """The system called ``name`` (quantized ones included): a child of the process mode rebuilds its one system."""
    return _every_system()[name]
