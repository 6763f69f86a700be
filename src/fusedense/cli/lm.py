"""``fusedense lm``: train the character-level language model of first names (:mod:`fusedense.lm`).

    fusedense lm                                   # context 3, embedding 32, hidden 500 tanh, AdamW, 20 epochs
    fusedense lm --embedding 96 --embedding-std 1  # the best context-3 model of docs/lm_sweep.md
    fusedense lm --context 8 --embedding-std 1 --hidden 300 300 --weight-decay 0.05 --epochs 15  # best at context 8
    fusedense lm --context 5 --samples 20 --temperature 0.7

Prints the losses in nats per character (every letter and the end of the name count), the test
perplexity and the training speed, then samples names.
"""
from __future__ import annotations

import dataclasses
import math
from contextlib import nullcontext

from ..lm import InvalidSetting, LMConfig, train
from ..threads import threads_limited
from .options import positive_int

HELP = "train a character-level MLP language model on first names and sample new ones"

_DEFAULT = LMConfig()


def add_arguments(parser):
    d = _DEFAULT
    parser.add_argument("--context", type=int, default=d.context, help=f"characters of context (default {d.context})")
    parser.add_argument("--embedding", type=int, default=d.embedding,
                        help=f"embedding width per character (default {d.embedding})")
    parser.add_argument("--embedding-std", type=float, default=d.embedding_std,
                        help=f"standard deviation of the initial embeddings, drawn from N(0, std²) "
                             f"(default {d.embedding_std:g})")
    parser.add_argument("--hidden", type=int, nargs="+", default=list(d.hidden),
                        help=f"hidden layer widths (default {' '.join(map(str, d.hidden))}; "
                             f"e.g. --hidden 300 300 for two layers)")
    parser.add_argument("--activation", default=d.activation, help=f"hidden activation (default {d.activation})")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default=d.optimizer)
    parser.add_argument("--lr", type=float, default=None, help="initial learning rate (adam 1e-3, sgd 0.1)")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help="weight decay on every parameter, embeddings and biases included: decoupled "
                             "with adam (AdamW, default 0.02), L2 with sgd (default 0)")
    parser.add_argument("--min-lr", type=float, default=None,
                        help="learning rate of the last epoch: cosine decay from --lr (default --lr/100)")
    parser.add_argument("--epochs", type=int, default=d.epochs,
                        help=f"passes over the training names (default {d.epochs})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    parser.add_argument("--patience", type=int, default=None,
                        help="stop once the validation loss has not improved for this many epochs and "
                             "keep the best epoch's weights (default: train all epochs)")
    parser.add_argument("--seed", type=int, default=d.seed, help="data split, initial weights, shuffling, sampling")
    parser.add_argument("--samples", type=int, default=10, help="names to sample after training")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (0 = greedy)")
    parser.add_argument("--max-len", type=positive_int, default=20, help="longest sampled name")
    parser.add_argument("--backend", default=None, help="cython, numba or numpy (default: the fastest)")
    parser.add_argument("--threads", type=positive_int, default=None, help="threads for kernels and BLAS")
    parser.add_argument("--save", default=None, help="write the trained model to this .npz file")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")


def config_from(args) -> LMConfig:
    """The checked training configuration the options ask for; exits naming the first bad option."""
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(LMConfig)}
    config = LMConfig(**{**values, "hidden": tuple(args.hidden)})
    try:
        config.check()
    except InvalidSetting as bad:
        option = "--" + bad.setting.replace("_", "-")  # the fields are the options' names
        raise SystemExit(f"fusedense lm: {option} {bad.requirement}") from None
    return config


def run(args) -> int:
    config = config_from(args)
    # --threads caps fusedense and NumPy's BLAS (the numpy backend's GEMMs) alike
    with nullcontext() if args.threads is None else threads_limited(args.threads):
        model, data, result = train(config, verbose=0 if args.quiet else 1)
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
