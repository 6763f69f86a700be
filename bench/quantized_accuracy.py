"""Accuracy of quantized models against their float32 originals (issue 18's accuracy bars):
digits (scikit-learn) and Fashion-MNIST (Debian dataset-fashion-mnist), an MLP trained here
with a fixed seed, then fd.quantize'd as int8 (dynamic and calibrated on 512 training rows)
and bf16. Prints a markdown table; every engine gives the same accuracies (their outputs
agree to float32 rounding), so the Cython engine is used.

    python bench/quantized_accuracy.py            # about a minute on one core
"""
import sys

import numpy as np

import fusedense as fd
from fusedense.datasets import DatasetNotFoundError, load_digits, load_fashion_mnist


def _train(x, y, sizes, epochs, seed=0):
    net = fd.MLP(sizes, ["relu"] * (len(sizes) - 2) + ["softmax"], init="he_uniform", random_state=seed)
    net.set_optimizer("adam")
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        net.train_epoch(x, y, 0, 64, order=rng.permutation(len(x)))
    return net


def _accuracy(model, x, y):
    return 100.0 * float((model.predict(x).argmax(axis=1) == y).mean())


def datasets():
    x, y = load_digits()
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    yield "digits (64-128-64-10, 1797 rows, 360 test)", (x[:1437], y[:1437]), (x[1437:], y[1437:]), [64, 128, 64, 10], 40
    try:
        (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    except DatasetNotFoundError as exc:
        print(f"Fashion-MNIST skipped: {exc}", file=sys.stderr)
        return
    x_train = x_train.reshape(len(x_train), -1).astype(np.float32) / 255
    x_test = x_test.reshape(len(x_test), -1).astype(np.float32) / 255
    yield "Fashion-MNIST (784-128-64-10, 60k train, 10k test)", (x_train, y_train), (x_test, y_test), \
        [784, 128, 64, 10], 8


def main():
    print("| data set | float32 | int8 (dynamic) | int8 (calibrated) | bf16 |")
    print("|---|---:|---:|---:|---:|")
    for title, (x_train, y_train), (x_test, y_test), sizes, epochs in datasets():
        net = _train(x_train, y_train, sizes, epochs)
        reference = _accuracy(net, x_test, y_test)
        cells = [f"{reference:.2f}%"]
        for dtype, calibration in (("int8", None), ("int8", x_train[:512]), ("bf16", None)):
            accuracy = _accuracy(fd.quantize(net, dtype, calibration=calibration), x_test, y_test)
            cells.append(f"{accuracy:.2f}% ({accuracy - reference:+.2f})")
        print(f"| {title} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
