"""Small real data sets read from installed packages (nothing is downloaded at run time).

=====================  =================================================  ==========================
loader                 data                                               comes from
=====================  =================================================  ==========================
load_names             ~32k first names (a–z) → gender (female / male)    pip: gender-guesser
load_names_lm          ~33k first names as next-character prediction      pip: gender-guesser
load_fortunes          fortune-cookie texts → language (8 languages)      apt: fortunes, fortunes-de, …
load_fashion_mnist     70k 28×28 clothing images → 10 classes             apt: dataset-fashion-mnist
load_digits            1797 8×8 digit images → 10 classes                 pip: scikit-learn
=====================  =================================================  ==========================

A missing package raises :class:`DatasetNotFoundError` naming the package to install.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
import subprocess
import types

import numpy as np

from .sparse import is_sparse

__all__ = ["DatasetNotFoundError", "load_names", "load_names_lm", "NamesLM", "NAMES_LM_VOCAB", "names_to_examples", "load_fortunes", "load_fashion_mnist", "load_digits",
           "train_test_split", "FORTUNE_PACKAGES"]


class DatasetNotFoundError(FileNotFoundError):
    """The package that ships a data set is not installed; the message says how to install it."""


def train_test_split(x, y, test_size=0.2, seed=0):
    """Shuffled split: ``(x_train, x_test, y_train, y_test)`` (lists are indexed like arrays,
    SciPy sparse matrices by rows)."""
    n = len(y)
    if not 0 < test_size < 1:
        raise ValueError(f"test_size: expected a fraction in (0, 1), got {test_size!r}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_size)))
    test, train = order[:n_test], order[n_test:]
    def take(a, idx):
        if isinstance(a, list):
            return [a[i] for i in idx]
        return a[idx] if is_sparse(a) else np.asarray(a)[idx]
    return take(x, train), take(x, test), take(y, train), take(y, test)


# --- first names → gender (gender-guesser's nam_dict.txt) ---------------------------------------

NAME_CLASSES = ("female", "male")
# nam_dict.txt gender flags: M/1M/?M male or mostly male, F/1F/?F female or mostly female;
# "?" (unisex) names are left out.
_NAME_FLAGS = {"M": 1, "1M": 1, "?M": 1, "F": 0, "1F": 0, "?F": 0}


def _names_file():
    spec = importlib.util.find_spec("gender_guesser")  # locate the package without importing it
    path = None if spec is None or not spec.submodule_search_locations else os.path.join(
        list(spec.submodule_search_locations)[0], "data", "nam_dict.txt")
    if path is None or not os.path.exists(path):
        raise DatasetNotFoundError("the first-name data comes from the PyPI package gender-guesser: "
                                   "pip install gender-guesser   (or: pip install 'fusedense[demo]')")
    return path


def _name_entries():
    """``(flag, name)`` for every entry of the name list spelled a–z only (lower-cased).

    From Jörg Michael's name dictionary shipped in gender-guesser (GFDL): lines are
    ``flag name ... frequencies`` with the name in columns 4–29. Skipped: comments, '='
    (equivalent-name) lines, lines with '+' in column 30 (the file's own duplicates of umlaut
    names, spelled expanded) and names with any other character ('+'-joined Arabic/Chinese/
    Korean names such as 'Jun+Wei', accented letters).
    """
    with open(_names_file(), encoding="utf-8") as f:
        for line in f:
            if line[:1] in ("#", "=", "") or line[29:30] == "+":
                continue
            name = line[3:29].strip().lower()
            if name.isascii() and name.isalpha():
                yield line[:2].strip(), name


def _shuffled(names, seed):
    order = np.random.default_rng(seed).permutation(len(names))
    return [names[i] for i in order], order


def load_names(shuffle=True, seed=0):
    """First names → gender: ``(names, labels, classes)``; labels index ``classes = ('female', 'male')``.

    The a–z names of gender-guesser's list (see ``_name_entries``), one entry per name; unisex
    names ('?') and names whose flags disagree are dropped.
    """
    genders = {}
    for flag, name in _name_entries():
        if flag in _NAME_FLAGS:
            genders.setdefault(name, set()).add(_NAME_FLAGS[flag])
    names = sorted(n for n, g in genders.items() if len(g) == 1)
    labels = np.array([next(iter(genders[n])) for n in names], dtype=np.int64)
    if shuffle:
        names, order = _shuffled(names, seed)
        labels = labels[order]
    return names, labels, NAME_CLASSES


# --- first names as a character-level language-modelling task -------------------------------

#: Token 0 is the boundary '.' (before the first and after the last letter), then a–z.
NAMES_LM_VOCAB = ".abcdefghijklmnopqrstuvwxyz"


class NamesLM:
    """``load_names_lm``'s result: ``x_*`` (n, context) int64 contexts, ``y_*`` (n,) next tokens,
    and ``names_*`` (the names each split was made from) for ``* in train, val, test``."""

    vocab = NAMES_LM_VOCAB

    def __init__(self, context, splits):
        self.context = context
        for part, names in splits.items():
            x, y = names_to_examples(names, context)
            setattr(self, f"names_{part}", names)
            setattr(self, f"x_{part}", x)
            setattr(self, f"y_{part}", y)

    @staticmethod
    def encode(name: str) -> list:
        return [NAMES_LM_VOCAB.index(c) for c in name]

    @staticmethod
    def decode(tokens) -> str:
        return "".join(NAMES_LM_VOCAB[t] for t in tokens)


def names_to_examples(names, context):
    """Every (context, next character) pair of ``names``: ``context`` boundary tokens, the letters,
    one final boundary token; e.g. 'ana', context 2 → '..'→a, '.a'→n, 'an'→a, 'na'→'.'."""
    rows, targets = [], []
    for name in names:
        tokens = [0] * context + NamesLM.encode(name) + [0]
        for i in range(context, len(tokens)):
            rows.append(tokens[i - context:i])
            targets.append(tokens[i])
    return (np.array(rows, dtype=np.int64).reshape(-1, context), np.array(targets, dtype=np.int64))


def load_names_lm(context=3, seed=0, val_size=0.1, test_size=0.1):
    """gender-guesser's first names for next-character prediction: every a–z name of the list once
    (~33.4k; unlike ``load_names`` this keeps the unisex names and those whose gender flags
    disagree — a language model has no use for the gender).

    The names are shuffled with ``seed`` and split BY NAME (no name contributes to two splits):
    ``test_size`` and ``val_size`` fractions, the rest for training. Returns a :class:`NamesLM`.
    """
    if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or context < 1:
        raise ValueError(f"context: expected a positive integer, got {context!r}")
    if not (0 < val_size < 1 and 0 < test_size < 1 and val_size + test_size < 1):
        raise ValueError(f"val_size, test_size: expected fractions in (0, 1) summing below 1, "
                         f"got {val_size!r}, {test_size!r}")
    names, _ = _shuffled(sorted({name for _, name in _name_entries()}), seed)
    n_test, n_val = int(round(len(names) * test_size)), int(round(len(names) * val_size))
    return NamesLM(int(context), {"test": names[:n_test], "val": names[n_test:n_test + n_val],
                                  "train": names[n_test + n_val:]})


# --- fortunes → language (Debian fortune packages) ---------------------------------------------

#: language code → Debian package with its fortunes ("pt" is Brazilian Portuguese, "cs" includes Slovak).
FORTUNE_PACKAGES = {"en": "fortunes", "de": "fortunes-de", "es": "fortunes-es", "it": "fortunes-it",
                    "pl": "fortunes-pl", "ru": "fortunes-ru", "cs": "fortunes-cs", "pt": "fortunes-br"}
_FORTUNE_DIR = "/usr/share/games/fortunes"


def _fortune_files(package):
    """The fortune text files a package installed (no .dat indexes, .u8 links or offensive 'off/')."""
    missing = DatasetNotFoundError(f"the fortunes come from the Debian package {package}: "
                                   f"apt-get install {' '.join(FORTUNE_PACKAGES.values())}")
    if shutil.which("dpkg") is None:
        raise missing
    listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if listing.returncode != 0:
        raise missing
    return sorted(p for p in listing.stdout.splitlines()
                  if p.startswith(_FORTUNE_DIR + "/") and os.path.isfile(p) and not os.path.islink(p)
                  and not p.endswith((".dat", ".u8")) and "/off/" not in p)


def _read_fortunes(path):
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", "replace").replace("\r\n", "\n")
    entries, current = [], []
    for line in text.split("\n"):
        if line.strip() == "%":
            entries.append("\n".join(current).strip())
            current = []
        else:
            current.append(line)
    entries.append("\n".join(current).strip())
    return [e for e in entries if e]


def load_fortunes(languages=None, max_per_language=None, min_chars=20, seed=0):
    """Fortune cookies → language: ``(texts, labels, languages)``; labels index ``languages``.

    languages: codes from ``FORTUNE_PACKAGES`` (default: all eight). Entries are separated by
    ``%`` lines; entries shorter than ``min_chars`` are dropped; ``max_per_language`` keeps a
    random sample of that many per language (balanced and faster to featurize).
    """
    languages = tuple(FORTUNE_PACKAGES) if languages is None else tuple(languages)
    unknown = [code for code in languages if code not in FORTUNE_PACKAGES]
    if unknown:
        raise ValueError(f"languages: unknown language code(s) {unknown}; expected some of {', '.join(FORTUNE_PACKAGES)}")
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label, code in enumerate(languages):
        entries = [e for path in _fortune_files(FORTUNE_PACKAGES[code]) for e in _read_fortunes(path)
                   if len(e) >= min_chars]
        if max_per_language is not None and len(entries) > max_per_language:
            entries = [entries[i] for i in sorted(rng.choice(len(entries), max_per_language, replace=False))]
        texts += entries
        labels += [label] * len(entries)
    order = rng.permutation(len(texts))
    return [texts[i] for i in order], np.array(labels, dtype=np.int64)[order], languages


# --- Fashion-MNIST (Debian dataset-fashion-mnist, gzipped IDX files) ------------------------------

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")


def _read_idx(path):
    """An IDX array (the MNIST format): magic 0x0000 0x08 ndim, big-endian int32 dims, uint8 data."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"path: {path!r} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise ValueError(f"path: {path!r}: expected {int(np.prod(dims))} values for shape {dims}, "
                         f"found {len(data) - offset} (truncated?)")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def load_fashion_mnist(directory=FASHION_MNIST_DIR):
    """``(x_train, y_train), (x_test, y_test)`` like keras.datasets: uint8 images (n, 28, 28), int64 labels."""
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    paths = [os.path.join(directory, n) for n in names]
    if not all(os.path.exists(p) for p in paths):
        raise DatasetNotFoundError(f"Fashion-MNIST comes from the Debian package dataset-fashion-mnist "
                                   f"(files in {directory}): apt-get install dataset-fashion-mnist")
    x_train, y_train, x_test, y_test = (_read_idx(p) for p in paths)
    return (x_train, y_train.astype(np.int64)), (x_test, y_test.astype(np.int64))


#: ``keras.datasets.fashion_mnist``: ``fd.datasets.fashion_mnist.load_data()`` as in Keras scripts
fashion_mnist = types.SimpleNamespace(load_data=load_fashion_mnist)


# --- scikit-learn's digits -------------------------------------------------------------------------


def load_digits():
    """scikit-learn's 8×8 digits: ``(X, y)`` with X float32 (1797, 64) scaled to [0, 1], y int64."""
    if importlib.util.find_spec("sklearn") is None:
        raise DatasetNotFoundError("the digits data comes from scikit-learn: pip install scikit-learn")
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    return (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)
