"""``mlp_train_epoch`` for the engines that run it as a Python loop over their own
``mlp_train_step`` (numpy: the oracle, kept readable; numba). The cython engine runs the same
loop in C (kernels/layers.pyx, _mlp_epoch): each batch here is what it computes per batch."""
from __future__ import annotations

import math

import numpy as np

from .. import abi


def train_epoch(train_step, x, targets, order, batch_size, params, grads, opt_state, layers, loss_id, hyper,
                sample_weight, batch_losses, outputs, penalty_over_weight, epsilon_on_sqrt_v):
    """The interface's mlp_train_epoch, one ``train_step`` (an engine's mlp_train_step) a batch."""
    m = x.shape[0] if order is None else order.shape[0]
    batch_size = min(batch_size, m)
    base_eps, base_scale = hyper[abi.H_EPS], hyper[abi.H_PENALTY_SCALE]
    batch_losses[...] = np.nan
    total, loss = 0.0, 0.0
    try:
        for i, start in enumerate(range(0, m, batch_size)):
            stop = min(start + batch_size, m)
            rows = np.arange(start, stop) if order is None else order[start:stop]
            weights, weight_sum = None, float(stop - start)
            if sample_weight is not None:  # the batch's weighted average: weights summing to its rows
                batch_weights = sample_weight[rows].astype(np.float64)
                weight_sum = float(batch_weights.sum())
                scale = (stop - start) / weight_sum if weight_sum > 0 else 0.0
                weights = np.ascontiguousarray(batch_weights * scale, dtype=params.dtype)
            step = int(hyper[abi.H_APPLIED]) + 1
            hyper[abi.H_STEP] = step
            if epsilon_on_sqrt_v:  # ε on √v is ε/√(1−β2^t) on √v̂
                hyper[abi.H_EPS] = base_eps / math.sqrt(1 - hyper[abi.H_BETA2] ** step)
            if penalty_over_weight:
                hyper[abi.H_PENALTY_SCALE] = base_scale / weight_sum if weight_sum > 0 else 0.0
            loss = train_step(np.ascontiguousarray(x[rows]), np.ascontiguousarray(targets[rows]), params, grads,
                              opt_state, layers, loss_id, hyper,
                              None if outputs is None else outputs[start:stop], weights)
            batch_losses[i] = loss
            if not math.isfinite(loss):
                return loss
            total += loss * (stop - start)
    finally:
        hyper[abi.H_EPS], hyper[abi.H_PENALTY_SCALE] = base_eps, base_scale
    return total / m
