"""``fusedense lm``: train the character-level language model of first names (:mod:`fusedense.lm`).

    fusedense lm                                   # context 3, embedding 32, hidden 500 tanh, AdamW, 20 epochs
    fusedense lm --embedding 96 --embedding-std 1  # the best context-3 model of docs/lm_sweep.md
    fusedense lm --context 8 --embedding-std 1 --hidden 300 300 --weight-decay 0.05 --epochs 15  # best at context 8
    fusedense lm --context 5 --samples 20 --temperature 0.7
    fusedense lm --quantize int8                   # also the int8 copy's test loss, sampling speed, samples

Prints the losses in nats per character (every letter and the end of the name count), the test
perplexity and the training speed, then samples names.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import tempfile
import time
from contextlib import nullcontext

import numpy as np

from .. import datasets
from ..activations import ACTIVATIONS, get_activation
from ..lm import InvalidSetting, LMConfig, train
from ..threads import threads_limited
from .options import (UsageError, backend_name, int_in, non_negative_int, output_path, positive_int, real,
                      thread_count)

HELP = "train a character-level MLP language model on first names and sample new ones"

_DEFAULT = LMConfig()
#: Widths beyond this are typos, not models (a 65536 × 65536 layer alone is 16 GB).
MAX_WIDTH = 1 << 16
#: The largest model the command builds (8 GB of float32 weights, as much again for Adam).
MAX_PARAMS = 1 << 31
_HIDDEN_ACTIVATIONS = [name for name in ACTIVATIONS if not get_activation(name).rowwise]


def add_arguments(parser):
    d = _DEFAULT
    width = int_in(1, MAX_WIDTH)
    parser.add_argument("--context", type=width, default=d.context, help=f"characters of context (default {d.context})")
    parser.add_argument("--embedding", type=width, default=d.embedding,
                        help=f"embedding width per character (default {d.embedding})")
    parser.add_argument("--embedding-std", type=real(0, low_inclusive=False), default=d.embedding_std,
                        help=f"standard deviation of the initial embeddings, drawn from N(0, std²) "
                             f"(default {d.embedding_std:g})")
    parser.add_argument("--hidden", type=width, nargs="+", default=list(d.hidden),
                        help=f"hidden layer widths (default {' '.join(map(str, d.hidden))}; "
                             f"e.g. --hidden 300 300 for two layers)")
    parser.add_argument("--activation", default=d.activation, choices=_HIDDEN_ACTIVATIONS, metavar="NAME",
                        help=f"hidden activation (default {d.activation}; any of fd.ACTIVATIONS but softmax)")
    parser.add_argument("--dropout", type=real(0), default=d.dropout,
                        help=f"rate in [0, 1) at which training drops each hidden layer's outputs, drawn inside the fused "
                             f"training step (default {d.dropout:g})")
    parser.add_argument("--input-dropout", type=real(0), default=d.input_dropout,
                        help=f"rate at which training drops the embeddings fed to the first hidden layer "
                             f"(default {d.input_dropout:g})")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default=d.optimizer)
    parser.add_argument("--lr", type=real(0, low_inclusive=False), default=None,
                        help="initial learning rate (adam 1e-3, sgd 0.1)")
    parser.add_argument("--weight-decay", type=real(0), default=None,
                        help="weight decay on every parameter, embeddings and biases included: decoupled "
                             "with adam (AdamW, default 0.02), L2 with sgd (default 0)")
    parser.add_argument("--min-lr", type=real(0, low_inclusive=False), default=None,
                        help="learning rate of the last epoch: cosine decay from --lr (default --lr/100)")
    parser.add_argument("--epochs", type=positive_int, default=d.epochs,
                        help=f"passes over the training names (default {d.epochs})")
    parser.add_argument("--batch-size", type=positive_int, default=d.batch_size, help=f"default {d.batch_size}")
    parser.add_argument("--patience", type=positive_int, default=None,
                        help="stop once the validation loss has not improved for this many epochs and "
                             "keep the best epoch's weights (default: train all epochs)")
    parser.add_argument("--seed", type=non_negative_int, default=d.seed,
                        help="data split, initial weights, shuffling, sampling")
    parser.add_argument("--samples", type=int_in(0, 100_000), default=10, help="names to sample after training")
    parser.add_argument("--temperature", type=real(0), default=0.8, help="sampling temperature (0 = greedy)")
    parser.add_argument("--max-len", type=int_in(1, 1000), default=20, help="longest sampled name")
    parser.add_argument("--backend", type=backend_name, default=None, help="cython, numba or numpy (default: the fastest)")
    parser.add_argument("--threads", type=thread_count, default=None, help="threads for kernels and BLAS")
    parser.add_argument("--save", type=output_path, default=None,
                        help="write the trained model to this .npz file (its directory must exist)")
    parser.add_argument("--quantize", choices=("int8", "bf16"), default=None,
                        help="after training, also report the quantized model (fd.quantize): its test loss "
                             "beside the float one, sampling speed of both, and samples from it")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")


def config_from(args) -> LMConfig:
    """The checked training configuration the options ask for; UsageError names the first bad option."""
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(LMConfig)}
    config = LMConfig(**{**values, "hidden": tuple(args.hidden)})
    try:
        config.check()
    except InvalidSetting as bad:
        option = "--" + bad.setting.replace("_", "-")  # the fields are the options' names
        raise UsageError(f"argument {option}: {bad.requirement}") from None
    widths = [len(datasets.NAMES_LM_VOCAB) * config.embedding, config.context * config.embedding, *config.hidden,
              len(datasets.NAMES_LM_VOCAB)]
    n_params = widths[0] + sum(a * b + b for a, b in zip(widths[1:], widths[2:]))
    if n_params > MAX_PARAMS:
        raise UsageError(f"arguments --context/--embedding/--hidden: the model would have {n_params:,} parameters "
                         f"(at most {MAX_PARAMS:,})")
    return config


def check(args):
    config_from(args)


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
        _print_samples(model, data, args, "samples")
        if args.quantize:
            _report_quantized(model, data, args, losses["test"])
        if args.save:
            return _save(model, args.save)
        return 0


def _report_quantized(model, data, args, float_loss):
    """The quantized copy's test loss against the float model's, both models' batch-1 sampling
    speed (one name at a time, as an interactive user asks), and samples from the copy."""
    from ..quantized import quantize

    quantized = quantize(model, args.quantize)
    loss = quantized.evaluate(data.x_test, data.y_test, verbose=0)
    print(f"{args.quantize}: test loss {loss:.4f} nats/char ({loss - float_loss:+.4f} against float32)")
    speeds = {}
    for name, m in (("float32", model), (args.quantize, quantized)):
        m.generate(1, args.max_len, args.temperature, seed=0)  # (first call: compiles, allocates)
        rng, chars, start = np.random.default_rng(args.seed), 0, time.perf_counter()
        while time.perf_counter() - start < 0.5:
            chars += sum(len(t) + 1 for t in m.generate(1, args.max_len, args.temperature, seed=rng))
        speeds[name] = chars / (time.perf_counter() - start)
    print(f"sampling at batch 1: float32 {speeds['float32']:,.0f} chars/s, {args.quantize} "
          f"{speeds[args.quantize]:,.0f} chars/s ({speeds[args.quantize] / speeds['float32']:.2f}x)")
    _print_samples(quantized, data, args, f"{args.quantize} samples")


def _print_samples(model, data, args, title):
    if args.samples:
        names = model.generate(args.samples, args.max_len, args.temperature, seed=args.seed)
        print(f"{title} (temperature {args.temperature:g}, seed {args.seed}):")
        print("  " + ", ".join(data.decode(tokens) for tokens in names))


def _save(model, path) -> int:
    """Saves the trained model; if ``path`` stopped being writable during training (checked at
    the start), saves it in the temporary directory instead of losing it, and says so."""
    try:
        model.save(path)
    except OSError as exc:
        fallback = os.path.join(tempfile.gettempdir(), f"fusedense-lm-{os.getpid()}.npz")
        model.save(fallback)
        print(f"fusedense lm: could not save to {path} ({exc.strerror or exc}); saved to {fallback} instead",
              file=sys.stderr)
        return 1
    print(f"saved to {path}")
    return 0
