"""``fusedense lm``: a character-level MLP language model of first names (Bengio et al. 2003).

    fusedense lm                                   # context 3, embedding 32, hidden 500 tanh, AdamW, 20 epochs
    fusedense lm --embedding 96 --embedding-std 1  # the best context-3 model measured, 2.6× the compute
    fusedense lm --context 8 --embedding-std 1 --hidden 300 300 --weight-decay 0.05 --epochs 15  # best at context 8
    fusedense lm --context 5 --samples 20 --temperature 0.7

Trains ``Embedding → Flatten → Dense(hidden, tanh) … → Dense(27)`` on ``fd.datasets.load_names_lm``
(names split by name into train / validation / test), prints the losses in nats per character
(every letter and the end of the name count), the test perplexity and the training speed,
then samples names.
"""
from __future__ import annotations

import argparse
import math
import time
from contextlib import nullcontext

import numpy as np

from .callbacks import Callback, EarlyStopping
from .threads import threads_limited

HELP = "train a character-level MLP language model on first names and sample new ones"


def add_arguments(parser):
    parser.add_argument("--context", type=int, default=3, help="characters of context (default 3)")
    parser.add_argument("--embedding", type=int, default=32, help="embedding width per character (default 32)")
    parser.add_argument("--embedding-std", type=float, default=3.0,
                        help="standard deviation of the initial embeddings, drawn from N(0, std²) (default 3)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[500],
                        help="hidden layer widths (default 500; e.g. --hidden 300 300 for two layers)")
    parser.add_argument("--activation", default="tanh", help="hidden activation (default tanh)")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--lr", type=float, default=None, help="initial learning rate (adam 1e-3, sgd 0.1)")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help="weight decay on every parameter, embeddings and biases included: decoupled "
                             "with adam (AdamW, default 0.02), L2 with sgd (default 0)")
    parser.add_argument("--min-lr", type=float, default=None,
                        help="learning rate of the last epoch: cosine decay from --lr (default --lr/100)")
    parser.add_argument("--epochs", type=int, default=20, help="passes over the training names (default 20)")
    parser.add_argument("--batch-size", type=int, default=64, help="default 64")
    parser.add_argument("--patience", type=int, default=None,
                        help="stop once the validation loss has not improved for this many epochs and "
                             "keep the best epoch's weights (default: train all epochs)")
    parser.add_argument("--seed", type=int, default=0, help="data split, initial weights, shuffling, sampling")
    parser.add_argument("--samples", type=int, default=10, help="names to sample after training")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (0 = greedy)")
    parser.add_argument("--max-len", type=int, default=20, help="longest sampled name")
    parser.add_argument("--backend", default=None, help="cython, numba or numpy (default: the fastest)")
    parser.add_argument("--threads", type=int, default=None, help="threads for kernels and BLAS")
    parser.add_argument("--save", default=None, help="write the trained model to this .npz file")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")


class CosineDecay(Callback):
    """Sets the learning rate of epoch ``e`` of ``epochs`` to
    ``final + (initial - final)·(1 + cos(π·e/(epochs-1)))/2``: ``initial`` first, ``final`` last
    (fit re-reads the hyperparameters at each epoch)."""

    def __init__(self, initial, final, epochs):
        super().__init__()
        self.initial, self.final, self.epochs = initial, final, epochs

    def learning_rate(self, epoch):
        progress = epoch / (self.epochs - 1) if self.epochs > 1 else 0.0
        return self.final + (self.initial - self.final) * (1 + math.cos(math.pi * progress)) / 2

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate = self.learning_rate(epoch)


def initial_learning_rate(args):
    return args.lr if args.lr is not None else {"adam": 1e-3, "sgd": 0.1}[args.optimizer]


def final_learning_rate(args):
    """The last epoch's rate: 1/100 of the first unless --min-lr says (1/10 ended 0.005 worse, docs/lm_sweep.md)."""
    return initial_learning_rate(args) / 100 if args.min_lr is None else args.min_lr


def weight_decay(args):
    return args.weight_decay if args.weight_decay is not None else {"adam": 0.02, "sgd": 0.0}[args.optimizer]


def build_model(args):
    import fusedense as fd

    vocab = len(fd.datasets.NAMES_LM_VOCAB)
    layers = [fd.Embedding(vocab, args.embedding, input_length=args.context), fd.Flatten()]
    layers += [fd.Dense(width, activation=args.activation) for width in args.hidden] + [fd.Dense(vocab)]
    model = fd.Sequential(layers, name="names_lm", seed=args.seed, backend=args.backend)
    lr = initial_learning_rate(args)
    decay = weight_decay(args)
    optimizer = fd.optimizers.AdamW(learning_rate=lr, weight_decay=decay) if args.optimizer == "adam" \
        else fd.optimizers.SGD(learning_rate=lr, momentum=0.9, weight_decay=decay)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")  # builds: the input length is known
    # Embeddings drawn from a normal law as in Bengio et al. and PyTorch (N(0, 1)), not Keras'
    # uniform(±0.05): with tiny embeddings the tanh layer starts in its linear range and training
    # crawls (measured, 30 epochs: validation 2.33 nats/char with ±0.05 against 2.27 with N(0, 1),
    # embedding 10, hidden 200). Widths beyond the 27 tokens add no expressiveness (E·W1 is one
    # 27-row table per position either way) yet train to better models (validation 2.2058 at width
    # 32, 2.1978 at 64, 2.1942 at 96 with std 1, hidden 500, weight decay 0.01); std 3 gets most of
    # that at width 32 for 2.6× less compute than 96 (2.1981; with weight decay 0.02 2.1966 against
    # 2.1929 at width 96 std 1; docs/lm_sweep.md).
    table = model.layers[0].embeddings
    table[...] = args.embedding_std * np.random.default_rng(args.seed).standard_normal(table.shape)
    return model


def check_args(args):
    """Exits with a message naming the first bad option; returns (initial, final) learning rate."""
    for name in ("context", "embedding", "epochs", "batch_size", "max_len", "patience", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise SystemExit(f"fusedense lm: --{name.replace('_', '-')} must be >= 1")
    lr = initial_learning_rate(args)
    min_lr = final_learning_rate(args)
    if not 0 < min_lr <= lr:
        raise SystemExit("fusedense lm: --min-lr must be in (0, --lr]")
    if not args.embedding_std > 0:
        raise SystemExit("fusedense lm: --embedding-std must be > 0")
    if weight_decay(args) < 0:
        raise SystemExit("fusedense lm: --weight-decay must be >= 0")
    return lr, min_lr


def train(args, log=print):
    """Loads the split, builds and trains the model as ``args`` say (but --threads, which ``run``
    applies around the whole command); returns ``(model, data, result)``,
    result: the per-epoch history, training seconds and the train and validation losses (nats/char;
    the test loss is left to the caller, so that nothing tuned on ``train`` ever sees it)."""
    import fusedense as fd

    lr, min_lr = check_args(args)
    data = fd.datasets.load_names_lm(context=args.context, seed=args.seed)
    model = build_model(args)
    log(f"names: {len(data.names_train)} train / {len(data.names_val)} validation / {len(data.names_test)} test "
        f"({len(data.y_train)} / {len(data.y_val)} / {len(data.y_test)} characters)")
    log(f"model: context {args.context} × embedding {args.embedding} → {' → '.join(map(str, args.hidden))} "
        f"{args.activation} → {len(data.vocab)}, {model.count_params():,} parameters, "
        f"{type(model.optimizer).__name__} lr {lr:g} → {min_lr:g} (cosine), weight decay {weight_decay(args):g}, "
        f"batch {args.batch_size}, backend {model.network.backend}")
    callbacks = [CosineDecay(lr, min_lr, args.epochs)]
    if args.patience is not None:
        callbacks.append(EarlyStopping(patience=args.patience, restore_best_weights=True, verbose=not args.quiet))
    start = time.perf_counter()
    history = model.fit(data.x_train, data.y_train, batch_size=args.batch_size, epochs=args.epochs,
                        validation_data=(data.x_val, data.y_val), callbacks=callbacks, verbose=0 if args.quiet else 1)
    seconds = time.perf_counter() - start
    losses = {part: model.evaluate(getattr(data, f"x_{part}"), getattr(data, f"y_{part}"), verbose=0)
              for part in ("train", "val")}
    return model, data, {"history": history.history, "seconds": seconds, "losses": losses}


def run(args) -> int:
    check_args(args)
    # --threads caps fusedense and NumPy's BLAS (the numpy backend's GEMMs) alike
    with nullcontext() if args.threads is None else threads_limited(args.threads):
        model, data, result = train(args)
        losses, seconds = result["losses"], result["seconds"]
        losses["test"] = model.evaluate(data.x_test, data.y_test, verbose=0)
        epochs = len(result["history"]["loss"])
        print(f"loss (nats/char): train {losses['train']:.4f}  validation {losses['val']:.4f}  "
              f"test {losses['test']:.4f}  → test perplexity {math.exp(losses['test']):.3f}")
        print(f"training: {epochs} epochs, {seconds:.1f} s, {len(data.y_train) * epochs / seconds:,.0f} chars/s "
              f"(including the per-epoch validation pass)")
        if args.samples:
            names = model.generate(args.samples, args.max_len, args.temperature, seed=args.seed)
            print(f"samples (temperature {args.temperature:g}, seed {args.seed}):")
            print("  " + ", ".join(data.decode(tokens) for tokens in names))
        if args.save:
            model.save(args.save)
            print(f"saved to {args.save}")
        return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=HELP)
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
