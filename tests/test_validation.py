"""Bad input gets a clear error naming the argument, before any compiled code runs."""
import numpy as np
import pytest

import fusedense as fd
from fusedense.layout import make_layout

x = np.ones((4, 3))
W = np.ones((3, 2))
b = np.ones(2)
y = np.ones((4, 2))
p = np.ones(10)
layout, alphas, n_params = make_layout([3, 5, 2], ["relu", "softmax"])
params = np.ones(n_params)
read_only = np.ones((4, 2))
read_only.flags.writeable = False

# (id, call, exception, message pattern): adding a case is one line
CASES = [
    ("x_0d", lambda: fd.dense(np.float64(1.0), W), ValueError, r"x: expected an array with at least 1 dimension"),
    ("W_1d", lambda: fd.dense(x, np.ones(3)), ValueError, r"W: expected a 2-D array, got array of shape \(3,\)"),
    ("W_3d", lambda: fd.dense(x, np.ones((3, 2, 1))), ValueError, r"W: expected a 2-D array"),
    ("x_W_mismatch", lambda: fd.dense(np.ones((4, 5)), W), ValueError,
     r"x: last dimension must equal W.shape\[0\] \(in_features\) = 3, got shape \(4, 5\)"),
    ("b_shape", lambda: fd.dense(x, W, np.ones(3)), ValueError, r"b: expected shape \(2,\) \(out_features"),
    ("b_2d", lambda: fd.dense(x, W, np.ones((1, 2))), ValueError, r"b: expected a 1-D array"),
    ("x_int", lambda: fd.dense(x.astype(int), W), TypeError, r"x: expected a float32 or float64 array, got dtype int64"),
    ("x_bool", lambda: fd.dense(x.astype(bool), W), TypeError, r"x: expected a float32 or float64 array, got dtype bool"),
    ("x_complex", lambda: fd.dense(x.astype(complex), W), TypeError, r"x: expected a float32 or float64 array"),
    ("x_float16", lambda: fd.dense(x.astype(np.float16), W), TypeError, r"x: expected a float32 or float64 array, got dtype float16"),
    ("x_object", lambda: fd.dense(x.astype(object), W), TypeError, r"x: expected a float32 or float64 array, got dtype object"),
    ("x_list_of_str", lambda: fd.dense([["a", "b", "c"]], W), TypeError, r"x: expected numbers"),
    ("mixed_dtypes", lambda: fd.dense(x, W.astype(np.float32)), TypeError, r"W: dtype float32 does not match x \(float64\)"),
    ("unknown_activation", lambda: fd.dense(x, W, activation="rleu"), ValueError,
     r"activation: unknown activation 'rleu'; expected one of identity, relu"),
    ("alpha_without_param", lambda: fd.dense(x, W, activation="relu", alpha=0.1), ValueError,
     r"alpha: activation 'relu' takes no alpha, got alpha=0.1"),
    ("alpha_negative", lambda: fd.dense(x, W, activation="leaky_relu", alpha=-1), ValueError, r"alpha: expected a finite number >= 0"),
    ("alpha_nan", lambda: fd.dense(x, W, activation="elu", alpha=float("nan")), ValueError, r"alpha: expected a finite number"),
    ("empty_batch", lambda: fd.dense(np.ones((0, 3)), W), ValueError, r"x: expected a non-empty array, got array of shape \(0, 3\)"),
    ("empty_W", lambda: fd.dense(np.ones((4, 0)), np.ones((0, 2))), ValueError, r"W: expected a non-empty array"),
    ("out_shape", lambda: fd.dense(x, W, out=np.ones((4, 3))), ValueError, r"out: expected shape \(4, 2\), got shape \(4, 3\)"),
    ("out_dtype", lambda: fd.dense(x, W, out=np.ones((4, 2), np.float32)), TypeError, r"out: expected dtype float64, got dtype float32"),
    ("out_read_only", lambda: fd.dense(x, W, out=read_only), ValueError, r"out: the array is read-only"),
    ("out_not_array", lambda: fd.dense(x, W, out=[[0.0] * 2] * 4), TypeError, r"out: expected a numpy array, got list"),
    ("grad_dy_shape", lambda: fd.dense_grad(np.ones((4, 3)), x, W, y=y), ValueError, r"dy: expected shape \(4, 2\)"),
    ("grad_needs_z", lambda: fd.dense_grad(y, x, W, y=y, activation="gelu"), ValueError,
     r"z: activation 'gelu' needs z to compute its derivative"),
    ("grad_needs_z_or_y", lambda: fd.dense_grad(y, x, W, activation="relu"), ValueError, r"z or y: activation 'relu' needs z or y"),
    ("grad_z_shape", lambda: fd.dense_grad(y, x, W, z=np.ones((4, 3)), activation="gelu"), ValueError, r"z: expected shape \(4, 2\)"),
    ("grad_mixed", lambda: fd.dense_grad(y.astype(np.float32), x, W, y=y), TypeError, r"does not match dy \(float32\)"),
    ("xent_labels_float", lambda: fd.softmax_cross_entropy(y, np.array([0.0, 1, 1, 0])), TypeError,
     r"labels: expected integer class labels, got dtype float64"),
    ("xent_label_too_big", lambda: fd.softmax_cross_entropy(y, [0, 1, 2, 0]), ValueError, r"labels: labels must lie in \[0, 2\), got 2"),
    ("xent_label_negative", lambda: fd.softmax_cross_entropy(y, [0, -1, 1, 0]), ValueError, r"labels: labels must lie in \[0, 2\), got -1"),
    ("xent_label_count", lambda: fd.softmax_cross_entropy(y, [0, 1]), ValueError, r"labels: expected shape \(4,\) \(one label per row\), got shape \(2,\)"),
    ("xent_probs_shape", lambda: fd.softmax_cross_entropy(y, np.ones((4, 3))), ValueError, r"labels: expected shape \(4, 2\)"),
    ("xent_logits_1d", lambda: fd.softmax_cross_entropy(b, [0]), ValueError, r"logits: expected a 2-D array"),
    ("bce_targets_shape", lambda: fd.binary_cross_entropy(y, np.ones(3)), ValueError, r"targets: expected shape \(4, 2\)"),
    ("mse_targets_shape", lambda: fd.mean_squared_error(y, np.ones((2, 4))), ValueError, r"targets: expected shape \(4, 2\)"),
    ("sgd_params_list", lambda: fd.sgd_step([1.0], [1.0]), TypeError, r"params: expected a numpy array \(updated in place\)"),
    ("sgd_params_read_only", lambda: fd.sgd_step(read_only, read_only), ValueError, r"params: must be a writeable C-contiguous array"),
    ("sgd_grads_size", lambda: fd.sgd_step(p.copy(), np.ones(9)), ValueError, r"grads: expected 10 elements like params"),
    ("sgd_lr_negative", lambda: fd.sgd_step(p.copy(), p, lr=-1), ValueError, r"lr: expected a finite number > 0"),
    ("sgd_momentum_no_velocity", lambda: fd.sgd_step(p.copy(), p, momentum=0.9), ValueError, r"velocity: momentum > 0 needs"),
    ("sgd_velocity_dtype", lambda: fd.sgd_step(p.copy(), p, np.zeros(10, np.float32), momentum=0.9), TypeError,
     r"velocity: expected dtype float64 like params"),
    ("adam_step_zero", lambda: fd.adam_step(p.copy(), p, np.zeros(10), np.zeros(10), 0), ValueError, r"step: expected an integer >= 1"),
    ("adam_beta1", lambda: fd.adam_step(p.copy(), p, np.zeros(10), np.zeros(10), 1, beta1=1.0), ValueError, r"beta1: expected a finite number"),
    ("adam_m_shape", lambda: fd.adam_step(p.copy(), p, np.zeros(9), np.zeros(10), 1), ValueError, r"m: expected shape \(10,\)"),
    ("mlp_layout_shape", lambda: fd.mlp_forward(x, params, np.ones((2, 3), int)), ValueError, r"layout: expected shape \(n_layers, 4\)"),
    ("mlp_params_short", lambda: fd.mlp_forward(x, params[:-1], layout, alphas), ValueError, r"layout\[1\]: layer needs params"),
    ("mlp_x_width", lambda: fd.mlp_forward(np.ones((4, 2)), params, layout, alphas), ValueError,
     r"x: last dimension must equal layout\[0, 1\]"),
    ("mlp_alphas", lambda: fd.mlp_forward(x, params, layout, np.zeros(3)), ValueError, r"alphas: expected shape \(2,\)"),
    ("layout_rowwise_hidden", lambda: make_layout([3, 4, 2], ["softmax", "relu"]), ValueError,
     r"activations\[0\]: 'softmax' is only allowed on the last layer"),
]


@pytest.mark.parametrize("call, error, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()
