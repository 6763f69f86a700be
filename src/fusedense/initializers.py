"""Weight initializers by Keras's names and classes: ``fd.initializers.HeNormal(seed=0)``,
``kernel_initializer="he_uniform"``. Each is ``init(shape, rng) -> ndarray`` (float64; the model
casts), with Keras 3's formulas (VarianceScaling: the *_normal laws are truncated at two standard
deviations and rescaled, as in Keras).

An initializer built with ``seed=`` draws from its own generator; without one it draws from the
model's (``fd.Sequential(seed=...)``), so a seeded model starts from the same weights every time.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["Initializer", "VarianceScaling", "GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal",
           "LecunUniform", "LecunNormal", "RandomUniform", "RandomNormal", "TruncatedNormal", "Zeros", "Ones",
           "Constant", "get"]

_TRUNCATED_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2] (Keras's constant)


def _truncated_normal(rng, mean, stddev, shape):
    """Normal draws, those beyond two standard deviations drawn again (Keras's truncated_normal)."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return mean + stddev * out


class Initializer:
    """Base class: ``__call__(shape, rng)``; ``get_config()`` gives the constructor arguments."""

    def __init__(self, seed=None):
        self.seed = seed
        self._rng = None if seed is None else np.random.default_rng(seed)

    def __call__(self, shape, rng=None):
        rng = self._rng if self._rng is not None else (rng if rng is not None else np.random.default_rng())
        return self._draw(tuple(shape), rng)

    def get_config(self):
        return {"seed": self.seed}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


class VarianceScaling(Initializer):
    """Draws with variance ``scale / n``, n = fan_in, fan_out or their mean (``mode``)."""

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"mode: expected 'fan_in', 'fan_out' or 'fan_avg', got {mode!r}")
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(f"distribution: expected 'truncated_normal', 'untruncated_normal' or 'uniform', "
                             f"got {distribution!r}")
        if not scale > 0:
            raise ValueError(f"scale: expected a positive number, got {scale!r}")
        super().__init__(seed)
        self.scale, self.mode, self.distribution = float(scale), mode, distribution

    def _draw(self, shape, rng):
        fan_in, fan_out = (shape[0], shape[-1]) if len(shape) > 1 else (shape[0], shape[0])
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, n)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return rng.uniform(-limit, limit, shape)
        if self.distribution == "untruncated_normal":
            return rng.normal(0.0, math.sqrt(variance), shape)
        return _truncated_normal(rng, 0.0, math.sqrt(variance) / _TRUNCATED_STD, shape)

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution, "seed": self.seed}


def _variance_scaling(name, scale, mode, distribution):
    def __init__(self, seed=None):
        VarianceScaling.__init__(self, scale, mode, distribution, seed)

    return type(name, (VarianceScaling,), {"__init__": __init__, "get_config": Initializer.get_config,
                                          "__doc__": f"VarianceScaling(scale={scale}, mode={mode!r}, "
                                                     f"distribution={distribution!r})."})


GlorotUniform = _variance_scaling("GlorotUniform", 1.0, "fan_avg", "uniform")
GlorotNormal = _variance_scaling("GlorotNormal", 1.0, "fan_avg", "truncated_normal")
HeUniform = _variance_scaling("HeUniform", 2.0, "fan_in", "uniform")
HeNormal = _variance_scaling("HeNormal", 2.0, "fan_in", "truncated_normal")
LecunUniform = _variance_scaling("LecunUniform", 1.0, "fan_in", "uniform")
LecunNormal = _variance_scaling("LecunNormal", 1.0, "fan_in", "truncated_normal")


class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        super().__init__(seed)
        self.minval, self.maxval = float(minval), float(maxval)

    def _draw(self, shape, rng):
        return rng.uniform(self.minval, self.maxval, shape)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = float(mean), float(stddev)

    def _draw(self, shape, rng):
        return rng.normal(self.mean, self.stddev, shape)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class TruncatedNormal(RandomNormal):
    def _draw(self, shape, rng):
        return _truncated_normal(rng, self.mean, self.stddev, shape)


class Constant(Initializer):
    def __init__(self, value=0.0):
        super().__init__(None)
        self.value = float(value)

    def _draw(self, shape, rng):
        return np.full(shape, self.value)

    def get_config(self):
        return {"value": self.value}


class Zeros(Constant):
    def __init__(self):
        super().__init__(0.0)

    def get_config(self):
        return {}


class Ones(Constant):
    def __init__(self):
        super().__init__(1.0)

    def get_config(self):
        return {}


_BY_NAME = {"glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal, "he_uniform": HeUniform,
            "he_normal": HeNormal, "lecun_uniform": LecunUniform, "lecun_normal": LecunNormal,
            "random_uniform": RandomUniform, "uniform": RandomUniform, "random_normal": RandomNormal,
            "normal": RandomNormal, "truncated_normal": TruncatedNormal, "zeros": Zeros, "zero": Zeros,
            "ones": Ones, "one": Ones, "constant": Constant, "variance_scaling": VarianceScaling}


def get(identifier) -> Initializer:
    """An initializer from a Keras name ('he_normal'), a class name ('HeNormal'), a Keras config
    dict ``{"class_name": ..., "config": {...}}`` or an Initializer."""
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, dict) and "class_name" in identifier:
        classes = {cls.__name__: cls for cls in _BY_NAME.values()}
        cls = classes.get(identifier["class_name"])
        if cls is not None:
            return cls(**{k: v for k, v in (identifier.get("config") or {}).items()})
    if isinstance(identifier, str):
        classes = {cls.__name__: cls for cls in _BY_NAME.values()}
        cls = _BY_NAME.get(identifier) or classes.get(identifier)
        if cls is not None:
            return cls()
    raise ValueError(f"initializer: unknown initializer {identifier!r}; expected one of {', '.join(_BY_NAME)} "
                     f"or a fusedense.initializers.Initializer")


def name_of(initializer: Initializer) -> str:
    """The Keras name that ``get`` turns back into an initializer of this class (default settings)."""
    return next(name for name, cls in _BY_NAME.items() if cls is type(initializer))
