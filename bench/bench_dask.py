"""fusedense.dask against local fusedense on this machine: predict rows/s on 10^6 × 784 float32
rows (a 784-128-64-10 MLP) with 1 and 2 worker processes of 1 thread against local predict on 1
and 2 threads, and the data-parallel epoch against the local epoch.

    python bench/bench_dask.py [--rows 1000000] [--repeats 3] [--skip-epoch] [--dask-defaults]

Runs are alternated in one process (the machine is shared and noisy) and the best of
``--repeats`` is reported. A worker builds its input block once and reuses it for every block of
the prediction, so the numbers are of predict (forward, scheduling, results sent back), not of
making data; the local runs read one block of the same size as many times.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

BLOCK = 50_000
SIZES = [784, 128, 64, 10]
def _make_block(rows=BLOCK):
    return np.random.default_rng(rows).random((rows, SIZES[0]), dtype=np.float32)


def _input_block(index, rows=BLOCK):
    """The worker's one input block, made on first use and kept on the Worker object: this
    function reaches the worker pickled by value, so a module-level cache would travel with every
    task (and one filled by the local runs would carry their block along)."""
    from distributed import get_worker
    cache = get_worker().__dict__.setdefault("bench_blocks", {})
    if rows not in cache:
        cache[rows] = _make_block(rows)
    return cache[rows]


def _network(dtype=np.float32):
    import fusedense as fd
    return fd.MLP(SIZES, ["relu", "relu", "softmax"], dtype=dtype, random_state=0, backend="cython")


def _best(fn, repeats):
    return min(_timed(fn) for _ in range(repeats))


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def predict_table(clients, rows, repeats):
    import dask.array as da
    import fusedense.dask as fdd
    from distributed import wait
    from fusedense.threads import threads_limited

    net = _network()
    n_blocks = rows // BLOCK
    local_block = _make_block()

    def local(threads):
        def run():
            with threads_limited(threads):
                for _ in range(n_blocks):
                    net.predict(local_block)
        return run

    def on_cluster(client, threads, gather=True):
        """The outputs gathered into this process as one array, or (gather=False) kept on the
        workers, as a job that writes its results from there would."""
        X = da.map_blocks(_input_block, da.arange(n_blocks, chunks=1), dtype=np.float32,
                          chunks=((BLOCK,) * n_blocks, (SIZES[0],)), new_axis=1, meta=np.empty((0, 0), np.float32))
        if gather:
            return lambda: client.compute(fdd.predict(net, X, client=client, threads=threads)).result()
        return lambda: wait(client.persist(fdd.predict(net, X, client=client, threads=threads)))

    runs = {"local, 1 thread": local(1), "local, 2 threads": local(2)}
    for name, (client, threads) in clients.items():
        runs[name] = on_cluster(client, threads)
    two_workers = next(name for name in clients if name.startswith("2 workers"))
    runs[two_workers + ", outputs kept on the workers"] = on_cluster(*clients[two_workers], gather=False)
    for run in runs.values():  # warm-up: workers import fusedense and make their block
        run()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(_timed(run))
    print(f"\npredict, {rows:,} × {SIZES[0]} float32, {'-'.join(map(str, SIZES))} MLP (best of {repeats})")
    print("| run | seconds | rows/s |\n|---|---:|---:|")
    for name, ts in times.items():
        print(f"| {name} | {min(ts):.2f} | {rows / min(ts):,.0f} |")
    two, one, local = (min(times[k]) for k in ("2 workers × 1 thread, 1 fusedense thread each",
                                                 "1 worker × 1 thread, 1 fusedense thread", "local, 2 threads"))
    print(f"2 workers / 1 worker: {one / two:.2f}x; 2 workers / local on 2 threads: {local / two:.2f}x")
    return {name: rows / min(ts) for name, ts in times.items()}


def epoch_table(client, repeats, rows=24_000, batch_sizes=(256, 2048, 24_000)):
    import dask.array as da
    import fusedense as fd
    import fusedense.dask as fdd
    from fusedense.threads import threads_limited

    rng = np.random.default_rng(0)
    x = rng.random((rows, SIZES[0]), dtype=np.float32)
    y = rng.integers(0, SIZES[-1], rows)
    X = client.persist(da.from_array(x, chunks=(rows // 6, SIZES[0])))
    Y = client.persist(da.from_array(y, chunks=rows // 6))
    loss = "sparse_categorical_crossentropy"
    print(f"\nepoch of {rows:,} × {SIZES[0]} float32 rows, Adam (best of {repeats})")
    print("| batch | steps | local, 2 threads (s) | data-parallel, 2 workers × 1 thread (s) | ms per step, local / data-parallel |")
    print("|---:|---:|---:|---:|---:|")
    for batch in batch_sizes:
        local_net, dp_net = _network(), _network()
        inputs = local_net.as_inputs(x)
        targets = local_net.as_targets(y, rows, fd.losses.get_loss(loss, local_net.output_activation))
        loss_id = fd.losses.get_loss(loss, local_net.output_activation).id

        def local():
            with threads_limited(2):
                local_net.train_epoch(inputs, targets, loss_id, batch)

        def parallel():
            fdd.fit_data_parallel(dp_net, X, Y, epochs=1, batch_size=batch, loss=loss, shuffle=False, client=client)

        t_local, t_dp = [], []
        for _ in range(repeats):
            t_local.append(_timed(local))
            t_dp.append(_timed(parallel))
        steps = -(-rows // batch)
        print(f"| {batch} | {steps} | {min(t_local):.2f} | {min(t_dp):.2f} | "
              f"{1e3 * min(t_local) / steps:.1f} / {1e3 * min(t_dp) / steps:.1f} |")


def main():
    import dask
    import fusedense.dask as fdd
    from distributed import Client, LocalCluster

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-epoch", action="store_true")
    parser.add_argument("--dask-defaults", action="store_true",
                        help="start the clusters with Dask's default settings, not fusedense.dask.COMPUTE_CONFIG")
    args = parser.parse_args()
    with dask.config.set({} if args.dask_defaults else fdd.COMPUTE_CONFIG):
        one = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0")
        two = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    with Client(one) as c1, Client(two) as c2:
        clients = {"1 worker × 1 thread, 1 fusedense thread": (c1, 1),
                   "1 worker × 1 thread, 2 fusedense threads": (c1, 2),
                   "2 workers × 1 thread, 1 fusedense thread each": (c2, None)}
        predict_table(clients, args.rows, args.repeats)
        if not args.skip_epoch:
            epoch_table(c2, args.repeats)
    one.close()
    two.close()


if __name__ == "__main__":
    main()
