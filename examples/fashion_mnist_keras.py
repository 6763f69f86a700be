"""The seed example in Keras style on Fashion-MNIST, trained by fusedense and by real Keras 3 (JAX
backend) alternately in one process, one thread each; then a Keras-trained model loaded by fusedense.

    python examples/fashion_mnist_keras.py --rounds 3 --epochs 5 [--all-cores]

With ``--all-cores`` every fit runs alone in a fresh process, the two alternating over rounds: on a
few cores the thread pool one system leaves spinning would take a core from the other.

The model code is written once (``script(keras, ...)``) and run with ``keras`` = the real Keras or
``import fusedense as keras``: the Keras-style example runs with only the import changed. Needs
keras, jax and h5py (``pip install keras jax h5py``) and the Debian package dataset-fashion-mnist.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

import fusedense  # noqa: E402
from fusedense.benchmarking.systems import _start_jax_on_one_cpu  # noqa: E402
from fusedense.threads import threads_limited  # noqa: E402


def script(keras, x_train, y_train, x_test, y_test, epochs, seed):
    """The seed example (README), Keras style; returns (fit seconds, epochs run, test accuracy, model)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input(shape=(784,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=epochs, batch_size=32, validation_split=0.2, verbose=0,
                        callbacks=[keras.callbacks.EarlyStopping(patience=2, restore_best_weights=True)])
    seconds = time.perf_counter() - start
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    return seconds, len(history.epoch), accuracy, model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--all-cores", action="store_true",
                        help="every core for both instead of one thread each (each fit in its own process)")
    parser.add_argument("--only", choices=("fusedense", "keras"), help=argparse.SUPPRESS)  # one fit, a JSON line
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.all_cores and args.only is None:
        return _alternate_processes(args)
    if not args.all_cores:
        # XLA's thread flags alone no longer cap its pool (docs/performance-notes.md): JAX also starts on one CPU
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()
        _start_jax_on_one_cpu()
    import keras

    (x_train, y_train), (x_test, y_test) = fusedense.datasets.load_fashion_mnist()
    x_train = (x_train.reshape(len(x_train), -1) / 255.0).astype(np.float32)
    x_test = (x_test.reshape(len(x_test), -1) / 255.0).astype(np.float32)
    threads = os.cpu_count() if args.all_cores else 1
    if args.only is not None:
        with threads_limited(threads):
            module = fusedense if args.only == "fusedense" else keras
            seconds, epochs, accuracy, _ = script(module, x_train, y_train, x_test, y_test, args.epochs, args.seed)
        print(json.dumps({"seconds": seconds, "epochs": epochs, "accuracy": float(accuracy)}))
        return
    print(f"fusedense {fusedense.__version__} (backend {fusedense.get_backend()}), keras {keras.__version__} "
          f"(backend {keras.backend.backend()}), {threads} thread(s) each, {args.epochs} epochs max, Fashion-MNIST")
    results = {"fusedense": [], "keras": []}
    with threads_limited(threads):
        for round_ in range(args.rounds):
            for name, module in (("fusedense", fusedense), ("keras", keras)):
                seconds, epochs, accuracy, model = script(module, x_train, y_train, x_test, y_test, args.epochs, round_)
                results[name].append((seconds / epochs, seconds, accuracy))
                print(f"round {round_ + 1} {name:9}: fit {seconds:6.2f} s for {epochs} epochs "
                      f"({seconds / epochs:.2f} s/epoch), test accuracy {accuracy:.4f}", flush=True)
            ratio = results["keras"][-1][0] / results["fusedense"][-1][0]
            print(f"round {round_ + 1}: Keras/fusedense time per epoch {ratio:.2f}x")
    per_epoch = {k: statistics.median(r[0] for r in v) for k, v in results.items()}
    accuracy = {k: statistics.median(r[2] for r in v) for k, v in results.items()}
    print(f"median time per epoch: fusedense {per_epoch['fusedense']:.2f} s, keras {per_epoch['keras']:.2f} s "
          f"({per_epoch['keras'] / per_epoch['fusedense']:.2f}x); median test accuracy fusedense "
          f"{accuracy['fusedense']:.4f}, keras {accuracy['keras']:.4f}")

    # A Keras-trained model (the last round's) loaded by fusedense from its .keras file
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        loaded = fusedense.load_keras(path)
        diff = np.abs(loaded.predict(x_test) - model.predict(x_test, verbose=0)).max()
        ours, theirs = loaded.evaluate(x_test, y_test, verbose=0), model.evaluate(x_test, y_test, verbose=0)
        print(f"Keras-trained model loaded by fusedense: max |prediction difference| {diff:.2e}; evaluate "
              f"fusedense {ours} / keras {theirs}")


def _alternate_processes(args):
    """--all-cores: each fit alone in a fresh process, fusedense and Keras alternating."""
    per_epoch = {"fusedense": [], "keras": []}
    for round_ in range(args.rounds):
        order = ("fusedense", "keras") if round_ % 2 == 0 else ("keras", "fusedense")
        for name in order:
            done = subprocess.run([sys.executable, __file__, "--all-cores", "--only", name, "--seed", str(round_),
                                   "--epochs", str(args.epochs)], capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            per_epoch[name].append(result["seconds"] / result["epochs"])
            print(f"round {round_ + 1} {name:9}: fit {result['seconds']:6.2f} s for {result['epochs']} epochs "
                  f"({per_epoch[name][-1]:.2f} s/epoch), test accuracy {result['accuracy']:.4f}", flush=True)
        print(f"round {round_ + 1}: Keras/fusedense time per epoch {per_epoch['keras'][-1] / per_epoch['fusedense'][-1]:.2f}x")
    ratios = [k / f for k, f in zip(per_epoch["keras"], per_epoch["fusedense"])]
    print(f"all cores, each fit in its own process: median Keras/fusedense time per epoch {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
