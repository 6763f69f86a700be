"""Sequential.fit of the Keras example (Fashion-MNIST, 784-128-64-10, Adam, batch 32, 2 epochs) with
the epoch as one engine call against batch by batch (a do-nothing batch callback keeps the per-step
loop), alternating in one process; prints the per-round ratios.

    python bench/keras_fit_epoch_call.py [threads]
"""
import statistics
import sys
import time

import numpy as np

import fusedense as fd
from fusedense.threads import threads_limited



def build():
    model = fd.Sequential([fd.Input(shape=(784,)), fd.layers.Dense(128, activation="relu"),
                           fd.layers.Dense(64, activation="relu"), fd.layers.Dense(10, activation="softmax")], seed=0)
    model.compile(optimizer=fd.optimizers.Adam(learning_rate=1e-3), loss=fd.losses.SparseCategoricalCrossentropy(),
                  metrics=["accuracy"])
    return model


def main(threads, rounds=5):
    (x, y), _ = fd.datasets.load_fashion_mnist()
    x = (x.reshape(len(x), -1) / 255.0).astype(np.float32)
    batch_hook = fd.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: None)
    ratios = []
    with threads_limited(threads):
        for _ in range(rounds):
            seconds = {}
            for name, callbacks in (("epoch call", []), ("per step", [batch_hook])):
                model = build()
                start = time.perf_counter()
                model.fit(x, y, epochs=2, batch_size=32, validation_split=0.2, verbose=0, callbacks=callbacks)
                seconds[name] = time.perf_counter() - start
            ratios.append(seconds["per step"] / seconds["epoch call"])
            print({k: round(v, 3) for k, v in seconds.items()}, f"per step / epoch call {ratios[-1]:.3f}", flush=True)
    print(f"median per step / epoch call: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
