"""Integer codes shared by every backend (the compiled ABI besides activation ids).

``kernels/abi.pxd`` mirrors these values for the Cython kernels; a test checks they agree.
"""

# Loss applied by mlp_train_step to the network's last layer.
LOSS_SPARSE_XENT = 0  # integer labels; softmax over the last layer's pre-activation
LOSS_CATEGORICAL_XENT = 1  # probability targets; softmax over the last layer's pre-activation
LOSS_BINARY_XENT = 2  # 0/1 targets; sigmoid over the last layer's pre-activation
LOSS_MSE = 3  # mean squared error of the last layer's output

LOSSES = {
    "sparse_softmax_cross_entropy": LOSS_SPARSE_XENT,
    "softmax_cross_entropy": LOSS_CATEGORICAL_XENT,
    "binary_cross_entropy": LOSS_BINARY_XENT,
    "mse": LOSS_MSE,
}

# Optimizers for mlp_train_step.
OPT_SGD = 0
OPT_ADAM = 1
OPT_ADAGRAD = 2  # only sparse_train_step takes it (state: one row, the squared-gradient sums)
OPT_RMSPROP = 3  # Keras's RMSprop (state: the mean square, the momentum buffer); not sparse_train_step

# Positions in the float64 ``hyper`` vector passed to mlp_train_step.
H_OPTIMIZER = 0  # OPT_SGD, OPT_ADAM, OPT_RMSPROP (or OPT_ADAGRAD for sparse_train_step)
H_LR = 1  # learning rate
H_BETA1 = 2  # Adam beta1, or SGD / RMSprop momentum
H_BETA2 = 3  # Adam beta2, or RMSprop rho
H_EPS = 4  # Adam, Adagrad and RMSprop epsilon
H_WEIGHT_DECAY = 5  # RMSprop's is decoupled (p −= lr·wd·p), as Keras's
H_NESTEROV = 6  # SGD: 1.0 for Nesterov momentum
H_DECOUPLED = 7  # Adam: 1.0 for AdamW (decoupled weight decay), 0.0 for L2 added to the gradient
H_STEP = 8  # 1-based number of this update (Adam's bias correction; the caller sets it)
H_APPLIED = 9  # the engine writes H_STEP here once the update is applied: the model's step count
H_PENALTY_SCALE = 10  # multiplies the layer record's kernel penalties (l1, l2) for this step: 1 for
#                       Keras's regularizers, 1/(rows of the batch) for scikit-learn's alpha·W/n
N_HYPER = 11
