"""Accuracy of quantized models against their float32 originals (issue 18's accuracy bars):
digits (scikit-learn) and Fashion-MNIST (Debian dataset-fashion-mnist), an MLP trained here
with a fixed seed, then fd.quantize'd as int8 (dynamic and calibrated on 512 training rows)
and bf16. Then the sparse-input models (a quantized table as the first layer):
fortunes language ID (fd.TextClassifier as bench/bench_text.py sets it up: word 1-2-grams and
character 2-4-grams hashed into 2^20 buckets, dim 32, 5 epochs, 3000 texts per language, 80/20
split) and the names demo on sparse hashed features (character 1-3-grams, 2^18 buckets, CSR;
fd.MLPClassifier 128 relu → 64 relu → softmax, Adam, batch 32, 10 epochs; 80/20 split).
Prints markdown tables; every engine gives the same accuracies (their outputs agree to
float32 rounding), so the Cython engine is used.

    python bench/quantized_accuracy.py            # a few minutes on one core
    python bench/quantized_accuracy.py --sparse   # the sparse-input models only
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
    p = model.predict(x)
    predicted = (p[:, 0] > 0.5) if p.shape[1] == 1 else p.argmax(axis=1)  # (a binary MLPClassifier: one logistic)
    return 100.0 * float((predicted == y).mean())


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


def _sparse(x):
    return isinstance(x, fd.sparse.CSR) or fd.sparse.is_sparse(x)


def _row(title, net, x_train, x_test, y_test):
    """A table row: the float network's test accuracy, then each quantized copy's (and its
    difference in points)."""
    reference = _accuracy(net, x_test, y_test)
    cells = [f"{reference:.2f}%"]
    for dtype, calibration in (("int8", None), ("int8", x_train[:512]), ("bf16", None)):
        q = fd.quantize(net, dtype, calibration=calibration, sparse_input=_sparse(x_test) or None)
        accuracy = _accuracy(q, x_test, y_test)
        cells.append(f"{accuracy:.2f}% ({accuracy - reference:+.2f})")
    print(f"| {title} | " + " | ".join(cells) + " |", flush=True)


def fortunes(per_language=3000, dim=32, epochs=5, seed=0):
    """(fitted TextClassifier, CSR train rows, CSR test rows, test labels) on fortunes language ID."""
    texts, labels, _ = fd.datasets.load_fortunes(max_per_language=per_language, seed=seed)
    clf = fd.TextClassifier(dim=dim, epochs=epochs, random_state=seed)
    X = clf.transform(texts)
    cut = int(len(texts) * 0.8)
    clf.fit_transformed(X[:cut], labels[:cut])
    return clf, X[:cut], X[cut:], labels[cut:]


def names(limit=None, n_features=2**18, epochs=10, seed=0):
    """(fitted MLPClassifier, CSR train rows, CSR test rows, test labels): the names demo on
    sparse hashed character 1-3-grams."""
    import warnings

    names, labels, _ = fd.datasets.load_names(seed=seed)
    names, labels = names[:limit], labels[:limit]
    X = fd.HashingVectorizer(n_features=n_features, analyzer="char", ngram_range=(1, 3), sparse=True).transform(names)
    order = np.random.default_rng(seed).permutation(len(labels))  # (datasets.train_test_split's split)
    test, train = order[:round(len(labels) * 0.2)], order[round(len(labels) * 0.2):]
    X_train, X_test, y_train, y_test = X[train], X[test], labels[train], labels[test]
    clf = fd.MLPClassifier((128, 64), batch_size=32, max_iter=epochs, random_state=seed, tol=0,
                           n_iter_no_change=10**9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (max_iter reached: the epochs are the demo's choice)
        clf.fit(X_train, y_train)
    return clf.network_, X_train, X_test, y_test


def main():
    header = "| data set | float32 | int8 (dynamic) | int8 (calibrated) | bf16 |\n|---|---:|---:|---:|---:|"
    print(header)
    if "--sparse" not in sys.argv:
        for title, (x_train, y_train), (x_test, y_test), sizes, epochs in datasets():
            _row(title, _train(x_train, y_train, sizes, epochs), x_train, x_test, y_test)
    try:
        clf, x_train, x_test, y_test = fortunes()
        _row(f"fortunes language ID (TextClassifier 2^20 → 32 → {len(clf.classes_)}, {x_train.shape[0]} train, "
             f"{x_test.shape[0]} test)", clf.network_, x_train, x_test, y_test)
    except fd.datasets.DatasetNotFoundError as exc:
        print(f"fortunes skipped: {exc}", file=sys.stderr)
    try:
        net, x_train, x_test, y_test = names()
        _row(f"names demo, sparse (2^18 → 128 → 64 → 1 logistic, {x_train.shape[0]} train, {x_test.shape[0]} test)", net,
             x_train, x_test, y_test)
    except fd.datasets.DatasetNotFoundError as exc:
        print(f"names skipped: {exc}", file=sys.stderr)


if __name__ == "__main__":
    main()
