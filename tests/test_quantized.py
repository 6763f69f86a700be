"""Quantized inference (fd.quantize, int8 and bf16): the oracle against independent computations,
every engine against the oracle (int8 integer sums bit for bit, floats within a stated
tolerance), every SIMD build the CPU has (FUSEDENSE_SIMD caps the dispatch), hostile inputs
through the gate, the fronts, pickling, and accuracy on digits."""
import pickle

import numpy as np
import pytest

import fusedense as fd
from fusedense import _backends, reference, tuning
from fusedense.gate import checked_quantized_record
from fusedense.layout import QLAYER, quantized_layer_views
from support import run_in_simd_build

ENGINES = _backends.backends()
KINDS = ("int8", "bf16")
#: Engines against the oracle: the oracle multiplies the same quantized values in float64, the
#: engines sum in float32 (int8: exact integers, then one scale product and the bias; bf16: exact
#: products, float32 sums), so a few float32 ulps of the output's magnitude.
TOLERANCE = dict(rtol=2e-5, atol=2e-5)

# widths that exercise every edge: k not a multiple of 4, n past one 64-column panel and not a
# multiple of 16, last panels of 16 and 48 columns; batches across the row tiles and 48-row blocks
SIZES = [37, 70, 110, 10]
BATCHES = (1, 5, 7, 49, 100)


def _network(sizes=SIZES, activations=("relu", "tanh", "softmax"), seed=0):
    return fd.MLP(sizes, list(activations), random_state=seed)


def _inputs(rows, width, seed=1):
    return np.random.default_rng(seed).normal(size=(rows, width)).astype(np.float32)


# --- the oracle against independent computations ------------------------------------------------


def test_bf16_round_is_nearest_even_on_the_8_bit_mantissa():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=2000) * 10.0 ** rng.integers(-30, 30, 2000),
                        [0.0, -0.0, 1.0, 1 + 2**-8, 1 + 3 * 2**-8, 3.4e38, -3.4e38, np.inf, -np.inf]]
                       ).astype(np.float32)
    rounded = reference.bf16_to_float(reference.bf16_round(x)).astype(np.float64)
    # independently: the two bf16 neighbours of x (8 significant bits), in float64
    exponent = np.floor(np.log2(np.abs(x.astype(np.float64), where=x != 0, out=np.ones(len(x)))))
    ulp = 2.0 ** (exponent - 7)
    finite = np.isfinite(x) & (np.abs(x) < 3.38e38)
    low = np.floor(x[finite] / ulp[finite]) * ulp[finite]
    high = low + ulp[finite]
    nearest = np.where(x[finite] - low < high - x[finite], low, high)
    tie = x[finite] - low == high - x[finite]
    even = np.where((low / ulp[finite]) % 2 == 0, low, high)
    np.testing.assert_array_equal(rounded[finite], np.where(tie, even, nearest))
    assert rounded[1 + 2**-8 == x].tolist() == [1.0]  # a tie goes to the even neighbour
    assert rounded[1 + 3 * 2**-8 == x].tolist() == [1 + 2**-6]
    assert np.isinf(rounded[np.abs(x) >= 3.4e38]).all()  # past bf16's largest: ±inf
    assert np.isnan(reference.bf16_to_float(reference.bf16_round(np.float32([np.nan])))).all()


def test_int8_row_codes_are_the_nearest_multiples_of_the_row_scale():
    x = _inputs(50, 33)
    x[3] = 0
    q, scale = reference.quantize_rows_int8(x)
    amax = np.abs(x.astype(np.float64)).max(axis=1)
    np.testing.assert_allclose(scale, amax / 127, rtol=1e-7)
    assert q.min() >= -127 and q.max() <= 127 and (np.abs(q).max(axis=1)[amax > 0] == 127).all()
    assert (q[3] == 0).all() and scale[3] == 0
    # every code is x / scale rounded (within float32 rounding of the quotient)
    ideal = x.astype(np.float64) / np.where(scale > 0, scale, 1)[:, None]
    assert np.abs(q - ideal).max() <= 0.5 + 1e-4
    # a calibrated scale clips what lies past it
    q, scale = reference.quantize_rows_int8(np.float32([[0.5, -4.0, 1.0]]), x_amax=1.0)
    assert q.tolist() == [[64, -127, 127]] and scale[0] == np.float32(1) / np.float32(127)


def test_non_finite_rows_give_nan_outputs_and_leave_other_rows_alone():
    x = _inputs(4, SIZES[0])
    x[1, 5], x[2, 0] = np.nan, np.inf
    for kind in KINDS:
        q = fd.quantize(_network(), kind, backend="numpy")
        out = q.predict(x)
        assert np.isnan(out[1]).all()
        assert np.isfinite(out[[0, 3]]).all()
        np.testing.assert_allclose(out[[0, 3]], q.predict(x[[0, 3]]), rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_oracle_layer_matches_the_dequantized_weights_in_float64(kind):
    net = _network()
    q = fd.quantize(net, kind, backend="numpy")
    x = _inputs(9, SIZES[0])
    y, acc = reference.quantized_dense_forward(x, q.qbuffer, q.qlayers, 0)
    W_stored, scales, b, _ = quantized_layer_views(q.qbuffer, q.qlayers)[0]
    if kind == "int8":
        codes, scale = reference.quantize_rows_int8(x)
        W_codes = W_stored
        W = W_codes * scales.astype(np.float64)
        # independently: the integer product in Python integers
        exact = np.array([[sum(int(a) * int(w) for a, w in zip(row, col)) for col in W_codes.T] for row in codes])
        np.testing.assert_array_equal(acc, exact)
        x_used = codes * scale.astype(np.float64)[:, None]
    else:
        W = reference.bf16_to_float(W_stored).astype(np.float64)
        x_used = reference.bf16_to_float(reference.bf16_round(x)).astype(np.float64)
    np.testing.assert_allclose(y, np.maximum(x_used @ W + b, 0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind, bound", [("int8", 0.05), ("bf16", 0.02)])
def test_quantized_weights_stay_within_the_quantization_step_of_the_float_weights(kind, bound):
    net = _network()
    q = fd.quantize(net, kind)
    for (W, b), (Wq, bq) in zip(net.weights, q.dequantized_weights()):
        # half a step: of the column's scale (int8), of bf16's 8 significant bits (bf16)
        half_step = np.abs(W).max(axis=0) / 254 if kind == "int8" else np.abs(W) * 2.0**-8
        assert (np.abs(Wq - W) <= half_step * (1 + 1e-6) + 1e-12).all()
        np.testing.assert_array_equal(bq, b)
    x = _inputs(200, SIZES[0])
    assert np.abs(q.predict(x) - net.predict(x)).max() < bound


# --- every engine against the oracle --------------------------------------------------------------


def check_engine_against_oracle(engine, kind, batches=BATCHES):
    """Each layer (int8 integer sums bit for bit) and the whole network of ``engine``."""
    net = _network()
    q = fd.quantize(net, kind, backend=engine)
    for B in batches:
        x = _inputs(B, SIZES[0], seed=B)
        h = x
        for layer in range(len(SIZES) - 1):
            n = SIZES[layer + 1]
            y = np.full((B, n), np.nan, np.float32)
            acc = np.full((B, n), -1, np.int32) if kind == "int8" else None
            q.engine.quantized_dense_forward(h, q.qbuffer, q.qlayers, layer, y, acc)
            y_ref, acc_ref = reference.quantized_dense_forward(h, q.qbuffer, q.qlayers, layer)
            if kind == "int8":
                np.testing.assert_array_equal(acc, acc_ref, err_msg=f"{engine} layer {layer} B={B}")
            np.testing.assert_allclose(y, y_ref, **TOLERANCE, err_msg=f"{engine} layer {layer} B={B}")
            h = y_ref.astype(np.float32)
        out = q.predict(x)
        np.testing.assert_allclose(out, reference.quantized_mlp_forward(x, q.qbuffer, q.qlayers), **TOLERANCE)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("engine", ENGINES)
def test_engine_matches_the_oracle(engine, kind):
    check_engine_against_oracle(engine, kind)


def check_edge_rows_against_oracle(engine):
    """Rows the row quantization treats apart — NaN, -inf, all zeros, values past a calibrated
    scale (clipped to ±127) — give the oracle's integers, dynamic and calibrated."""
    net = _network()
    x = _inputs(9, SIZES[0], seed=3)
    x[1, 5], x[2, 36], x[3] = np.nan, -np.inf, 0.0
    x[4] *= 50
    for calibration in (None, _inputs(40, SIZES[0], seed=4)):
        q = fd.quantize(net, "int8", calibration=calibration, backend=engine)
        y, acc = np.empty((9, SIZES[1]), np.float32), np.empty((9, SIZES[1]), np.int32)
        q.engine.quantized_dense_forward(x, q.qbuffer, q.qlayers, 0, y, acc)
        y_ref, acc_ref = reference.quantized_dense_forward(x, q.qbuffer, q.qlayers, 0)
        np.testing.assert_array_equal(acc, acc_ref, err_msg=f"{engine} calibrated={calibration is not None}")
        assert np.isnan(y[1:3]).all() and not np.isnan(y[[0, 3, 4]]).any()
        np.testing.assert_allclose(y, y_ref, **TOLERANCE)


@pytest.mark.parametrize("engine", ENGINES)
def test_edge_rows_give_the_oracles_integers(engine):
    check_edge_rows_against_oracle(engine)


def check_cython_against_oracle(dtype=None):
    """For run_in_simd_build (its dtype argument is not used: quantized models are float32)."""
    for kind in KINDS:
        check_engine_against_oracle("cython", kind, batches=(1, 7, 100))
        check_sparse_engine_against_oracle("cython", kind)
    check_edge_rows_against_oracle("cython")


EXPECTED_PATHS = {"generic": {"int8": "generic", "bf16": "generic"},
                  "avx2": {"int8": "avx2", "bf16": "avx2"},
                  "avx512": {"int8": "avx2", "bf16": "avx512"}}


@pytest.mark.skipif("cython" not in ENGINES, reason="the Cython extension is not built")
@pytest.mark.parametrize("simd", sorted(EXPECTED_PATHS))
def test_every_simd_build_matches_the_oracle(simd):
    run_in_simd_build(simd, "test_quantized", "check_cython_against_oracle", "check_paths_" + simd)


def _check_paths(simd):
    from fusedense._kernels import quantized
    import subprocess  # noqa: F401 (the parent only checks this ran)
    have = _cpu_flags()
    expected = dict(EXPECTED_PATHS[simd])
    if "avx2" not in have:
        expected = {"int8": "generic", "bf16": "generic"}
    elif "avx512f" not in have and simd == "avx512":
        expected = {"int8": "avx2", "bf16": "avx2"}
    assert quantized.paths() == expected, (quantized.paths(), expected)


def check_paths_generic(dtype=None):
    _check_paths("generic")


def check_paths_avx2(dtype=None):
    _check_paths("avx2")


def check_paths_avx512(dtype=None):
    _check_paths("avx512")


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return set(next(line for line in f if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return set()


@pytest.mark.skipif("cython" not in ENGINES, reason="the Cython extension is not built")
def test_widest_paths_run_where_the_cpu_has_them():
    from fusedense._kernels import quantized
    have = _cpu_flags()
    if {"avx512_vnni", "avx512bw"} <= have:
        assert quantized.paths()["int8"] == "avx512_vnni"
    if "avx512_bf16" in have:
        assert quantized.paths()["bf16"] == "avx512_bf16"


@pytest.mark.parametrize("kind", KINDS)
def test_large_layer_sums_stay_exact(kind):
    """fan_in 4099: int8 sums up to 127² · 4099 ≈ 6.6e7 (past float32's exact integers), bf16
    sums of 4099 products."""
    net = fd.MLP([4099, 80], ["identity"], random_state=3)
    x = _inputs(3, 4099) * 100
    x[0, :] = 100 + np.abs(x[0]) / 1000  # a row whose codes are all 127 ...
    net.weights[0][0][...] = np.abs(net.weights[0][0])
    net.weights[0][0][:, 0] = 0.5  # ... times a column of 127s: 127² · 4099
    for engine in ENGINES:
        q = fd.quantize(net, kind, backend=engine)
        y = np.empty((3, 80), np.float32)
        acc = np.empty((3, 80), np.int32) if kind == "int8" else None
        q.engine.quantized_dense_forward(x, q.qbuffer, q.qlayers, 0, y, acc)
        y_ref, acc_ref = reference.quantized_dense_forward(x, q.qbuffer, q.qlayers, 0)
        if kind == "int8":
            assert acc_ref.max() > 2**24
            np.testing.assert_array_equal(acc, acc_ref)
        np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5 * np.abs(y_ref).max(), err_msg=engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_calibrated_int8_uses_the_sample_scales(engine):
    net = _network()
    sample = _inputs(300, SIZES[0], seed=5)
    q = fd.quantize(net, "int8", calibration=sample, backend=engine)
    assert np.float32(q.qlayers[0]["x_amax"]) == np.abs(sample).max()
    assert (q.qlayers["x_amax"] > 0).all()
    x = _inputs(20, SIZES[0], seed=6) * 1.5  # some values past the calibrated range: clipped
    y = np.empty((20, SIZES[1]), np.float32)
    acc = np.empty((20, SIZES[1]), np.int32)
    q.engine.quantized_dense_forward(x, q.qbuffer, q.qlayers, 0, y, acc)
    y_ref, acc_ref = reference.quantized_dense_forward(x, q.qbuffer, q.qlayers, 0)
    np.testing.assert_array_equal(acc, acc_ref)
    np.testing.assert_allclose(q.predict(x), reference.quantized_mlp_forward(x, q.qbuffer, q.qlayers), **TOLERANCE)
    assert np.abs(q.predict(sample) - net.predict(sample)).max() < 0.05


@pytest.mark.skipif("cython" not in ENGINES, reason="the Cython extension is not built")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rows", [80, 100, 499])  # row blocks split evenly, 4 ways, unevenly
def test_results_do_not_depend_on_the_thread_count(kind, rows):
    sizes = [300, 600, 64, 10]
    assert rows * sum(k * n for k, n in zip(sizes, sizes[1:])) >= tuning.COMMON["PARALLEL_MIN_WORK"]
    q = fd.quantize(_network(sizes), kind, backend="cython")
    x = _inputs(rows, sizes[0])
    try:
        fd.set_num_threads(1)
        one = q.predict(x)
        fd.set_num_threads(2)
        two = q.predict(x)
    finally:
        fd.set_num_threads(1)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one[:7], q.predict(x[:7]))  # nor on the batch around a row


# --- hostile inputs through the gate ----------------------------------------------------------------


def _q(engine, kind="int8"):
    return fd.quantize(_network(), kind, backend=engine)


def _edited_record(q, **fields):
    rows = [dict(zip(QLAYER.names, row)) for row in q.qlayers.tolist()]
    for name, value in fields.items():
        rows[0][name] = value
    return rows


HOSTILE = {
    "x of the wrong width": lambda be: _q(be).predict(_inputs(3, 36)),
    "empty x": lambda be: _q(be).predict(np.zeros((0, SIZES[0]), np.float32)),
    "x float64 to the engine": lambda be: (lambda q: q.engine.quantized_mlp_forward(
        _inputs(2, SIZES[0]).astype(np.float64), q.qbuffer, q.qlayers, np.zeros((2, 10), np.float32)))(_q(be)),
    "out of the wrong shape": lambda be: _q(be).forward(_inputs(2, SIZES[0]), np.zeros((2, 9), np.float32)),
    "out float64": lambda be: _q(be).forward(_inputs(2, SIZES[0]), np.zeros((2, 10))),
    "an unregistered record": lambda be: (lambda q: q.engine.quantized_mlp_forward(
        _inputs(2, SIZES[0]), q.qbuffer, q.qlayers.copy(), np.zeros((2, 10), np.float32)))(_q(be)),
    "a record entry edited": lambda be: _q(be).qlayers.__setitem__((0, "weights"), 10**9),
    "qbuffer too short": lambda be: (lambda q: q.engine.quantized_mlp_forward(
        _inputs(2, SIZES[0]), q.qbuffer[:100], q.qlayers, np.zeros((2, 10), np.float32)))(_q(be)),
    "qbuffer of another dtype": lambda be: (lambda q: q.engine.quantized_mlp_forward(
        _inputs(2, SIZES[0]), q.qbuffer.view(np.int8), q.qlayers, np.zeros((2, 10), np.float32)))(_q(be)),
    "a region past the buffer": lambda be: (lambda q: checked_quantized_record(
        _edited_record(q, bias=q.qbuffer.size - 64), q.qbuffer.size))(_q(be)),
    "a region not aligned": lambda be: (lambda q: checked_quantized_record(
        _edited_record(q, weights=4), q.qbuffer.size))(_q(be)),
    "a negative offset": lambda be: (lambda q: checked_quantized_record(
        _edited_record(q, scales=-64), q.qbuffer.size))(_q(be)),
    "a padded width that does not match": lambda be: (lambda q: checked_quantized_record(
        _edited_record(q, k_pad=36), q.qbuffer.size))(_q(be)),
    "an int8 fan_in whose sums could wrap": lambda be: (lambda q: checked_quantized_record(
        _edited_record(q, fan_in=200_000, k_pad=200_000), 10**12))(_q(be)),
    "an unknown kind": lambda be: (lambda q: checked_quantized_record(
        _edited_record(q, kind=7), q.qbuffer.size))(_q(be)),
    "a NaN calibration scale": lambda be: (lambda q: checked_quantized_record(
        _edited_record(q, x_amax=np.nan), q.qbuffer.size))(_q(be)),
    "softmax before the last layer": lambda be: (lambda q: checked_quantized_record(
        _edited_record(q, activation=10), q.qbuffer.size))(_q(be)),
    "layer index out of range": lambda be: (lambda q: q.engine.quantized_dense_forward(
        _inputs(2, SIZES[0]), q.qbuffer, q.qlayers, 3, np.zeros((2, 70), np.float32)))(_q(be)),
    "acc for a bf16 layer": lambda be: (lambda q: q.engine.quantized_dense_forward(
        _inputs(2, SIZES[0]), q.qbuffer, q.qlayers, 0, np.zeros((2, 70), np.float32),
        np.zeros((2, 70), np.int32)))(_q(be, "bf16")),
    "acc int64": lambda be: (lambda q: q.engine.quantized_dense_forward(
        _inputs(2, SIZES[0]), q.qbuffer, q.qlayers, 0, np.zeros((2, 70), np.float32),
        np.zeros((2, 70), np.int64)))(_q(be)),
    "y aliasing x": lambda be: (lambda q, x: q.engine.quantized_dense_forward(
        x[:, :37], q.qbuffer, q.qlayers, 0, x[:, 37:107]))(_q(be), np.zeros((2, 107), np.float32)),
    "unknown dtype": lambda be: fd.quantize(_network(), "int4", backend=be),
    "calibration for bf16": lambda be: fd.quantize(_network(), "bf16", calibration=_inputs(3, 37), backend=be),
    "calibration with NaN": lambda be: fd.quantize(_network(), "int8", calibration=np.full((2, 37), np.nan),
                                                    backend=be),
    "training a quantized model": lambda be: _q(be).train_step(_inputs(2, 37), [0, 1]),
    "quantizing something else": lambda be: fd.quantize(np.zeros(3)),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_input_gets_the_same_error_from_every_engine(case):
    outcomes = {}
    for engine in ENGINES:
        try:
            HOSTILE[case](engine)
            outcomes[engine] = None
        except Exception as exc:  # noqa: BLE001 (the exception itself is compared)
            outcomes[engine] = (type(exc).__name__, str(exc))
    first = outcomes[ENGINES[0]]
    assert first is not None, f"{case}: no error raised"
    assert first[0] in ("ValueError", "TypeError"), first
    assert all(outcome == first for outcome in outcomes.values()), outcomes


# --- the fronts, copies, pickling -----------------------------------------------------------------


def test_quantize_leaves_the_float_model_unchanged():
    net = _network()
    before = net.params.copy()
    x = _inputs(5, SIZES[0])
    out = net.predict(x)
    for kind in KINDS:
        fd.quantize(net, kind, calibration=x if kind == "int8" else None)
    np.testing.assert_array_equal(net.params, before)
    np.testing.assert_array_equal(net.predict(x), out)


def test_sequential_quantized_keeps_predict_and_evaluate():
    model = fd.Sequential([fd.Input((SIZES[0],)), fd.Dense(32, activation="relu"), fd.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = _inputs(64, SIZES[0])
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    for kind in KINDS:
        quantized = fd.quantize(model, kind)
        assert isinstance(quantized.network, fd.QuantizedMLP) and isinstance(model.network, fd.MLP)
        np.testing.assert_allclose(quantized.predict(x), model.predict(x), atol=0.03)
        loss, accuracy = quantized.evaluate(x, y, verbose=0)
        float_loss, float_accuracy = model.evaluate(x, y, verbose=0)
        assert abs(loss - float_loss) < 0.03 and abs(accuracy - float_accuracy) <= 2 / 64


def test_estimator_quantized_keeps_predict_proba_and_score():
    pytest.importorskip("sklearn")
    X, y = fd.datasets.load_digits()
    clf = fd.MLPClassifier(hidden_layer_sizes=(32,), max_iter=30, random_state=0).fit(X[:1000], y[:1000])
    for kind in KINDS:
        quantized = fd.quantize(clf, kind)
        assert isinstance(clf.network_, fd.MLP)
        np.testing.assert_allclose(quantized.predict_proba(X[1000:]), clf.predict_proba(X[1000:]), atol=0.03)
        assert abs(quantized.score(X[1000:], y[1000:]) - clf.score(X[1000:], y[1000:])) < 0.01


@pytest.mark.parametrize("kind", KINDS)
def test_pickled_quantized_model_predicts_the_same(kind):
    q = fd.quantize(_network(), kind)
    copy = pickle.loads(pickle.dumps(q))
    x = _inputs(6, SIZES[0])
    np.testing.assert_array_equal(copy.predict(x), q.predict(x))
    assert copy.qlayers is not q.qlayers and not copy.qlayers.flags.writeable


# --- accuracy -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_model():
    pytest.importorskip("sklearn")
    X, y = fd.datasets.load_digits()
    (x_train, y_train), (x_test, y_test) = ((X[:1400], y[:1400]), (X[1400:], y[1400:]))
    net = fd.MLP([64, 128, 64, 10], ["relu", "relu", "softmax"], init="he_uniform", random_state=0)
    net.set_optimizer("adam")
    for _ in range(30):
        net.train_epoch(x_train, y_train, 0, 32, order=np.random.default_rng(_).permutation(len(x_train)))
    return net, x_train, x_test, y_test


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind, points", [("int8", 0.5), ("bf16", 0.2)])
def test_accuracy_on_digits_stays_within_bounds(digits_model, engine, kind, points):
    net, x_train, x_test, y_test = digits_model
    float_accuracy = 100 * (net.predict(x_test).argmax(axis=1) == y_test).mean()
    assert float_accuracy > 90
    calibrations = (None, x_train[:256]) if kind == "int8" else (None,)
    for calibration in calibrations:
        q = fd.quantize(net, kind, calibration=calibration, backend=engine)
        accuracy = 100 * (q.predict(x_test).argmax(axis=1) == y_test).mean()
        assert abs(accuracy - float_accuracy) <= points, (kind, calibration is not None, accuracy, float_accuracy)


# --- save and load ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_saved_quantized_model_loads_and_predicts_the_same(tmp_path, kind):
    net = _network()
    calibration = _inputs(50, SIZES[0]) if kind == "int8" else None
    q = fd.quantize(net, kind, calibration=calibration)
    path = tmp_path / "q.npz"
    q.save(path)
    loaded = fd.load_model(path)
    assert isinstance(loaded, fd.QuantizedMLP) and loaded.qdtype == kind
    np.testing.assert_array_equal(loaded.qbuffer, q.qbuffer)
    assert loaded.qlayers.tolist() == q.qlayers.tolist()
    x = _inputs(9, SIZES[0])
    np.testing.assert_array_equal(loaded.predict(x), q.predict(x))


def _rewrite(path, edit):
    """Rewrites the archive at ``path`` with ``edit(record, params)`` applied (no new checksum)."""
    import json
    with np.load(path) as archive:
        record, params = json.loads(archive["record"].tobytes()), archive["params"].copy()
    record, params = edit(record, params)
    np.savez(path, record=np.frombuffer(json.dumps(record).encode(), np.uint8), params=params)


@pytest.mark.parametrize("edit, message", [
    (lambda r, p: (r, np.concatenate([p, np.zeros(64, np.uint8)])), "do not match the architecture"),
    (lambda r, p: (r, p.astype(np.float32)), "do not match the architecture"),
    (lambda r, p: ({**r, "quantized": {**r["quantized"], "dtype": "int4"}}, p), "quantized.dtype"),
    (lambda r, p: ({**r, "quantized": {**r["quantized"], "dtype": []}}, p), "quantized.dtype"),
    (lambda r, p: ({**r, "architecture": {**r["architecture"], "dtype": []}}, p), "architecture.dtype"),
    (lambda r, p: ({**r, "quantized": {**r["quantized"], "x_amax": [True, 0, 0]}}, p), "quantized.x_amax"),
    (lambda r, p: ({**r, "quantized": {**r["quantized"], "x_amax": [1e39, 0, 0]}}, p), "quantized.x_amax"),
    (lambda r, p: ({**r, "quantized": {**r["quantized"], "x_amax": [0]}}, p), "quantized.x_amax"),
    (lambda r, p: (r, np.where(np.arange(p.size) == 100, p ^ 1, p).astype(np.uint8)), "SHA-256"),
    (lambda r, p: ({**r, "architecture": {**r["architecture"], "sizes": [37, 70, 110, 20]}}, p), "n_params"),
])
def test_altered_quantized_files_are_refused(tmp_path, edit, message):
    path = tmp_path / "q.npz"
    fd.quantize(_network(), "int8").save(path)
    _rewrite(path, edit)
    with pytest.raises(ValueError, match=message):
        fd.load_model(path)


# --- the embedding LM -------------------------------------------------------------------------------


def _lm(engine="cython"):
    rng = np.random.default_rng(0)
    net = fd.EmbeddingMLP(12, 8, 3, [40, 12], activations="tanh", output_activation="softmax", random_state=0,
                          backend=engine)
    tokens, labels = rng.integers(0, 12, (256, 3)), rng.integers(0, 12, 256)
    net.set_optimizer("adam")
    for _ in range(5):
        net.train_step(tokens, labels, loss="sparse_categorical_crossentropy")
    return net, tokens


@pytest.mark.parametrize("kind", KINDS)
def test_quantized_embedding_model_predicts_and_generates_like_the_float_one(kind):
    net, tokens = _lm()
    table = net.embeddings.copy()
    q = fd.quantize(net, kind, calibration=tokens if kind == "int8" else None)
    assert isinstance(q, fd.quantized.QuantizedEmbeddingMLP)
    np.testing.assert_array_equal(net.embeddings, table)
    np.testing.assert_allclose(q.predict(tokens), net.predict(tokens), atol=0.02)
    # against the oracle: the table's rows, then the quantized network
    x = table[tokens].reshape(len(tokens), -1)
    np.testing.assert_allclose(q.predict(tokens), reference.quantized_mlp_forward(x, q.qbuffer, q.qlayers), **TOLERANCE)
    greedy = q.generate(20, max_len=8, temperature=0, seed=1)
    float_greedy = net.generate(20, max_len=8, temperature=0, seed=1)
    same = sum(np.array_equal(a, b) for a, b in zip(greedy, float_greedy))
    assert same >= 15, same  # the argmax differs only where two logits are within quantization error
    sampled = [q.generate(5, max_len=8, temperature=1.0, seed=3) for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(*sampled))  # same seed, same sequences
    with pytest.raises(ValueError, match="boundary"):
        q.generate(2, boundary=12)


@pytest.mark.parametrize("kind", KINDS)
def test_saved_quantized_embedding_model_loads_and_predicts_the_same(tmp_path, monkeypatch, kind):
    """Saving a quantized LM raised TypeError; the file holds the float32 table's bytes, then
    the quantized buffer, and loading it never unpickles."""
    net, tokens = _lm()
    q = fd.quantize(net, kind, calibration=tokens if kind == "int8" else None)
    path = tmp_path / "lm.npz"
    q.save(path)

    def refuse(*args, **kwargs):
        raise AssertionError("load_model unpickled something")
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    loaded = fd.load_model(path)
    assert type(loaded) is fd.quantized.QuantizedEmbeddingMLP and loaded.qdtype == kind
    assert (loaded.vocab_size, loaded.embedding_dim, loaded.context) == (12, 8, 3)
    assert loaded.architecture() == q.architecture()
    np.testing.assert_array_equal(loaded.embeddings, q.embeddings)
    np.testing.assert_array_equal(loaded.qbuffer, q.qbuffer)
    assert loaded.qlayers.tolist() == q.qlayers.tolist()
    np.testing.assert_array_equal(loaded.predict(tokens), q.predict(tokens))
    expected = q.generate(6, max_len=8, temperature=0.8, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(loaded.generate(6, max_len=8, temperature=0.8, seed=4), expected))


@pytest.mark.parametrize("edit, message", [
    (lambda r, p: (r, np.where(np.arange(p.size) == 5, p ^ 1, p).astype(np.uint8)), "SHA-256"),  # in the table
    (lambda r, p: ({**r, "architecture": {**r["architecture"], "embedding": {"vocab_size": 13, "dim": 8,
                                                                             "context": 3}}}, p), "n_params"),
    (lambda r, p: ({**r, "architecture": {**r["architecture"], "dtype": "float64"}}, p), "float32"),
])
def test_altered_quantized_embedding_files_are_refused(tmp_path, edit, message):
    path = tmp_path / "lm.npz"
    fd.quantize(_lm()[0], "int8").save(path)
    _rewrite(path, edit)
    with pytest.raises(ValueError, match=message):
        fd.load_model(path)


def test_sequential_lm_quantized_generates():
    model = fd.Sequential([fd.Embedding(12, 8, input_length=3), fd.Flatten(), fd.Dense(16, activation="tanh"),
                           fd.Dense(12, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(rng.integers(0, 12, (64, 3)), rng.integers(0, 12, 64), epochs=1, verbose=0)
    q = fd.quantize(model, "int8")
    assert all(len(t) <= 6 for t in q.generate(4, max_len=6, seed=0))
    assert np.isfinite(q.evaluate(rng.integers(0, 12, (10, 3)), rng.integers(0, 12, 10), verbose=0))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("engine", ENGINES)
def test_quantized_generation_matches_the_oracle(engine, kind):
    net, _ = _lm(engine)
    q = fd.quantize(net, kind, backend=engine)
    for temperature, seed in ((0.0, 1), (1.0, 2), (0.7, 3)):
        uniforms = np.random.default_rng(seed).random((30, 9))
        tokens, lengths = reference.quantized_embedding_generate(q.embeddings, q.qbuffer, q._logits_qlayers(), 3,
                                                                 uniforms, temperature, 0)
        generated = q.generate(30, max_len=9, temperature=temperature, seed=seed)
        expected = [tokens[i, :lengths[i]] for i in range(30)]
        # the oracle's logits are float64, the engines' float32: a uniform falling within rounding
        # of a CDF step may pick the neighbouring token (none did in these cases)
        assert all(np.array_equal(a, b) for a, b in zip(generated, expected)), (temperature, seed)


QUANTIZED_GENERATE_HOSTILE = {
    "boundary past the vocabulary": dict(boundary=12),
    "negative temperature": dict(temperature=-1.0),
    "NaN temperature": dict(temperature=float("nan")),
    "context that does not fit the first layer": dict(context=4),
    "a float64 table": dict(embeddings="float64"),
    "tokens of the wrong shape": dict(tokens=(2, 9)),
}


def assert_the_same_error_from_every_engine(call):
    """``call(engine)`` raises the same ValueError/TypeError, with the same message, on every engine."""
    outcomes = {}
    for engine in ENGINES:
        try:
            call(engine)
            outcomes[engine] = None
        except Exception as exc:  # noqa: BLE001
            outcomes[engine] = (type(exc).__name__, str(exc))
    first = outcomes[ENGINES[0]]
    assert first is not None and first[0] in ("ValueError", "TypeError"), outcomes
    assert all(outcome == first for outcome in outcomes.values()), outcomes


@pytest.mark.parametrize("case", sorted(QUANTIZED_GENERATE_HOSTILE))
def test_hostile_generate_arguments_get_the_same_error_from_every_engine(case):
    def call(engine):
        q = fd.quantize(_lm(engine)[0], "int8", backend=engine)
        args = dict(embeddings=q.embeddings, context=3, temperature=1.0, boundary=0, tokens=(3, 9))
        args.update(QUANTIZED_GENERATE_HOSTILE[case])
        if isinstance(args["embeddings"], str):
            args["embeddings"] = q.embeddings.astype(args["embeddings"])
        uniforms = np.random.default_rng(0).random((3, 9))
        q.engine.quantized_embedding_generate(args["embeddings"], q.qbuffer, q._logits_qlayers(), args["context"],
                                              uniforms, args["temperature"], args["boundary"],
                                              np.empty(args["tokens"], np.int64), np.empty(3, np.int64))
    assert_the_same_error_from_every_engine(call)


# --- the sparse first layer (CSR input: fd.TextClassifier, estimators fitted on CSR) ----------------


def _csr_rows(rows=40, features=300, seed=7):
    """CSR rows with an empty first and last row, repeated and unsorted indices, 0-12 non-zeros."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 13, rows)
    counts[0] = counts[-1] = 0
    indptr = np.zeros(rows + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = rng.integers(0, features, indptr[-1]).astype(np.int64)
    indices[1::7] = indices[::7][:len(indices[1::7])]  # some repeats within a row
    values = rng.normal(size=indptr[-1]).astype(np.float32)
    return indptr, indices, values


def _table(kind, features=300, n=70, seed=8):
    W = np.random.default_rng(seed).normal(size=(features, n)).astype(np.float32) * 0.1
    table, scales = fd.quantized.quantize_table(W, kind)
    return W, table, scales, np.random.default_rng(seed + 1).normal(size=n).astype(np.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_sparse_oracle_is_the_dense_product_of_the_dequantized_table(kind):
    """The oracle against an independent dense float64 product (SciPy's toarray)."""
    import scipy.sparse
    indptr, indices, values = _csr_rows()
    W, table, scales, b = _table(kind)
    dense_x = scipy.sparse.csr_matrix((values.astype(np.float64), indices, indptr), shape=(40, 300)).toarray()
    values64 = table.astype(np.float64) if kind == "int8" else (table.astype(np.uint32) << 16).view(np.float32)
    expected = np.tanh(dense_x @ (values64.astype(np.float64) * scales) + b)
    got = reference.quantized_sparse_forward(indptr, indices, values, table, scales, b, fd.activations.get_activation("tanh"),
                                             0.0)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    # and the quantized table stays within half a step (int8) / bf16's rounding of W
    step = scales / 2 if kind == "int8" else np.abs(W) * 2.0 ** -8
    assert (np.abs(values64 * scales - W) <= step * (1 + 1e-6)).all()


def check_sparse_engine_against_oracle(engine, kind):
    indptr, indices, values = _csr_rows()
    _, table, scales, b = _table(kind)
    gate = _backends.load(engine)
    for act in ("identity", "relu", "softmax"):
        act_id = fd.activations.get_activation(act).id
        y = np.full((40, 70), np.nan, np.float32)
        gate.quantized_sparse_forward(indptr, indices, values, table, scales, b, act_id, 0.0, y)
        y_ref = reference.quantized_sparse_forward(indptr, indices, values, table, scales, b,
                                                   fd.activations.BY_ID[act_id], 0.0)
        # float32 sums of up to 12 terms: a few ulps of the terms' magnitude
        np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5 * np.abs(y_ref).max(), err_msg=f"{engine} {act}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("engine", ENGINES)
def test_sparse_engine_matches_the_oracle(engine, kind):
    check_sparse_engine_against_oracle(engine, kind)


def _sparse_network(engine="cython", seed=0):
    """A 300 → 24 → 16 → 5 network trained a few steps on CSR rows (the lazy sparse step)."""
    import scipy.sparse
    indptr, indices, values = _csr_rows(200, 300, seed)
    X = scipy.sparse.csr_matrix((values, indices, indptr), shape=(200, 300))
    y = np.random.default_rng(seed).integers(0, 5, 200)
    net = fd.MLP([300, 24, 16, 5], ["identity", "relu", "softmax"], random_state=seed, backend=engine)
    net.set_optimizer("adam")
    for _ in range(5):
        net.train_step(X, y, loss="sparse_categorical_crossentropy")
    return net, X


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("engine", ENGINES)
def test_sparse_input_model_predicts_like_the_float_one(engine, kind):
    net, X = _sparse_network(engine)
    params = net.params.copy()
    q = fd.quantize(net, kind, sparse_input=True)
    np.testing.assert_array_equal(net.params, params)
    # the first layer is only a table: int8 (a quarter of float32's bytes) or bf16, no panels
    assert q.table.shape == (300, 24) and q.table.dtype == (np.int8 if kind == "int8" else np.uint16)
    assert q.qlayers["fan_in"].tolist() == [24, 16] and q.qbuffer.size < 300 * 24
    out = q.predict(X)
    np.testing.assert_allclose(out, net.predict(X), atol=0.02)
    # against the oracle: the table's gather, then the quantized layers above it
    h = reference.quantized_sparse_forward(X.indptr.astype(np.int64), X.indices.astype(np.int64), X.data, q.table,
                                           q.table_scales, q.table_bias, fd.activations.get_activation("identity"), 0.0)
    np.testing.assert_allclose(out, reference.quantized_mlp_forward(h.astype(np.float32), q.qbuffer, q.qlayers),
                               rtol=1e-4, atol=1e-4)
    # dense rows go through the same gather; the model quantized for dense rows takes CSR too
    np.testing.assert_allclose(q.predict(X.toarray()), out, rtol=1e-6, atol=1e-6)
    dense_form = fd.quantize(net, kind)
    assert dense_form.table is None
    np.testing.assert_allclose(dense_form.predict(X), out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dense_form.predict(X[:7], batch_size=3), out[:7], rtol=1e-5, atol=1e-5)
    copy = pickle.loads(pickle.dumps(q))
    np.testing.assert_array_equal(copy.predict(X), out)
    assert q.architecture() == dict(net.architecture(), dtype="float32")
    assert [W.shape for W, _ in q.dequantized_weights()] == [(300, 24), (24, 16), (16, 5)]


@pytest.mark.parametrize("kind", KINDS)
def test_saved_sparse_input_model_loads_and_predicts_the_same(tmp_path, kind):
    net, X = _sparse_network()
    q = fd.quantize(net, kind, calibration=X[:50] if kind == "int8" else None, sparse_input=True)
    path = tmp_path / "sparse.npz"
    q.save(path)
    loaded = fd.load_model(path)
    for name in ("table", "table_scales", "table_bias", "qbuffer"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(q, name))
    assert loaded.table.dtype == q.table.dtype and loaded.qlayers.tolist() == q.qlayers.tolist()
    np.testing.assert_array_equal(loaded.predict(X), q.predict(X))
    _rewrite(path, lambda r, p: ({**r, "quantized": {**r["quantized"], "sparse_input": 1}}, p))
    with pytest.raises(ValueError, match="sparse_input"):
        fd.load_model(path)


def test_sparse_calibration_picks_the_sparse_form():
    net, X = _sparse_network()
    q = fd.quantize(net, "int8", calibration=X[:50])
    assert q.table is not None and q.qlayers["x_amax"][0] > 0  # (the first dense layer's input scale)
    assert np.abs(q.predict(X) - net.predict(X)).max() < 0.05
    with pytest.raises(ValueError, match="sparse_input"):
        fd.quantize(fd.MLP([30, 5], ["softmax"]), "int8", sparse_input=True)


@pytest.mark.skipif("cython" not in ENGINES, reason="the Cython extension is not built")
def test_sparse_results_do_not_depend_on_the_thread_count():
    indptr, indices, values = _csr_rows(3000, 300)
    _, table, scales, b = _table("int8")
    gate = _backends.load("cython")
    outs = []
    previous = fd.get_num_threads()
    try:
        for threads in (1, 2):
            fd.set_num_threads(threads)
            y = np.empty((3000, 70), np.float32)
            gate.quantized_sparse_forward(indptr, indices, values, table, scales, b, 0, 0.0, y)
            outs.append(y)
    finally:
        fd.set_num_threads(previous)
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_quantized_estimator_and_text_classifier_on_sparse_rows():
    _, X = _sparse_network()
    clf = fd.MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0).fit(X, np.arange(200) % 3)
    q = fd.quantize(clf, "int8")
    assert np.abs(q.predict_proba(X) - clf.predict_proba(X)).max() < 0.05
    assert (q.predict(X) == clf.predict(X)).mean() > 0.95
    texts = ["der Hund und die Katze", "the dog and the cat", "le chien et le chat"] * 20
    labels = ["de", "en", "fr"] * 20
    text = fd.TextClassifier(dim=16, n_features=2**12, epochs=3).fit(texts, labels)
    for kind in KINDS:
        qt = fd.quantize(text, kind)
        assert qt.network_.table is not None and qt.network_.table.shape == (2**12, 16)
        assert list(qt.predict(["die Katze", "the cat"])) == list(text.predict(["die Katze", "the cat"]))
        np.testing.assert_allclose(qt.predict_proba(texts[:3]), text.predict_proba(texts[:3]), atol=0.02)


QUANTIZED_SPARSE_HOSTILE = {
    "a float32 table": dict(table="float32"),
    "an index past the table": dict(index=300),
    "scales of the wrong length": dict(scales=69),
    "float64 values": dict(values="float64"),
    "an output of the wrong shape": dict(y=(40, 71)),
}


@pytest.mark.parametrize("case", sorted(QUANTIZED_SPARSE_HOSTILE))
def test_hostile_sparse_arguments_get_the_same_error_from_every_engine(case):
    def call(engine):
        indptr, indices, values = _csr_rows()
        _, table, scales, b = _table("int8")
        change = QUANTIZED_SPARSE_HOSTILE[case]
        if "index" in change:
            indices[3] = change["index"]
        _backends.load(engine).quantized_sparse_forward(
            indptr, indices, values.astype(change.get("values", np.float32)),
            table.astype(change.get("table", np.int8)), scales[:change.get("scales", 70)].copy(), b, 0, 0.0,
            np.empty(change.get("y", (40, 70)), np.float32))
    assert_the_same_error_from_every_engine(call)


def _data_or_skip(loader, **kwargs):
    """The data set, or a skip naming the package to install (apt data sets are Debian-only)."""
    try:
        return loader(**kwargs)
    except fd.datasets.DatasetNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def sparse_models():
    """Small versions of bench/quantized_accuracy.py's sparse pipelines: fortunes language ID
    (TextClassifier, 2^16 buckets, 600 texts per language) and the names demo on sparse hashed
    character 1-3-grams (2^16 buckets, MLPClassifier 64 → 32, 12000 names); each as (float
    network, CSR train rows, CSR test rows, test labels)."""
    import warnings
    texts, labels, _ = _data_or_skip(fd.datasets.load_fortunes, max_per_language=600, seed=1)
    text = fd.TextClassifier(dim=16, n_features=2**16, epochs=5, random_state=0)
    X = text.transform(texts)
    text.fit_transformed(X[:3600], labels[:3600])
    names, name_labels, _ = _data_or_skip(fd.datasets.load_names, seed=1)
    Xn = fd.HashingVectorizer(n_features=2**16, ngram_range=(1, 3), sparse=True).transform(names[:12000])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (max_iter reached)
        clf = fd.MLPClassifier((64, 32), batch_size=32, max_iter=4, random_state=0).fit(Xn[:9000], name_labels[:9000])
    return {"fortunes": (text.network_, X[:3600], X[3600:], labels[3600:]),
            "names": (clf.network_, Xn[:9000], Xn[9000:12000], name_labels[9000:12000])}


def _classified(outputs):
    return outputs[:, 0] > 0.5 if outputs.shape[1] == 1 else outputs.argmax(axis=1)  # (binary: one logistic)


@pytest.mark.parametrize("data", ["fortunes", "names"])
@pytest.mark.parametrize("kind, points", [("int8", 0.5), ("bf16", 0.2)])
def test_accuracy_with_a_sparse_first_layer_stays_within_bounds(sparse_models, data, kind, points):
    """Issue 18's bars on the sparse-input models (full numbers: bench/quantized_accuracy.py)."""
    net, x_train, x_test, y_test = sparse_models[data]
    float_accuracy = 100 * (_classified(net.predict(x_test)) == y_test).mean()
    assert float_accuracy > {"fortunes": 95, "names": 75}[data]
    for calibration in ((None, x_train[:256]) if kind == "int8" else (None,)):
        q = fd.quantize(net, kind, calibration=calibration, sparse_input=True)
        accuracy = 100 * (_classified(q.predict(x_test)) == y_test).mean()
        assert abs(accuracy - float_accuracy) <= points, (kind, calibration is not None, accuracy, float_accuracy)
