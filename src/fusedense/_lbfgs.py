"""scikit-learn's ``solver="lbfgs"`` over the fused kernels: scipy's L-BFGS-B minimises the full-batch
loss, each evaluation ONE engine call (``mlp_gradient``: forward, loss and backward into a
preallocated gradient buffer); the L2 penalty on the weight matrices (not the biases, as in
scikit-learn) is added to the flat vectors in NumPy."""
from __future__ import annotations

import numpy as np


def weight_mask(net) -> np.ndarray:
    """1.0 where the flat parameter buffer holds a weight-matrix entry, 0.0 at the biases."""
    mask = np.zeros(net.n_params)
    for offset, fan_in, fan_out, _ in net.layout.tolist():
        mask[offset:offset + fan_in * fan_out] = 1.0
    return mask


def minimize(net, X, targets, loss_id, sample_weight, *, weight_sum, alpha, loss_scale, grad_scale,
             max_iter, max_fun, tol, verbose):
    """Fits ``net.params`` in place; returns scipy's OptimizeResult.

    sample_weight: None or (n,) weights in the network's dtype that sum to n (the engine's
    weighted mean is then scikit-learn's weighted average); ``weight_sum``: the sum of the
    user's weights (or n), which divides the penalty as in scikit-learn. ``loss_scale`` / ``grad_scale``
    convert the engine's loss / gradient to scikit-learn's (the regressor reports half the MSE).
    """
    import scipy.optimize  # a scikit-learn dependency; imported when lbfgs is asked for

    penalty = alpha / weight_sum
    mask = weight_mask(net) if alpha else None
    grads = np.zeros(net.n_params, net.dtype)

    def loss_and_gradient(flat):
        net.params[...] = flat
        loss = net.engine.mlp_gradient(X, targets, net.params, grads, net.layers, loss_id, sample_weight)
        gradient = grads.astype(np.float64) / grad_scale
        loss *= loss_scale
        if mask is not None:
            weights = flat * mask
            loss += 0.5 * penalty * float(weights @ weights)
            gradient += penalty * weights
        return loss, gradient

    options = {"maxfun": max_fun, "maxiter": max_iter, "gtol": tol}
    if verbose:  # scipy >= 1.15 dropped iprint from L-BFGS-B; verbose only prints where it exists
        options.update(_iprint_option())
    result = scipy.optimize.minimize(loss_and_gradient, net.params.astype(np.float64), method="L-BFGS-B",
                                     jac=True, options=options)
    net.params[...] = result.x
    return result


def _iprint_option():
    try:
        from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
    except ImportError:
        return {}
    return _get_additional_lbfgs_options_dict("iprint", 1)
