"""``fusedense demo``: train a Keras-style network on first names → gender, then compare
inference speed against NumPy as a user would write it (and PyTorch / ONNX Runtime if installed).

The model is the classic Keras example (Dense 128 relu → 64 relu → softmax, Adam, sparse
categorical cross-entropy, 10 epochs, batch 32, validation split 0.2) on hashed character
1–3-grams of ~32k names from the gender-guesser package.
"""
from __future__ import annotations

import time

import numpy as np

HELP = "train a name → gender classifier, then compare inference speed with NumPy/PyTorch/ONNX Runtime"

N_FEATURES = 1024  # hashed character n-gram buckets: the network's input width
BATCH_SIZES = (1, 32, 1024)
EXAMPLE_NAMES = ["maria", "john", "alexandra", "peter", "yuki", "andrea", "kim", "oliver", "sophie", "noah"]


def add_arguments(parser):
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    parser.add_argument("--backend", default=None, help="backend to train with (default: the fastest available)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, initial weights and shuffling")
    parser.add_argument("--limit", type=int, default=None, help="use only this many names (a quicker look)")
    parser.add_argument("--blocks", type=int, default=7, help="timing blocks per candidate (the median is shown)")


def run(args) -> int:
    import fusedense as fd
    from .hashing import HashingVectorizer

    try:
        names, labels, classes = fd.datasets.load_names(seed=args.seed)
    except fd.datasets.DatasetNotFoundError as exc:
        print(f"fusedense demo needs the first-name list: {exc}")
        return 1
    names, labels = names[:args.limit], labels[:args.limit]
    vectorizer = HashingVectorizer(n_features=N_FEATURES, analyzer="char", ngram_range=(1, 3))
    x = vectorizer.transform(names)
    x_train, x_test, y_train, y_test = fd.datasets.train_test_split(x, labels, test_size=0.2, seed=args.seed)
    print(f"{len(names):,} first names ({', '.join(f'{np.sum(labels == i):,} {c}' for i, c in enumerate(classes))}) "
          f"→ {N_FEATURES} hashed character 1–3-grams; {len(y_train):,} for training, {len(y_test):,} for testing\n")

    input_dim, num_classes = N_FEATURES, len(classes)
    model = fd.Sequential([
        fd.Dense(128, activation="relu", input_shape=(input_dim,)),
        fd.Dense(64, activation="relu"),
        fd.Dense(num_classes, activation="softmax"),
    ], seed=args.seed, backend=args.backend)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    print(f"training on backend {model.network.backend!r}:")
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, validation_split=0.2)
    train_seconds = time.perf_counter() - start
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"\ntest accuracy {accuracy:.4f} (loss {loss:.4f}); training took {train_seconds:.1f} s")
    proba = model.predict(vectorizer.transform(EXAMPLE_NAMES))
    print("examples: " + ", ".join(f"{n} → {classes[p.argmax()]} {p.max():.2f}" for n, p in zip(EXAMPLE_NAMES, proba)))

    print("\ninference speed of the trained model (median time per call; speed-up over NumPy):")
    print_speed_table(model.network, x_test, blocks=args.blocks)
    return 0


# --- the inference-speed comparison -------------------------------------------------------------

def numpy_forward(weights):
    """The network as a NumPy user writes it: one matmul, bias and activation per layer."""
    (W1, b1), (W2, b2), (W3, b3) = weights

    def forward(x):
        h = np.maximum(x @ W1 + b1, 0)
        h = np.maximum(h @ W2 + b2, 0)
        z = h @ W3 + b3
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return forward


def torch_forward(weights):
    """The same network in PyTorch (eager, inference mode), or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    layers = []
    for i, (W, b) in enumerate(weights):
        linear = torch.nn.Linear(*W.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W.T.copy()))
            linear.bias.copy_(torch.from_numpy(b.copy()))
        layers += [linear, torch.nn.ReLU() if i < len(weights) - 1 else torch.nn.Softmax(dim=1)]
    module = torch.nn.Sequential(*layers).eval()

    def forward(x):
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return forward


def onnxruntime_forward(weights):
    """The same network as an ONNX graph run by ONNX Runtime, or None without onnx/onnxruntime."""
    try:
        import onnx
        import onnxruntime
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    nodes, initializers, h = [], [], "x"
    for i, (W, b) in enumerate(weights):
        initializers += [numpy_helper.from_array(W, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [h, f"W{i}", f"b{i}"], [f"z{i}"]))
        last = i == len(weights) - 1
        nodes.append(helper.make_node("Softmax" if last else "Relu", [f"z{i}"], ["y" if last else f"h{i}"],
                                      **({"axis": 1} if last else {})))
        h = f"h{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, weights[0][0].shape[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, weights[-1][0].shape[1]])],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 9)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})[0]


def speed_candidates(network):
    """``{label: predict(x)}``: every available fusedense backend, NumPy, PyTorch, ONNX Runtime."""
    from . import _backends
    from .network import MLP

    weights = [(W.copy(), b.copy()) for W, b in network.weights]
    candidates = {"NumPy": numpy_forward(weights)}
    for name in _backends.backends():
        twin = MLP.from_architecture(network.architecture(), backend=name)
        if twin.backend != name:
            continue  # the backend failed to load and fell back to another one
        twin.params[...] = network.params
        candidates[f"fusedense[{name}]"] = twin.predict
    for label, make in (("PyTorch", torch_forward), ("ONNX Runtime", onnxruntime_forward)):
        forward = make(weights)
        if forward is not None:
            candidates[label] = forward
    return candidates


def print_speed_table(network, x_pool, batch_sizes=BATCH_SIZES, blocks=7):
    from .timing import compare

    candidates = speed_candidates(network)
    width = max(len(label) for label in candidates)
    print(f"  {'':{width}}" + "".join(f"{f'batch {b}':>22}" for b in batch_sizes))
    results = {}
    for batch in batch_sizes:
        x = np.ascontiguousarray(np.resize(x_pool, (batch, x_pool.shape[1])))
        expected = candidates["NumPy"](x)
        for label, fn in candidates.items():  # check the answers before timing anything
            np.testing.assert_allclose(fn(x), expected, rtol=1e-4, atol=1e-5, err_msg=label)
        results[batch] = compare({label: (lambda fn=fn: fn(x)) for label, fn in candidates.items()}, blocks=blocks)
    for label in candidates:
        cells = "".join(f"{_format_seconds(results[b][label]):>13} {results[b]['NumPy'] / results[b][label]:6.2f}× "
                        for b in batch_sizes)
        print(f"  {label:{width}}{cells}")
    return results


def _format_seconds(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    return f"{seconds * 1e3:.2f} ms"
