"""fusedense on Dask: batch inference and training over Dask arrays and DataFrames.

Needs the ``dask`` extra (``pip install "fusedense[dask]"``); ``import fusedense`` never imports
Dask, this module imports it on first use.

    >>> from distributed import Client, LocalCluster
    >>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))
    >>> proba = fusedense.dask.predict_proba(model, ddf, columns=["a", "b", "c"]).compute()

Inference runs the model's own fused forward (one ``mlp_forward`` call) per block, so each row's
result is bit-identical to local ``predict`` on engines whose rows do not depend on the batch
(the Cython engine; the NumPy engine's BLAS may block float32 rows differently). The model is one
node of the graph: each worker receives and unpickles it once, not once per task, and a worker
that dies takes nothing with it that the scheduler cannot recompute.

Threads: fusedense's kernel threads multiply with Dask's worker threads. Every task sets its
process's fusedense thread count to ``cores on the host // worker threads on the host`` (read
from the scheduler when the graph is built), so 2 workers × 1 thread on 2 cores run 1 fusedense
thread each, and 1 worker × 1 thread runs 2.

Training: ``fit`` streams blocks to this process (a few at a time, never all of X) and trains on
each; ``fit_data_parallel`` keeps one shard of the data on each worker, which computes the
gradient of its part of every global batch (``mlp_gradient``: forward, loss and backward in one
call); this process sums them, weighted by rows, and applies one fused optimizer step.
"""
from __future__ import annotations

import math
import os

import numpy as np

from . import abi
from .losses import get_loss
from .network import MLP

__all__ = ["predict", "predict_proba", "transform", "fit", "fit_data_parallel", "batch_plan", "COMPUTE_CONFIG",
           "compute_config_env"]


# Dask settings for a cluster whose workers spend their time in compiled kernels. By default every
# worker samples its threads' stacks every 10 ms (the statistical profiler) and every process wakes
# 10-50 times a second for its tick, memory and system monitors: on a 2-core host that idle work
# took ~6% of the machine from the kernels (docs/performance-notes.md, section Dask). Set them
# before the cluster starts: ``dask.config.set(fusedense.dask.COMPUTE_CONFIG)``, or as the
# DASK_* environment variables of ``dask worker`` / ``dask scheduler`` (``compute_config_env()``).
# The cost: no task profiles on the dashboard, and a worker notices memory pressure within 1 s
# instead of 0.1 s. ``worker-saturation: inf`` turns off Dask's queuing of root tasks: a worker
# receives its blocks up front instead of one per round trip to the scheduler, which left each
# single-threaded worker idle ~10 ms between 60 ms blocks. Queuing guards memory when root tasks
# make large outputs that wait for other tasks; a fusedense predict reads its block and shrinks it
# to the outputs in the same fused task.
COMPUTE_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.scheduler.worker-saturation": "inf",
}


def compute_config_env() -> dict:
    """``COMPUTE_CONFIG`` as the environment variables Dask reads (``DASK_DISTRIBUTED__...``)."""
    return {"DASK_" + key.upper().replace(".", "__").replace("-", "_"): str(value)
            for key, value in COMPUTE_CONFIG.items()}


# --- the network inside a model, and blocks as its inputs ---------------------------------------


def network_of(model) -> MLP:
    """The MLP that computes ``model``'s outputs: the model itself, an estimator's ``network_``
    or a Sequential's ``network``."""
    for net in (model, getattr(model, "network_", None), getattr(model, "network", None)):
        if isinstance(net, MLP):
            if type(net).forward is not MLP.forward or type(net).as_inputs is not MLP.as_inputs:
                raise TypeError(f"model: {type(net).__name__} does not take rows of features; "
                                "fusedense.dask handles dense networks (MLP, estimators, Sequential)")
            return net
    raise TypeError(f"model: expected a fitted fusedense MLP, MLPClassifier/MLPRegressor or built "
                    f"Sequential, got {type(model).__name__}")


def _block_rows(block, columns, dtype):
    """A block (NumPy array or pandas DataFrame partition) as a C-contiguous 2-D array of
    ``dtype``, with the DataFrame's ``columns`` in that order."""
    if hasattr(block, "iloc"):
        block = block[list(columns)] if columns is not None else block
        return np.ascontiguousarray(block.to_numpy(dtype=dtype))
    return np.ascontiguousarray(block, dtype=dtype)


def _columns(model, data, columns):
    """The DataFrame columns the model reads: ``columns``, else the estimator's
    ``feature_names_in_``, else every column."""
    if columns is None:
        columns = getattr(model, "feature_names_in_", None)
    if columns is None:
        return None
    columns = list(columns)
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise KeyError(f"columns: {missing[:5]} not in the DataFrame's columns")
    return columns


# --- threads --------------------------------------------------------------------------------------


def threads_per_task(client=None) -> int:
    """fusedense threads for one task such that worker threads × fusedense threads ≤ cores on
    every host of ``client``'s cluster (the smallest host decides); 1 without a client."""
    if client is None:
        return 1
    workers = client.scheduler_info(n_workers=-1)["workers"]
    cores = client.run(_cores)
    per_host = {}
    for address, info in workers.items():
        host_cores, threads = per_host.get(info["host"], (cores.get(address, 1), 0))
        per_host[info["host"]] = (host_cores, threads + info["nthreads"])
    return max(1, min(c // t for c, t in per_host.values())) if per_host else 1


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _use_threads(n):
    """Sets this process's fusedense thread count (a worker's tasks all ask for the same count,
    so no save and restore: concurrent tasks would race to restore each other's)."""
    from .threads import get_num_threads, set_num_threads
    if get_num_threads() != n:
        set_num_threads(n)


def _client(client):
    if client is not None:
        return client
    try:
        from distributed import get_client
        return get_client()
    except (ImportError, ValueError):
        return None


# --- inference -------------------------------------------------------------------------------------


def _run_block(block, model, method, columns, dtype, threads):
    _use_threads(threads)
    return getattr(model, method)(_block_rows(block, columns, dtype))


class _HiddenFeatures:
    """The outputs of a network's first ``n_layers`` layers: one fused forward over that prefix
    of the layer record, reading the full network's ``params``."""

    def __init__(self, net, n_layers):
        self.net, self.n_layers = net, n_layers

    def features(self, x):
        from .gate import checked_record
        net = self.net
        # the prefix's record is rebuilt on the worker: records register with the gate per process
        layers = checked_record(net.layout[:self.n_layers], net.alphas[:self.n_layers], net.n_params)
        x = net.as_inputs(x)
        out = np.empty((x.shape[0], int(layers[-1]["fan_out"])), net.dtype)
        net.engine.mlp_forward(x, net.params, layers, out)
        return out


def _apply(model, data, method, columns, client, threads):
    """``getattr(model, method)`` over every block of ``data`` (Dask array or DataFrame)."""
    import dask
    import dask.array as da

    net = network_of(model) if not isinstance(model, _HiddenFeatures) else model.net
    client = _client(client)
    threads = threads_per_task(client) if threads is None else int(threads)
    sample = getattr(model, method)(np.zeros((1, net.n_inputs), net.dtype))  # the output's meta
    shipped = dask.delayed(model, pure=True)  # one graph node: sent to each worker once
    if hasattr(data, "map_partitions"):
        import pandas as pd
        columns = _columns(model, data, columns)
        meta = (pd.Series(sample[:0], name=method) if sample.ndim == 1
                else pd.DataFrame(sample[:0], columns=_output_names(model, method, sample.shape[1])))
        return data.map_partitions(_run_partition, shipped, method, columns, net.dtype, threads, meta=meta)
    if columns is not None:
        raise ValueError("columns: selects DataFrame columns; got a Dask array")
    if data.ndim != 2:
        raise ValueError(f"data: expected a 2-D Dask array (n_samples, n_features), got {data.ndim} dimensions")
    if data.shape[1] != net.n_inputs:
        raise ValueError(f"data: expected {net.n_inputs} columns, got shape {data.shape}")
    if len(data.chunks[1]) > 1:
        data = data.rechunk({1: -1})  # the fused forward needs whole rows
    if sample.ndim == 1:
        return data.map_blocks(_run_block, shipped, method, None, net.dtype, threads, dtype=sample.dtype,
                               chunks=(data.chunks[0],), drop_axis=1, meta=sample[:0])
    return data.map_blocks(_run_block, shipped, method, None, net.dtype, threads, dtype=sample.dtype,
                           chunks=(data.chunks[0], (sample.shape[1],)), meta=sample[:0])


def _run_partition(df, model, method, columns, dtype, threads):
    import pandas as pd
    out = _run_block(df, model, method, columns, dtype, threads)
    if out.ndim == 1:
        return pd.Series(out, index=df.index, name=method)
    return pd.DataFrame(out, index=df.index, columns=_output_names(model, method, out.shape[1]))


def _output_names(model, method, n):
    classes = getattr(model, "classes_", None)
    if method == "predict_proba" and classes is not None and len(classes) == n:
        return list(classes)
    return list(range(n))


def predict(model, data, columns=None, client=None, threads=None):
    """``model.predict`` over every block of ``data`` (a Dask array of rows, or a Dask DataFrame
    of which ``columns`` — default the estimator's ``feature_names_in_``, else all — are read in
    that order). Returns a Dask array (chunked like ``data``'s rows) or a Dask DataFrame/Series
    (indexed like ``data``). ``threads``: fusedense threads per task (default: see module doc)."""
    return _apply(model, data, "predict", columns, client, threads)


def predict_proba(model, data, columns=None, client=None, threads=None):
    """``model.predict_proba`` (estimators) or the network's outputs (MLP, Sequential) per block."""
    return _apply(model, data, "predict_proba" if hasattr(model, "predict_proba") else "predict",
                  columns, client, threads)


def transform(model, data, layer=-1, columns=None, client=None, threads=None):
    """Hidden-layer features: the activations of hidden layer ``layer`` (0-based over the hidden
    layers; -1 the last) per block, computed by one fused forward over the layers up to it."""
    net = network_of(model)
    hidden = len(net.layout) - 1
    if hidden < 1:
        raise ValueError("model: has no hidden layer")
    if not -hidden <= layer < hidden:
        raise ValueError(f"layer: expected an index into the {hidden} hidden layer(s), got {layer}")
    features = _HiddenFeatures(net, layer % hidden + 1)
    if hasattr(data, "map_partitions"):
        columns = _columns(model, data, columns)
    return _apply(features, data, "features", columns, client, threads)


# --- streamed training: the data passes through this process, a few blocks at a time ----------------


def _row_blocks(X, y):
    """Matching lists of delayed row blocks of X and y (arrays or DataFrames)."""
    def blocks(data):
        if hasattr(data, "map_partitions"):  # a DataFrame or Series
            return list(data.to_delayed())
        if data.ndim == 2 and len(data.chunks[1]) > 1:
            data = data.rechunk({1: -1})
        return list(data.to_delayed().ravel())
    xs, ys = blocks(X), blocks(y)
    if len(xs) != len(ys):
        raise ValueError(f"X and y: expected the same row blocks, got {len(xs)} and {len(ys)} blocks "
                         f"(rechunk y like X)")
    return xs, ys


def fit(model, X, y, epochs=1, batch_size=200, loss=None, columns=None, classes=None, shuffle=True,
        random_state=None, prefetch=2, client=None):
    """Trains ``model`` in this process on the blocks of X and y as they arrive from the cluster,
    holding at most ``prefetch`` + 1 blocks in memory (X is never materialised here).

    Each block is one ``partial_fit`` call (estimators; ``classes`` needed on the first call of a
    classifier), one epoch of ``fit`` (Sequential) or one ``train_epoch`` in minibatches of
    ``batch_size`` rows with ``loss`` (MLP). ``shuffle``: visit the blocks, and the rows of each
    MLP block, in a new random order every epoch. Returns the model.
    """
    import dask
    client = _client(client)
    xs, ys = _row_blocks(X, y)
    rng = np.random.default_rng(random_state)
    net = network_of(model) if isinstance(model, MLP) else None
    if net is not None:
        loss = get_loss(loss or "mean_squared_error", net.output_activation)
    if columns is None and hasattr(X, "columns"):
        columns = list(X.columns)
    for _ in range(epochs):
        order = rng.permutation(len(xs)) if shuffle else np.arange(len(xs))
        pairs = [(xs[i], ys[i]) for i in order]
        if client is not None:
            pending = [client.compute(list(pair)) for pair in pairs[:prefetch]]
        for k in range(len(pairs)):
            if client is not None:
                if k + prefetch < len(pairs):
                    pending.append(client.compute(list(pairs[k + prefetch])))
                xb, yb = client.gather(pending.pop(0))
            else:
                xb, yb = dask.compute(*pairs[k])
            xb = _block_rows(xb, columns, net.dtype if net is not None else np.float64)
            yb = yb.to_numpy() if hasattr(yb, "to_numpy") else np.asarray(yb)
            _train_block(model, net, xb, yb, loss, batch_size, classes, shuffle, rng)
    return model


def _train_block(model, net, xb, yb, loss, batch_size, classes, shuffle, rng):
    if net is not None:
        x = net.as_inputs(xb)
        targets = net.as_targets(yb, x.shape[0], loss)
        net.train_epoch(x, targets, loss.id, batch_size, rng.permutation(x.shape[0]) if shuffle else None)
    elif hasattr(model, "partial_fit"):
        if classes is not None and not hasattr(model, "classes_"):
            model.partial_fit(xb, yb, classes=classes)
        else:
            model.partial_fit(xb, yb)
    else:
        model.fit(xb, yb, epochs=1, batch_size=batch_size, verbose=0)


# --- synchronous data-parallel training: the data stays on the workers -------------------------------


def batch_plan(shard_rows, batch_size, epoch, shuffle=True, random_state=None):
    """The global batches of one epoch: a list of steps, each a list with, per shard, the shard's
    row indices in it. Every shard gives ``ceil(batch_size / n_shards)`` rows to a step (fewer at
    its end), in a random order per epoch and shard when ``shuffle``. The global batch of a step
    is its shards' rows concatenated in shard order (how single-process training sees it)."""
    per_shard = -(-batch_size // len(shard_rows))
    orders = [np.random.default_rng([0 if random_state is None else random_state, epoch, i]).permutation(n)
              if shuffle else np.arange(n) for i, n in enumerate(shard_rows)]
    steps = -(-max(shard_rows) // per_shard)
    return [[order[s * per_shard:(s + 1) * per_shard] for order in orders] for s in range(steps)]


def _shard_gradient(net, shard, rows, params, loss_id):
    """(rows, loss, gradient) of this worker's part of a global batch (mean over its rows)."""
    x, targets = shard
    params = np.array(params, copy=True)  # a received array may be read-only
    grads = np.empty_like(params)
    loss = net.engine.mlp_gradient(np.ascontiguousarray(x[rows]), np.ascontiguousarray(targets[rows]),
                                   params, grads, net.layers, loss_id, None)
    return len(rows), loss, grads


def _shard(xb, yb, net, loss, threads):
    """A worker's shard as the kernels read it: rows of the model's dtype and checked targets."""
    _use_threads(threads)
    x = net.as_inputs(np.concatenate([np.asarray(b) for b in xb]))
    return x, net.as_targets(np.concatenate([np.asarray(b) for b in yb]), x.shape[0], loss)


def _shard_rows(shard):
    return shard[0].shape[0]


def fit_data_parallel(net: MLP, X, y, epochs=1, batch_size=256, loss="mean_squared_error", shuffle=True,
                      random_state=None, client=None, threads=None):
    """Synchronous data-parallel training of an MLP on a distributed cluster: X and y (Dask
    arrays with the same row chunks) are split into one shard per worker, kept there; for every
    global batch of ``batch_size`` rows (see ``batch_plan``) each worker computes its part's
    gradient with the fused forward+backward, this process sums them weighted by rows (the mean
    over the whole batch, as one process computes it) and applies one fused optimizer step, and
    the new parameters go to the workers with the next step. Equals single-process training on
    the same batches within float rounding (the net's kernel penalties included, at
    penalty_scale 1: each worker's gradient carries them, and the row-weighted sum keeps them
    once). Returns the mean loss of each epoch."""
    client = _client(client)
    if client is None:
        raise ValueError("client: fit_data_parallel needs a distributed Client (none is running)")
    if net.penalties.any() and net.penalty_scale != 1.0:
        raise ValueError(f"net: fit_data_parallel applies the kernel penalties at scale 1 (mlp_gradient), got "
                         f"penalty_scale={net.penalty_scale!r}; set it to 1 or train in one process")
    loss = get_loss(loss, net.output_activation)
    threads = threads_per_task(client) if threads is None else int(threads)
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    xs, ys = _row_blocks(X, y)
    groups = np.array_split(np.arange(len(xs)), min(len(workers), len(xs)))  # consecutive blocks per shard
    with net.training():
        if net.optimizer is None:
            net.set_optimizer("adam")
        worker_net = client.scatter(net, broadcast=True, hash=False)
        xfuts, yfuts = client.compute(xs), client.compute(ys)
        shards = [client.submit(_shard, [xfuts[i] for i in g], [yfuts[i] for i in g], worker_net, loss, threads,
                                workers=[w], pure=False)
                  for g, w in zip(groups, workers)]
        del xfuts, yfuts  # the shards hold the rows from here on
        shard_rows = client.gather([client.submit(_shard_rows, s, workers=[w], pure=False)
                                    for s, w in zip(shards, workers)])
        history = []
        for epoch in range(epochs):
            total = 0.0
            for step_rows in batch_plan(shard_rows, batch_size, len(history), shuffle, random_state):
                active = [i for i, rows in enumerate(step_rows) if len(rows)]
                parts = client.gather([client.submit(_shard_gradient, worker_net, shards[i], step_rows[i],
                                                     net.params, loss.id,
                                                     workers=[workers[i]], pure=False) for i in active])
                total += _apply_update(net, parts)
            history.append(total / sum(shard_rows))
        return history


def _apply_update(net, parts) -> float:
    """One optimizer step with the row-weighted mean of the workers' gradients; returns the
    batch's summed loss (mean × rows). Transactional: a loss that is not finite applies nothing."""
    n = sum(rows for rows, _, _ in parts)
    grads = np.zeros(net.n_params, net.dtype) if net.grads is None else net.grads
    grads[...] = 0
    loss = 0.0
    for rows, part_loss, part_grads in parts:
        grads += part_grads * net.dtype.type(rows / n)
        loss += part_loss * rows
    net.grads = grads
    step = net.step + 1
    if not math.isfinite(loss):
        raise FloatingPointError(f"training diverged: the loss became {loss / n} at optimizer step {step}, "
                                 f"which was not applied")
    h = net._hyper
    h[abi.H_STEP] = step
    if h[abi.H_OPTIMIZER] not in (abi.OPT_SGD, abi.OPT_ADAM):
        raise ValueError("optimizer: the data-parallel fit steps with SGD or Adam (the engines' sgd_step / "
                         f"adam_step), got {type(net.optimizer).__name__}")
    if h[abi.H_OPTIMIZER] == abi.OPT_SGD:
        net.engine.sgd_step(net.params, grads, net.opt_state[0], h[abi.H_LR], h[abi.H_BETA1],
                            bool(h[abi.H_NESTEROV]), h[abi.H_WEIGHT_DECAY])
    else:
        net.engine.adam_step(net.params, grads, net.opt_state[0], net.opt_state[1], step, h[abi.H_LR],
                             h[abi.H_BETA1], h[abi.H_BETA2], h[abi.H_EPS], h[abi.H_WEIGHT_DECAY],
                             bool(h[abi.H_DECOUPLED]))
    net.step = step
    return loss
