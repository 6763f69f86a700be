"""Text classification on sparse hashed n-grams: fusedense against fastText and scikit-learn.

Fortunes language ID (the Debian fortunes-* packages, fusedense.datasets.load_fortunes), word
1–2-grams and character 2–4-grams hashed into 2^20 buckets, averaged (fastText's bag). Each
system trains in a process of its own (its peak memory is its own), the systems alternate
over rounds, and the table shows the median per system:

- ``fusedense``: fd.TextClassifier (n_features → dim → classes; its defaults: lazy Adagrad,
  lr 0.5 with linear decay, batch 1024)
- ``fd-mlp``: fd.MLPClassifier((dim,), activation="identity", solver="adam") on the same CSR
- ``sklearn``: sklearn.neural_network.MLPClassifier, same arguments, same CSR (on the first
  ``--sklearn-rows`` rows only: it updates the whole 2^20 × dim table every step)
- ``fasttext``: fasttext.train_supervised with dim, epoch, wordNgrams=2, minn=2, maxn=4,
  bucket=2^20 and the thread count (its own tokenizer: character n-grams inside words), when
  ``import fasttext`` works (``pip install fasttext-numpy2-wheel``); lr 1.0, the best of
  0.1 / 0.5 / 1.0 on this task (0.68 / 0.988 / 0.989 accuracy)

Throughput is training examples per second (rows × epochs / fit time; fusedense's fit time
excludes featurising, fastText's includes reading its input file, which is its featuriser), of
wall time and of the process's CPU time (on a shared machine the wall time also counts waiting
for a core).

    nice python bench/bench_text.py --rounds 3 --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

SYSTEMS = ("fusedense", "fd-mlp", "sklearn", "fasttext")


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu_seconds():
    """This process's CPU time (all its threads): on a loaded machine the wall time also counts
    the time the process waited for a core."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def prepare(args, directory):
    """Featurises once: data.npz (CSR arrays, labels) and the fastText files."""
    import fusedense as fd
    from fusedense import datasets

    texts, labels, languages = datasets.load_fortunes(max_per_language=args.per_language, seed=0)
    texts = [" ".join(t.split()) for t in texts]  # one line each (fastText reads lines)
    cut = int(len(texts) * 0.8)
    clf = fd.TextClassifier(dim=args.dim)
    start = time.perf_counter()
    X = clf.transform(texts)
    featurize = time.perf_counter() - start
    np.savez(os.path.join(directory, "data.npz"), indptr=X.indptr, indices=X.indices, data=X.data,
             shape=np.array(X.shape), labels=labels, cut=cut)
    for name, part in (("train", slice(0, cut)), ("test", slice(cut, None))):
        with open(os.path.join(directory, f"{name}.txt"), "w") as f:
            for text, label in zip(texts[part], labels[part]):
                f.write(f"__label__{label} {text.lower()}\n")
    return {"n_train": cut, "n_test": len(texts) - cut, "languages": languages, "nnz_per_row": X.nnz / X.shape[0],
            "featurize_s": featurize}


def run_system(args, directory):
    """One system's fit in this process; prints a JSON line."""
    import fusedense as fd
    from fusedense.sparse import CSR

    fd.set_num_threads(args.threads)
    data = np.load(os.path.join(directory, "data.npz"))
    X = CSR(data["indptr"], data["indices"], data["data"], tuple(data["shape"]))
    y, cut = data["labels"], int(data["cut"])
    X_train, X_test, y_train, y_test = X[:cut], X[cut:], y[:cut], y[cut:]
    before = _rss_bytes()
    result = {"system": args.system}
    if args.system == "fusedense":
        clf = fd.TextClassifier(dim=args.dim, epochs=args.epochs, learning_rate=args.lr)
        start, cpu = time.perf_counter(), _cpu_seconds()
        clf.fit_transformed(X_train, y_train)
        result["fit_s"], result["fit_cpu_s"] = time.perf_counter() - start, _cpu_seconds() - cpu
        result["rows"] = cut
        result["accuracy"] = float((clf.network_.predict(X_test).argmax(1) == y_test).mean())
        net = clf.network_
        result["model_bytes"] = int(net.params.nbytes + net.opt_state.nbytes)
    elif args.system in ("fd-mlp", "sklearn"):
        rows = cut if args.system == "fd-mlp" else min(cut, args.sklearn_rows)
        Xs = X_train[:rows].to_scipy()
        if args.system == "sklearn":
            from sklearn.neural_network import MLPClassifier
        else:
            MLPClassifier = fd.MLPClassifier
        clf = MLPClassifier((args.dim,), activation="identity", solver="adam", batch_size=16, alpha=0.0,
                            max_iter=args.epochs if args.system == "fd-mlp" else 1, random_state=0,
                            learning_rate_init=0.003, tol=0, n_iter_no_change=10**9)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start, cpu = time.perf_counter(), _cpu_seconds()
            clf.fit(Xs, y_train[:rows])
            result["fit_s"], result["fit_cpu_s"] = time.perf_counter() - start, _cpu_seconds() - cpu
        result["rows"] = rows
        result["epochs"] = clf.n_iter_
        result["accuracy"] = float((clf.predict(X_test.to_scipy()) == y_test).mean())
    else:
        import fasttext

        start, cpu = time.perf_counter(), _cpu_seconds()
        model = fasttext.train_supervised(os.path.join(directory, "train.txt"), dim=args.dim, epoch=args.epochs,
                                          lr=args.fasttext_lr, wordNgrams=2, minn=2, maxn=4, bucket=2**20,
                                          thread=args.threads, verbose=0, loss="softmax")
        result["fit_s"], result["fit_cpu_s"] = time.perf_counter() - start, _cpu_seconds() - cpu
        result["rows"] = cut
        with open(os.path.join(directory, "test.txt")) as f:
            lines = [line.rstrip("\n").split(" ", 1) for line in f]
        predicted = model.predict([text for _, text in lines])[0]
        result["accuracy"] = float(np.mean([p[0] == label for p, (label, _) in zip(predicted, lines)]))
    epochs = result.get("epochs", args.epochs)
    result["examples_per_s"] = result["rows"] * epochs / result["fit_s"]
    result["examples_per_cpu_s"] = result["rows"] * epochs / result["fit_cpu_s"]
    result["peak_extra_bytes"] = _peak_bytes() - before
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-language", type=int, default=3000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.5, help="fd.TextClassifier's learning rate (Adagrad)")
    parser.add_argument("--fasttext-lr", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sklearn-rows", type=int, default=500)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--system", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.system:
        return run_system(args, args.dir)
    with tempfile.TemporaryDirectory() as directory:
        info = prepare(args, directory)
        print(f"# fortunes: {info['n_train']} train / {info['n_test']} test texts, {len(info['languages'])} languages, "
              f"{info['nnz_per_row']:.0f} non-zeros per row, featurised in {info['featurize_s']:.1f} s; "
              f"dim {args.dim}, {args.epochs} epochs, {args.threads} thread(s)", flush=True)
        results = {}
        for _ in range(args.rounds):
            for system in args.systems.split(","):
                command = [sys.executable, __file__, "--system", system, "--dir", directory] + [
                    f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                    if k not in ("system", "dir", "systems", "rounds") and v is not None]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode:
                    print(f"# {system}: failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
                    continue
                row = json.loads(done.stdout.strip().splitlines()[-1])
                results.setdefault(system, []).append(row)
                print(json.dumps(row), flush=True)
        print(f"\n| system | examples/s | examples/CPU-s | accuracy | fit s | peak extra MB |\n|---|---|---|---|---|---|")
        for system, rows in results.items():
            med = {k: statistics.median(r[k] for r in rows) for k in ("examples_per_s", "examples_per_cpu_s", "accuracy",
                                                                         "fit_s", "peak_extra_bytes")}
            print(f"| {system} | {med['examples_per_s']:,.0f} | {med['examples_per_cpu_s']:,.0f} | {med['accuracy']:.4f} | "
                  f"{med['fit_s']:.2f} | {med['peak_extra_bytes'] / 2**20:,.0f} |")
        fd_rows = results.get("fusedense", [])
        if fd_rows:
            print(f"\nfusedense model params + optimizer state: {fd_rows[0]['model_bytes'] / 2**20:,.0f} MB")


if __name__ == "__main__":
    main()
