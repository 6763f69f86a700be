"""The engine contract: one interface, one gate, the same errors from every engine.

Each hostile input below runs through every engine; each must raise, and raise the same
exception type with the same message on all of them (the gate raises before any engine runs).
"""
import ast
import inspect
import pathlib

import numpy as np
import pytest

import fusedense as fd
from fusedense import _backends, abi
from fusedense._backends import interface
from fusedense.gate import Gate

ENGINES = _backends.backends()
SRC = pathlib.Path(fd.__file__).parent


@pytest.mark.parametrize("name", ENGINES)
def test_every_engine_defines_the_interface_with_its_parameters(name):
    engine = _backends.load_engine(name)
    for function in interface.FUNCTIONS:
        expected = list(inspect.signature(getattr(interface, function)).parameters)
        assert list(inspect.signature(getattr(engine, function)).parameters) == expected, (name, function)


def test_the_gate_defines_every_interface_function_with_its_parameters():
    for function in interface.FUNCTIONS:
        expected = list(inspect.signature(getattr(interface, function)).parameters)
        assert function in Gate.__dict__, function
        assert list(inspect.signature(Gate.__dict__[function]).parameters)[1:] == expected, function


def test_fronts_get_engines_only_behind_the_gate():
    """``load_engine`` (the bare engine) is for the kernel benchmarks; every other module uses
    ``load``, which returns the gate."""
    users = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "load_engine":
                users.add(path.relative_to(SRC).as_posix())
    assert users <= {"benchmarking/systems.py"}, users  # (bench/conftest.py too, outside the package)
    assert all(isinstance(_backends.load(name), Gate) for name in ENGINES)


# --- hostile inputs -----------------------------------------------------------------------

F32 = np.float32


def _net(backend, **kwargs):
    return fd.MLP([4, 8, 3], ["relu", "softmax"], random_state=0, backend=backend, **kwargs)


def _x(n=5, width=4, dtype=F32):
    return np.random.default_rng(0).random((n, width)).astype(dtype)


def _trained(backend, optimizer="adam"):
    net = _net(backend)
    net.set_optimizer(optimizer)
    net.train_step(_x(), np.arange(5) % 3, loss="sparse_categorical_crossentropy")
    return net


def _embedding(backend):
    return fd.EmbeddingMLP(10, 4, 3, [16, 10], random_state=0, backend=backend)


def _edit(obj, **attributes):
    for name, value in attributes.items():
        setattr(obj, name, value)
    return obj


def _layout_that_wraps():
    # offset + fan_in·fan_out + fan_out wraps int64: a kernel doing that sum would index anywhere
    return np.array([[0, 4, 8, 1], [2**62, 2**31, 2**31, 10]], np.int64)


CASES = {
    # functional API
    "dense x of the wrong width": lambda be: fd.dense(_x(width=5), np.ones((4, 3), F32), backend=be),
    "dense W 1-D": lambda be: fd.dense(_x(), np.ones(4, F32), backend=be),
    "dense b of the wrong length": lambda be: fd.dense(_x(), np.ones((4, 3), F32), np.ones(2, F32), backend=be),
    "dense mixed dtypes": lambda be: fd.dense(_x(), np.ones((4, 3)), backend=be),
    "dense unknown activation": lambda be: fd.dense(_x(), np.ones((4, 3), F32), activation="swish9", backend=be),
    "dense negative alpha": lambda be: fd.dense(_x(), np.ones((4, 3), F32), activation="elu", alpha=-1, backend=be),
    "dense empty batch": lambda be: fd.dense(_x(0), np.ones((4, 3), F32), backend=be),
    "dense read-only out": lambda be: fd.dense(_x(), np.ones((4, 3), F32), backend=be,
                                               out=_read_only(np.zeros((5, 3), F32))),
    "dense_grad gelu without z": lambda be: fd.dense_grad(np.ones((5, 3), F32), _x(), np.ones((4, 3), F32),
                                                          y=np.ones((5, 3), F32), activation="gelu", backend=be),
    "activate 0-d": lambda be: fd.activate(np.float32(1), "relu", backend=be),
    "mlp_forward layout that wraps int64": lambda be: fd.mlp_forward(_x(), np.zeros(100, F32), _layout_that_wraps(),
                                                                     backend=be),
    "mlp_forward fan_in mismatch": lambda be: fd.mlp_forward(_x(), np.zeros(100, F32),
                                                             [[0, 4, 8, 1], [40, 7, 3, 0]], backend=be),
    "mlp_forward short alphas": lambda be: fd.mlp_forward(_x(), np.zeros(100, F32), [[0, 4, 8, 1], [40, 8, 3, 0]],
                                                          alphas=[0.0], backend=be),
    "mlp_forward float layout": lambda be: fd.mlp_forward(_x(), np.zeros(100, F32), np.zeros((1, 4)), backend=be),
    "softmax_cross_entropy label 2**40": lambda be: fd.softmax_cross_entropy(np.zeros((2, 3)), [0, 2**40], backend=be),
    "softmax_cross_entropy negative label": lambda be: fd.softmax_cross_entropy(np.zeros((2, 3)), [0, -1], backend=be),
    "softmax_cross_entropy soft targets of the wrong shape": lambda be: fd.softmax_cross_entropy(
        np.zeros((2, 3)), np.zeros((2, 4)), backend=be),
    "binary_cross_entropy targets of the wrong shape": lambda be: fd.binary_cross_entropy(
        np.zeros((2, 3)), np.zeros(3), backend=be),
    "mean_squared_error mixed dtypes": lambda be: fd.mean_squared_error(np.zeros(3, F32), np.zeros(3), backend=be),
    "sgd_step grads of the wrong size": lambda be: fd.sgd_step(np.zeros(4), np.zeros(3), backend=be),
    "sgd_step momentum without velocity": lambda be: fd.sgd_step(np.zeros(4), np.zeros(4), momentum=0.9, backend=be),
    "adam_step step 0": lambda be: fd.adam_step(*np.zeros((4, 4)), step=0, backend=be),
    "adam_step step 2**63 (past a C long)": lambda be: fd.adam_step(*np.zeros((4, 4)), step=2**63, backend=be),
    "make_layout negative start": lambda be: fd.make_layout([3, 4], ["relu"], start=-5),
    "predict a masked array with masked values": lambda be: _net(be).predict(
        np.ma.masked_array(_x(), mask=np.eye(5, 4, dtype=bool))),
    "learning rate set to NaN after compile": lambda be: setattr(_trained(be).optimizer, "learning_rate", np.nan),
    "adam_step m of another dtype": lambda be: fd.adam_step(np.zeros(4), np.zeros(4), np.zeros(4, F32), np.zeros(4),
                                                            step=1, backend=be),
    # model level
    "fused_step label 2**40": lambda be: _trained(be).fused_step(_x(), np.array([0, 1, 2, 0, 2**40]), 0),
    "fused_step x of another dtype": lambda be: _trained(be).fused_step(_x(dtype=np.float64), np.zeros(5, np.int64), 0),
    "fused_step x of the wrong width": lambda be: _trained(be).fused_step(_x(width=3), np.zeros(5, np.int64), 0),
    "fused_step unknown loss id": lambda be: _trained(be).fused_step(_x(), np.zeros(5, np.int64), 7),
    "forward into a too small out": lambda be: _net(be).forward(_x(), np.zeros((4, 3), F32)),
    "hand-edited layout that wraps int64": lambda be: _edit(_net(be), layout=_layout_that_wraps()),
    "hand-edited layout entry (read-only)": lambda be: _net(be).layout.__setitem__((1, 0), 2**40),
    "hand-edited short alphas": lambda be: _edit(_net(be), alphas=[0.1]),
    "hand-edited params too short": lambda be: _edit(_net(be), params=np.zeros(10, F32)),
    "hand-edited params of another dtype": lambda be: _edit(_net(be), params=np.zeros(67)),
    "hand-edited grads too short": lambda be: _edit(_trained(be), grads=np.zeros(3, F32)).fused_step(
        _x(), np.zeros(5, np.int64), 0),
    "hand-edited one-row opt_state for Adam": lambda be: _edit(_trained(be), opt_state=np.zeros((1, 67), F32)).fused_step(
        _x(), np.zeros(5, np.int64), 0),
    "hand-edited grads aliasing opt_state": lambda be: (lambda net: _edit(net, grads=net.opt_state[1]).fused_step(
        _x(), np.zeros(5, np.int64), 0))(_trained(be)),
    "embedding forward token past the vocabulary": lambda be: _embedding(be).forward(
        np.array([[0, 1, 10]]), np.zeros((1, 10), F32)),
    "embedding forward negative token": lambda be: _embedding(be).predict(np.array([[0, -1, 2]])),
    "embedding train step label past the vocabulary": lambda be: _edit(_embedding(be), optimizer=None).fused_step(
        np.array([[0, 1, 2]]), np.array([10]), 0),
    "embedding generate boundary past the vocabulary": lambda be: _embedding(be).generate(2, boundary=10),
    # dropout rates and seeds live in the layer record: checked before any engine runs
    "dropout rate 1": lambda be: _net(be, dropout=[0.0, 1.0]),
    "dropout rate NaN": lambda be: _net(be).set_dropout([np.nan, 0.0]),
    "dropout rate negative": lambda be: _net(be).set_dropout([-0.5, 0.0]),
    "dropout rate infinite": lambda be: _net(be).set_dropout([0.0, np.inf]),
    "dropout rates of the wrong length": lambda be: _net(be).set_dropout([0.5]),
    "dropout rates as text": lambda be: _net(be).set_dropout(["0.5", "0"]),
    "dropout seed negative": lambda be: _net(be, dropout=[0.5, 0.0], dropout_seeds=[-1, 0]),
    "dropout seed 2**64": lambda be: _net(be).set_dropout([0.5, 0.0], seeds=[2**64, 0]),
    "dropout seed a float": lambda be: _net(be).set_dropout([0.5, 0.0], seeds=[1.5, 0]),
    "dropout train step at step 0": lambda be: (lambda net: net.engine.mlp_train_step(
        _x(), np.zeros(5, np.int64), net.params, np.zeros_like(net.params), np.zeros((1, net.n_params), F32),
        net.layers, 0, fd.optimizers.SGD().hyper(0), None, None))(_net(be, dropout=[0.5, 0.0])),
    "dropout train step at step 2.5": lambda be: (lambda net: net.engine.mlp_train_step(
        _x(), np.zeros(5, np.int64), net.params, np.zeros_like(net.params), np.zeros((1, net.n_params), F32),
        net.layers, 0, _with_step(fd.optimizers.SGD().hyper(0), 2.5), None, None))(_net(be, dropout=[0.5, 0.0])),
    # a whole epoch in one call: every argument the loop reads, checked before it starts
    "train_epoch order past the rows": lambda be: _epoch(be, order=np.array([0, 4, 5])),
    "train_epoch negative order": lambda be: _epoch(be, order=np.array([0, -1])),
    "train_epoch float order": lambda be: _epoch(be, order=np.arange(5.0)),
    "train_epoch empty order": lambda be: _epoch(be, order=np.arange(0)),
    "train_epoch batch_size 0": lambda be: _epoch(be, batch_size=0),
    "train_epoch batch_losses too short": lambda be: _epoch(be, batch_size=2, batch_losses=np.zeros(2)),
    "train_epoch flag 1 instead of True": lambda be: _epoch(be, penalty_over_weight=1),
    "train_epoch outputs one row short": lambda be: _epoch(be, outputs=np.zeros((4, 3), F32)),
    "train_epoch outputs float64": lambda be: _epoch(be, outputs=np.zeros((5, 3))),
    "train_epoch negative sample weight": lambda be: _epoch(be, sample_weight=-np.ones(5, F32)),
    "train_epoch label 2**40": lambda be: _epoch(be, targets=np.array([0, 1, 2, 0, 2**40])),
    "train_epoch step count 2**53": lambda be: _epoch(be, hyper=_applied(fd.optimizers.Adam().hyper(1), 2.0**53)),
    "dropout on sparse input": lambda be: _net(be, dropout=[0.0, 0.5]).train_step(
        _sparse_x(), np.arange(5) % 3, loss="sparse_categorical_crossentropy"),
}


def _epoch(backend, **changes):
    """mlp_train_epoch on the gate with valid arguments but ``changes``."""
    net = _trained(backend)
    args = dict(x=_x(), targets=np.arange(5) % 3, order=None, batch_size=2, params=net.params, grads=net.grads,
                opt_state=net.opt_state, layers=net.layers, loss_id=0, hyper=net._hyper, sample_weight=None,
                batch_losses=np.zeros(3), outputs=None, penalty_over_weight=False, epsilon_on_sqrt_v=False)
    args.update(changes)
    return net.engine.mlp_train_epoch(**args)


def _applied(hyper, applied):
    hyper[abi.H_APPLIED] = applied
    return hyper


def _with_step(hyper, step):
    hyper[abi.H_STEP] = step
    return hyper


def _sparse_x():
    import scipy.sparse

    return scipy.sparse.csr_matrix(_x())


def _read_only(a):
    a.flags.writeable = False
    return a


def _outcome(case, backend):
    try:
        CASES[case](backend)
    except Exception as exc:  # noqa: BLE001 (the exception itself is what is compared)
        return type(exc).__name__, str(exc)
    return None


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input_gets_the_same_error_from_every_engine(case):
    outcomes = {backend: _outcome(case, backend) for backend in ENGINES}
    first = outcomes[ENGINES[0]]
    assert first is not None, f"{case}: no error raised"
    assert first[0] in ("ValueError", "TypeError"), first
    assert all(outcome == first for outcome in outcomes.values()), outcomes


@pytest.mark.parametrize("backend", ENGINES)
def test_losses_run_on_the_engine_asked_for(backend, monkeypatch):
    """fd.binary_cross_entropy / mean_squared_error / soft-target softmax_cross_entropy call the
    engine's loss kernel (never the oracle directly) and match the oracle."""
    from fusedense import abi, reference
    calls = []
    gate = _backends.load(backend)
    real = gate.engine.loss
    monkeypatch.setattr(gate.engine, "loss", lambda *args: calls.append(args[0]) or real(*args))
    rng = np.random.default_rng(1)
    logits, targets = rng.normal(size=(6, 4)), rng.random((6, 4))
    for function, loss_id, oracle in ((fd.binary_cross_entropy, abi.LOSS_BINARY_XENT,
                                       reference.binary_cross_entropy_with_logits),
                                      (fd.mean_squared_error, abi.LOSS_MSE, reference.mean_squared_error),
                                      (fd.softmax_cross_entropy, abi.LOSS_CATEGORICAL_XENT,
                                       reference.softmax_cross_entropy_probs)):
        loss, grad = function(logits, targets, backend=backend)
        expected_loss, expected_grad = oracle(logits, targets)
        np.testing.assert_allclose(loss, expected_loss, rtol=1e-12)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-10, atol=1e-15)
        assert calls[-1] == loss_id
