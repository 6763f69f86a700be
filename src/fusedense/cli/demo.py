"""``fusedense demo``: train a Keras-style network on first names → gender, then compare
inference speed against NumPy as a user would write it (and PyTorch / ONNX Runtime if installed).

The model is the classic Keras example (Dense 128 relu → 64 relu → softmax, Adam, sparse
categorical cross-entropy, 10 epochs, batch 32, validation split 0.2) on hashed character
1–3-grams of ~32k names from the gender-guesser package: sparse rows (about 20 non-zeros of
2^18 buckets), which the first layer reads as a gather-sum of its weight rows.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from .. import _backends, datasets
from ..benchmarking import timing
from ..benchmarking.runner import measure
from ..benchmarking.systems import FusedenseAPI, NumpyUser, OnnxRuntime, Torch
from ..benchmarking.workloads import Problem
from ..hashing import HashingVectorizer
from ..models import Dense, Sequential
from ..threads import threads_limited
from .options import backend_name, int_in, non_negative_int, positive_int, thread_count

HELP = "train a name → gender classifier, then compare inference speed with NumPy/PyTorch/ONNX Runtime"

#: Hashed character n-gram buckets, the network's input width: wide enough that few n-grams
#: share a bucket (a dense 1024-column squeeze scored ~0.5 points lower), sparse so each name
#: costs only its ~20 n-grams (docs/performance-notes.md, "Sparse input").
N_FEATURES = 2**18
BATCH_SIZES = (1, 32, 1024)
#: One thread per system by default: with one pool per system on a few cores, the threads one
#: system leaves spinning after its call slow down the next (docs/performance-notes.md).
SPEED_THREADS = 1
EXAMPLE_NAMES = ["maria", "john", "alexandra", "peter", "yuki", "andrea", "kim", "oliver", "sophie", "noah"]


#: Fewer names leave too few for the test split and the validation split of fit.
MIN_NAMES = 20


def add_arguments(parser):
    parser.add_argument("--epochs", type=positive_int, default=10, help="training epochs (default 10)")
    parser.add_argument("--backend", type=backend_name, default=None,
                        help="backend to train with (default: the fastest available)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed for the split, initial weights and shuffling")
    parser.add_argument("--limit", type=int_in(MIN_NAMES, 10 ** 9), default=None,
                        help="use only this many names (a quicker look)")
    parser.add_argument("--samples", type=positive_int, default=timing.QUICK.samples,
                        help="timed blocks per system, taken in turns (the median is shown)")
    parser.add_argument("--threads", type=thread_count, default=SPEED_THREADS,
                        help=f"threads of every system in the speed comparison (default {SPEED_THREADS})")


def run(args) -> int:
    try:
        names, labels, classes = datasets.load_names(seed=args.seed)
    except datasets.DatasetNotFoundError as exc:
        print(f"fusedense demo needs the first-name list: {exc}")
        return 1
    names, labels = names[:args.limit], labels[:args.limit]
    vectorizer = HashingVectorizer(n_features=N_FEATURES, analyzer="char", ngram_range=(1, 3), sparse=True)
    x = vectorizer.transform(names)
    x_train, x_test, y_train, y_test = datasets.train_test_split(x, labels, test_size=0.2, seed=args.seed)
    print(f"{len(names):,} first names ({', '.join(f'{np.sum(labels == i):,} {c}' for i, c in enumerate(classes))}) "
          f"→ sparse rows of {N_FEATURES:,} hashed character 1–3-gram buckets ({x.nnz / x.shape[0]:.0f} "
          f"non-zeros a name); {len(y_train):,} for training, {len(y_test):,} for testing\n")

    input_dim, num_classes = N_FEATURES, len(classes)
    model = Sequential([
        Dense(128, activation="relu", input_shape=(input_dim,)),
        Dense(64, activation="relu"),
        Dense(num_classes, activation="softmax"),
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

    print(f"\ninference speed of the trained model, {args.threads} thread(s) each "
          f"(median time per call; median speed-up over NumPy):")
    print_speed_table(model.network, x_test, samples=args.samples, threads=args.threads)
    return 0


# --- the inference-speed comparison (the `fusedense bench` machinery on the trained weights) ---

def speed_systems():
    """The public call (fd.mlp_forward) on every fusedense backend, NumPy as users write it, and
    PyTorch / ONNX Runtime when installed."""
    systems = [FusedenseAPI(name) for name in _backends.backends()] + [NumpyUser(), Torch(), OnnxRuntime()]
    return [system for system in systems if not system.missing()]


def speed_rows(network, x_pool, batch_sizes=BATCH_SIZES, samples=timing.QUICK.samples, threads=SPEED_THREADS):
    """``{batch: {system name: bench row}}``: each system checked against the reference, then
    timed in alternating blocks (the quick method of ``fusedense bench``). ``x_pool``'s rows
    (an array or SciPy sparse) are repeated up to each batch size."""
    systems = speed_systems()
    method = dataclasses.replace(timing.QUICK, samples=samples)
    rows = {}
    with threads_limited(threads):
        for batch in batch_sizes:
            x = x_pool[np.resize(np.arange(x_pool.shape[0]), batch)].astype(network.dtype)
            problem = Problem.from_layers(network.weights, network.activations, x, title="the trained model")
            rows[batch] = {row["system"]: row for row in measure(problem, systems, threads, method)}
    return rows


def print_speed_table(network, x_pool, batch_sizes=BATCH_SIZES, samples=timing.QUICK.samples, threads=SPEED_THREADS):
    rows = speed_rows(network, x_pool, batch_sizes, samples, threads)
    names = list(rows[batch_sizes[0]])
    width = max(len(name) for name in names)
    print(f"  {'':{width}}" + "".join(f"{f'batch {b}':>22}" for b in batch_sizes))
    for name in names:
        statuses = {rows[b][name]["status"] for b in batch_sizes}
        if len(statuses) == 1 and statuses != {"ok"}:  # a system that cannot run this model says why once
            print(f"  {name:{width}}  {statuses.pop()}")
        else:
            print(f"  {name:{width}}" + "".join(_cell(rows[b][name]) for b in batch_sizes))
    return rows


def _cell(row):
    if row["status"] != "ok":
        return f"  {row['status']}"
    micros = row["median_us"]
    time_text = f"{micros:.1f} µs" if micros < 1e3 else f"{micros / 1e3:.2f} ms"
    return f"{time_text:>13} {row['speedup_vs_numpy']:6.2f}× "
