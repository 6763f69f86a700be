"""Command line: ``fusedense demo``."""
import argparse
import sys


def demo(args):
    import time

    import numpy as np

    import fusedense as fd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 784)).astype(np.float32)
    W = (rng.normal(size=(784, 128)) / 28).astype(np.float32)
    b = np.zeros(128, np.float32)
    print(f"fusedense {fd.__version__}; backends: {', '.join(fd.backends())}")
    for backend in fd.backends():
        y = fd.dense(x, W, b, activation="relu", backend=backend)
        start = time.perf_counter()
        for _ in range(100):
            fd.dense(x, W, b, activation="relu", backend=backend, out=y)
        print(f"  dense 32x784 -> 128 relu on {backend:6s}: {(time.perf_counter() - start) * 1e4:8.1f} µs/call")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fusedense", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the demo").set_defaults(run=demo)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    sys.exit(main())
