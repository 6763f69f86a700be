"""The character language model (``fusedense lm``): training throughput and generation speed of
fusedense vs a straightforward NumPy implementation vs PyTorch eager, same model, same batch.

    python bench/bench_lm.py [--batch 64] [--threads 1] [--seconds 20] [--activation relu]   # alternating blocks
    python -m pytest bench/bench_lm.py --benchmark-group-by=group        # pytest-benchmark groups

Model: Embedding(27, 10) of 3 characters → Dense(200, tanh) → Dense(27) logits, softmax
cross-entropy, Adam. Every side starts from the same weights and is checked against fusedense
(the same losses over a few steps; the same outputs; the same sampled sequences) before it is
timed. fusedense trains and generates with one backend call (``EmbeddingMLP.fused_step``,
``EmbeddingMLP.generate``: the whole sampling loop compiled); the NumPy and PyTorch sides sample
with the NumPy loop ``reference.generate_with`` around their own forward, from the same
pre-drawn uniforms, so the sequences must agree token for token.
"""
import argparse
import os
import sys

import numpy as np
import pytest

import fusedense as fd
from fusedense import reference
from fusedense.benchmarking import timing
from fusedense.benchmarking.numpy_user import Adam, softmax_cross_entropy
from fusedense.embedding import EmbeddingMLP

VOCAB, DIM, CONTEXT, HIDDEN, LR = 27, 10, 3, 200, 1e-3
#: hidden activation → (NumPy forward, its derivative from the output); main() may switch to relu
NUMPY_ACTIVATIONS = {"tanh": (np.tanh, lambda h: 1 - h * h), "relu": (lambda z: np.maximum(z, 0), lambda h: h > 0)}
ACTIVATION = "tanh"
N_EXAMPLES = 8192  # a fixed slice of the names (random tokens if gender-guesser is missing)
MAX_LEN = 20


def examples():
    try:
        data = fd.datasets.load_names_lm(context=CONTEXT, seed=0)
        return data.x_train[:N_EXAMPLES].copy(), data.y_train[:N_EXAMPLES].copy()
    except fd.datasets.DatasetNotFoundError:
        rng = np.random.default_rng(0)
        x = rng.integers(0, VOCAB, (N_EXAMPLES, CONTEXT))
        return x, x.sum(axis=1) % VOCAB


def new_net(backend=None):
    return EmbeddingMLP(VOCAB, DIM, CONTEXT, [HIDDEN, VOCAB], ACTIVATION, random_state=0, backend=backend)


# --- the NumPy implementation a user would write ---------------------------------------------


class NumpyLM:
    def __init__(self, net):
        E = net.embeddings.copy()
        (W1, b1), (W2, b2) = [(W.copy(), b.copy()) for W, b in net.weights]
        self.arrays = [E, W1, b1, W2, b2]
        self.act, self.act_grad = NUMPY_ACTIVATIONS[ACTIVATION]
        self.adam = Adam(self.arrays, lr=LR, eps=1e-7)

    def forward(self, tokens):
        E, W1, b1, W2, b2 = self.arrays
        h = self.act(E[tokens].reshape(len(tokens), -1) @ W1 + b1)
        return h @ W2 + b2

    def step(self, tokens, labels):
        E, W1, b1, W2, b2 = self.arrays
        x = E[tokens].reshape(len(tokens), -1)
        h = self.act(x @ W1 + b1)
        loss, dlogits = softmax_cross_entropy(h @ W2 + b2, labels)
        dh = (dlogits @ W2.T) * self.act_grad(h)
        dE = np.zeros_like(E)
        np.add.at(dE, tokens.ravel(), (dh @ W1.T).reshape(-1, E.shape[1]))
        self.adam.step(self.arrays, [dE, x.T @ dh, dh.sum(axis=0), h.T @ dlogits, dlogits.sum(axis=0)])
        return loss


# --- PyTorch eager ------------------------------------------------------------------------------


class TorchLM:
    def __init__(self, net):
        import torch
        self.torch = torch
        nn = torch.nn
        self.model = nn.Sequential(nn.Embedding(VOCAB, DIM), nn.Flatten(), nn.Linear(CONTEXT * DIM, HIDDEN),
                                   {"tanh": nn.Tanh, "relu": nn.ReLU}[ACTIVATION](), nn.Linear(HIDDEN, VOCAB))
        (W1, b1), (W2, b2) = net.weights
        with torch.no_grad():
            self.model[0].weight.copy_(torch.from_numpy(net.embeddings))
            self.model[2].weight.copy_(torch.from_numpy(W1.T.copy()))
            self.model[2].bias.copy_(torch.from_numpy(b1))
            self.model[4].weight.copy_(torch.from_numpy(W2.T.copy()))
            self.model[4].bias.copy_(torch.from_numpy(b2))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR, eps=1e-7)

    def step(self, tokens, labels):
        loss = self.torch.nn.functional.cross_entropy(self.model(tokens), labels)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()

    def forward(self, tokens):
        with self.torch.no_grad():
            return self.model(self.torch.from_numpy(tokens)).numpy()


def have_torch():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


# --- the sides ------------------------------------------------------------------------------------


def training_sides(batch):
    """name → run(): one training step on the next batch (cycling over the examples)."""
    x, y = examples()
    n_batches = len(y) // batch
    batches = [(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]) for i in range(n_batches)]
    sides = {}

    def cycling(step, data):
        state = {"i": 0}

        def run():
            xb, yb = data[state["i"] % len(data)]
            state["i"] += 1
            return step(xb, yb)
        return run

    for backend in fd.backends():
        net = new_net(backend)
        net.set_optimizer(fd.optimizers.Adam(learning_rate=LR))
        sides[f"fusedense-{backend}"] = cycling(lambda xb, yb, net=net: net.fused_step(xb, yb, 0), batches)
    sides["numpy"] = cycling(NumpyLM(new_net("numpy")).step, batches)
    if have_torch():
        import torch
        sides["torch"] = cycling(TorchLM(new_net("numpy")).step,
                                 [(torch.from_numpy(xb), torch.from_numpy(yb)) for xb, yb in batches])
    return sides


def check_training(sides, steps=5):
    """Every side gives the same losses as the numpy reference backend on its first steps."""
    losses = {name: [float(run()) for _ in range(steps)] for name, run in sides.items()}
    expected = losses["fusedense-numpy"]
    for name, values in losses.items():
        np.testing.assert_allclose(values, expected, rtol=2e-4, err_msg=name)


def forward_sides(batch):
    """name → next_scores(tokens): the logits of one forward pass."""
    sides = {}
    for backend in fd.backends():
        net = new_net(backend)
        out = np.empty((batch, VOCAB), net.dtype)

        def next_scores(tokens, net=net, out=out):
            view = out[:len(tokens)]
            net.forward(tokens, view)
            return view
        sides[f"fusedense-{backend}"] = next_scores
    sides["numpy"] = NumpyLM(new_net("numpy")).forward
    if have_torch():
        sides["torch"] = TorchLM(new_net("numpy")).forward
    return sides


def check_forward(sides, tokens):
    """Every side gives the numpy reference backend's logits for ``tokens``."""
    expected = sides["fusedense-numpy"](tokens).copy()
    for name, next_scores in sides.items():
        np.testing.assert_allclose(next_scores(tokens), expected, rtol=1e-4, atol=1e-5, err_msg=name)


def generation_runs(batch, seed=3):
    """name → run() generating ``batch`` sequences (a list of token arrays), and the tokens one
    run emits (the end token counts). fusedense: ``generate``; NumPy and PyTorch: their forward
    inside the NumPy sampling loop, with the uniforms fusedense draws from the same seed."""
    runs = {}
    for backend in fd.backends():
        runs[f"fusedense-{backend}"] = lambda net=new_net(backend): net.generate(batch, MAX_LEN, 1.0, seed)
    forwards = {"numpy": NumpyLM(new_net("numpy")).forward}
    if have_torch():
        forwards["torch"] = TorchLM(new_net("numpy")).forward
    for name, forward in forwards.items():
        def run(forward=forward):
            uniforms = np.random.default_rng(seed).random((batch, MAX_LEN))
            tokens, lengths = reference.generate_with(forward, CONTEXT, uniforms, 1.0, 0)
            return [tokens[i, :lengths[i]] for i in range(batch)]
        runs[name] = run
    return runs


def check_generation(runs):
    """Every side samples the same sequences as the numpy reference backend; returns the tokens
    a run emits (the end token counts)."""
    expected = runs["fusedense-numpy"]()
    for name, run in runs.items():
        for a, b in zip(run(), expected):
            np.testing.assert_array_equal(a, b, err_msg=name)
    return sum(min(len(s) + 1, MAX_LEN) for s in expected)


# --- the alternating-block table ------------------------------------------------------------------


def _measure(runs, seconds):
    method = timing.Method(block_seconds=0.05, samples=15, cell_seconds=seconds, peak_n=0)
    reps, samples = timing.plan(runs, method)
    return timing.interleaved(runs, reps, samples)


def _ratios(times, ours, others):
    return {other: float(np.median(np.asarray(times[other]) / np.asarray(times[ours]))) for other in others}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="training batch (default 64)")
    parser.add_argument("--gen-batch", type=int, default=256, help="parallel sequences (default 256)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20.0, help="time budget per table row")
    parser.add_argument("--activation", choices=sorted(NUMPY_ACTIVATIONS), default="tanh", help="hidden activation")
    args = parser.parse_args(argv)
    global ACTIVATION
    ACTIVATION = args.activation
    print(f"load average before: {os.getloadavg()}; threads {args.threads}; backends {fd.backends()}; "
          f"hidden {ACTIVATION}, batch {args.batch}")
    with timing.every_pool_on(args.threads):
        rows = []
        sides = training_sides(args.batch)
        check_training(training_sides(args.batch))
        times = _measure(sides, args.seconds)
        rows.append((f"train step, batch {args.batch} (chars/s)", times, lambda t: args.batch / t))
        for batch, label in ((1, "generate, batch 1 (µs/token)"), (args.gen_batch, f"generate, batch {args.gen_batch} (tokens/s)")):
            runs = generation_runs(batch)
            tokens = check_generation(runs)
            times = _measure(runs, args.seconds)
            per_token = {name: [t / tokens for t in ts] for name, ts in times.items()}
            rows.append((label, per_token, (lambda t: t * 1e6) if batch == 1 else (lambda t: 1 / t)))
        for batch in (1, args.gen_batch):
            fsides, tokens = forward_sides(batch), examples()[0][:batch]
            check_forward(fsides, tokens)
            times = _measure({name: (lambda f=f: f(tokens)) for name, f in fsides.items()}, args.seconds)
            rows.append((f"forward only, batch {batch} (µs)", times, lambda t: t * 1e6))
    print(f"load average after: {os.getloadavg()}")
    for label, times, unit in rows:
        print(f"\n{label}")
        for name, ts in times.items():
            print(f"  {name:24s} {unit(np.median(ts)):>12,.1f}")
        for ours in [n for n in times if n.startswith("fusedense")]:
            ratios = _ratios(times, ours, [n for n in times if not n.startswith("fusedense")])
            print(f"  {ours} speed-up (median of per-round ratios): "
                  + ", ".join(f"{r:.2f}× vs {other}" for other, r in ratios.items()))


# --- pytest-benchmark -------------------------------------------------------------------------------

SIDES = [f"fusedense-{b}" for b in fd.backends()] + ["numpy"] + (["torch"] if have_torch() else [])


# Each fixture builds every side once per module and checks the instances it hands out; each
# test then times its own side, on one thread as in main() (timing.every_pool_on).

@pytest.fixture(scope="module", autouse=True)
def _every_side_on_one_thread():
    with timing.every_pool_on(1):
        yield


@pytest.fixture(scope="module")
def checked_training_sides():
    sides = training_sides(64)
    check_training(sides)
    return sides


@pytest.fixture(scope="module", params=[1, 256], ids=lambda batch: f"batch{batch}")
def checked_generation_runs(request):
    runs = generation_runs(request.param)
    check_generation(runs)
    return request.param, runs


@pytest.fixture(scope="module", params=[1, 256], ids=lambda batch: f"batch{batch}")
def checked_forward_sides(request):
    sides, tokens = forward_sides(request.param), examples()[0][:request.param]
    check_forward(sides, tokens)
    return sides, tokens


@pytest.mark.parametrize("side", SIDES)
def test_train_step_batch64(benchmark, side, checked_training_sides):
    benchmark.group = "lm-train-batch64"
    benchmark(checked_training_sides[side])


@pytest.mark.parametrize("side", SIDES)
def test_generate(benchmark, side, checked_generation_runs):
    batch, runs = checked_generation_runs
    benchmark.group = f"lm-generate-batch{batch}"
    benchmark(runs[side])


@pytest.mark.parametrize("side", SIDES)
def test_forward(benchmark, side, checked_forward_sides):
    sides, tokens = checked_forward_sides
    benchmark.group = f"lm-forward-batch{len(tokens)}"
    benchmark(lambda: sides[side](tokens))


if __name__ == "__main__":
    sys.exit(main())
