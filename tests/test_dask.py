"""fusedense.dask on a real distributed.LocalCluster (2 worker processes, 1 thread each): predictions
bit-identical to local predict, training equal to local training, and a worker killed during a
prediction costs nothing but time."""
import copy
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")
pd = pytest.importorskip("pandas")

import fusedense as fd  # noqa: E402
import fusedense.dask as fdd  # noqa: E402
from fusedense import reference  # noqa: E402
from fusedense.gate import checked_record  # noqa: E402

BACKEND = "cython"  # rows do not depend on the batch in the Cython engine (bit-identity holds per block)
ROWS, FEATURES = 1200, 12


@pytest.fixture(scope="module")
def client():
    with dask.config.set(fdd.COMPUTE_CONFIG):  # as the README starts a cluster for fusedense
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=":0", silence_logs=50)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(ROWS, FEATURES))


def _net(dtype, sizes=(FEATURES, 24, 16, 4)):
    return fd.MLP(list(sizes), ["relu", "tanh", "softmax"][-(len(sizes) - 1):], dtype=dtype,
                  random_state=1, backend=BACKEND)


def test_import_fusedense_does_not_import_dask():
    code = ("import sys, fusedense; bad = [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_compute_config_reaches_the_workers_and_the_environment_form_reads_the_same(client):
    keys = list(fdd.COMPUTE_CONFIG)
    on_workers = client.run(lambda: [dask.config.get(key) for key in keys])
    assert list(on_workers.values()) == [list(fdd.COMPUTE_CONFIG.values())] * 2
    code = "import dask, distributed, json; print(json.dumps([dask.config.get(k) for k in %r]))" % keys
    env = {**os.environ, **fdd.compute_config_env()}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == list(fdd.COMPUTE_CONFIG.values())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predict_and_transform_bit_identical_to_local(client, x, dtype):
    net = _net(dtype)
    X = da.from_array(x, chunks=(250, FEATURES))
    out = fdd.predict(net, X)
    assert out.dtype == dtype and out.chunks == (X.chunks[0], (4,))
    assert np.array_equal(out.compute(), net.predict(x))
    assert np.array_equal(fdd.predict_proba(net, X).compute(), net.predict(x))
    hidden = fdd.transform(net, X, layer=0)
    assert hidden.dtype == dtype and hidden.chunks == (X.chunks[0], (24,))
    first = checked_record(net.layout[:1], net.alphas[:1], net.n_params)
    local = np.empty((ROWS, 24), dtype)
    net.engine.mlp_forward(net.as_inputs(x), net.params, first, local)
    assert np.array_equal(hidden.compute(), local)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(local, reference.mlp_forward(net.as_inputs(x), net.params, first), rtol=tol, atol=tol)


def test_model_is_one_node_of_the_graph(client, x):
    net = _net(np.float32)
    out = fdd.predict(net, da.from_array(x, chunks=(100, FEATURES)))
    graph = dict(out.__dask_graph__())
    assert sum(str(key).startswith("MLP-") for key in graph) == 1  # not one copy per block's task


def test_threads_per_task_leave_no_core_oversubscribed(client):
    cores = max(client.run(lambda: len(os.sched_getaffinity(0))).values())
    assert fdd.threads_per_task(client) == max(1, cores // 2)


def test_dataframe_columns_and_estimator_outputs(client, x):
    from fusedense.sklearn import MLPClassifier
    y = np.digitize(x[:, 0] + x[:, 1], [-1, 0, 1])
    est = MLPClassifier((16,), max_iter=3, random_state=0, backend=BACKEND).fit(x[:, :6], y)
    names = [f"f{i}" for i in range(FEATURES)]
    df = pd.DataFrame(x, columns=names)[names[::-1]]  # columns stored in another order
    ddf = dd.from_pandas(df, npartitions=5)
    used = names[:6]
    labels = fdd.predict(est, ddf, columns=used)
    proba = fdd.predict_proba(est, ddf, columns=used)
    assert list(proba.columns) == list(est.classes_) and labels.npartitions == ddf.npartitions
    got_labels, got_proba = labels.compute(), proba.compute()
    assert got_labels.index.equals(df.index) and got_proba.index.equals(df.index)
    assert np.array_equal(got_labels.to_numpy(), est.predict(df[used].to_numpy()))
    assert np.array_equal(got_proba.to_numpy(), est.predict_proba(df[used].to_numpy()))
    with pytest.raises(KeyError):
        fdd.predict(est, ddf, columns=["nope"])


@pytest.mark.parametrize("dtype, optimizer, tol", [(np.float64, "adam", 1e-9), (np.float32, "sgd", 2e-5)])
def test_data_parallel_fit_equals_local_large_batch_training(client, x, dtype, optimizer, tol):
    y = np.digitize(x[:, 0] - x[:, 2], [-0.5, 0.5])
    X, Y = da.from_array(x, chunks=(200, FEATURES)), da.from_array(y, chunks=200)
    net = fd.MLP([FEATURES, 32, 3], ["relu", "softmax"], dtype=dtype, random_state=2, backend=BACKEND)
    net.set_optimizer(fd.optimizers.SGD(0.1, momentum=0.9) if optimizer == "sgd" else optimizer)
    local = copy.deepcopy(net)
    history = fdd.fit_data_parallel(net, X, Y, epochs=2, batch_size=150, loss="sparse_categorical_crossentropy",
                                    random_state=5)
    shards = [0, ROWS // 2]  # six blocks: the first three on one shard, the rest on the other
    expected = []
    for epoch in range(2):
        total = 0.0
        for step in fdd.batch_plan([ROWS // 2, ROWS // 2], 150, epoch, True, 5):
            rows = np.concatenate([start + r for start, r in zip(shards, step)])
            total += local.train_step(x[rows], y[rows], loss="sparse_categorical_crossentropy") * len(rows)
        expected.append(total / ROWS)
    assert net.step == local.step == 2 * 8
    np.testing.assert_allclose(net.params, local.params, rtol=tol, atol=tol)
    np.testing.assert_allclose(history, expected, rtol=tol)


def test_streamed_fit_equals_local_block_by_block_training(client, x):
    from fusedense.sklearn import MLPRegressor
    y = x[:, :2].sum(axis=1)
    X, Y = da.from_array(x, chunks=(300, FEATURES)), da.from_array(y, chunks=300)
    net = _net(np.float32, (FEATURES, 16, 1))
    local = copy.deepcopy(net)
    fdd.fit(net, X, Y, epochs=2, batch_size=64, loss="mse", shuffle=False)
    mse = fd.losses.get_loss("mse", local.output_activation)
    for _ in range(2):
        for start in range(0, ROWS, 300):
            xb = local.as_inputs(x[start:start + 300])
            local.train_epoch(xb, local.as_targets(y[start:start + 300], 300, mse), mse.id, 64)
    assert np.array_equal(net.params, local.params)

    est, local_est = (MLPRegressor(hidden_layer_sizes=(8,), random_state=0, backend=BACKEND) for _ in range(2))
    fdd.fit(est, X, Y, epochs=1, shuffle=False)
    for start in range(0, ROWS, 300):
        local_est.partial_fit(x[start:start + 300], y[start:start + 300])
    assert np.array_equal(est.predict(x), local_est.predict(x))


def _slow_rows(block):
    time.sleep(0.05)
    return block


def test_worker_killed_during_predict_still_gives_the_whole_result(client, x):
    net = _net(np.float64)
    X = da.from_array(x, chunks=(30, FEATURES)).map_blocks(_slow_rows)  # 40 blocks, 1 s per worker
    future = client.compute(fdd.predict(net, X))
    before = set(client.scheduler_info()["workers"])
    time.sleep(0.3)  # some blocks done, most still to run
    victim = sorted(before)[0]
    assert not future.done()
    try:
        client.run(os._exit, 1, workers=[victim])
    except Exception:  # the worker dies before it answers
        pass
    result = future.result(timeout=60)
    assert np.array_equal(result, net.predict(x))
    client.wait_for_workers(2, timeout=60)
    assert victim not in client.scheduler_info()["workers"]  # the nanny started a new process


def test_dask_ml_wrappers(client, x):
    wrappers = pytest.importorskip("dask_ml.wrappers")
    from fusedense.sklearn import MLPClassifier
    y = np.digitize(x[:, 0], [0.0])
    X, Y = da.from_array(x, chunks=(300, FEATURES)), da.from_array(y, chunks=300)
    est = MLPClassifier((8,), max_iter=2, random_state=0, backend=BACKEND).fit(x, y)
    post = wrappers.ParallelPostFit(est)
    assert np.array_equal(post.predict(X).compute(), est.predict(x))
    assert np.array_equal(post.predict_proba(X).compute(), est.predict_proba(x))
    inc = wrappers.Incremental(MLPClassifier((8,), random_state=0, backend=BACKEND), shuffle_blocks=False)
    inc.fit(X, Y, classes=[0, 1])
    local = MLPClassifier((8,), random_state=0, backend=BACKEND)
    for start in range(0, ROWS, 300):
        local.partial_fit(x[start:start + 300], y[start:start + 300], classes=[0, 1])
    assert np.array_equal(inc.estimator_.predict_proba(x), local.predict_proba(x))
