"""Saving and loading models: one .npz file holding the flat parameters and a JSON record.

The archive has exactly two arrays: ``params`` (the flat buffer, see fusedense.layout) and
``record`` (UTF-8 JSON as uint8) with the format name and version, the architecture, the
SHA-256 of the parameters and, for Sequential models, the layers and compile settings.
Loading never unpickles (``allow_pickle=False``) and checks everything against the record,
so a truncated, tampered or foreign file fails with a ValueError saying what is wrong.
Saving writes a temporary file beside the target and renames it (atomic on POSIX).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile

import numpy as np

from .embedding import EmbeddingMLP
from .layout import make_layout
from .models import Dense, Embedding, Flatten, Sequential
from .network import MLP
from .optimizers import from_config

__all__ = ["save_model", "load_model", "FORMAT", "VERSION"]

FORMAT = "fusedense-model"
VERSION = 1


def _checksum(params: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(params).tobytes()).hexdigest()


def _record(model) -> tuple:
    """(record dict, params) for an MLP or a Sequential model."""
    if isinstance(model, Sequential):
        net = model._built("save")
        extra = {"kind": "Sequential", "name": model.name, "compile": model.compile_config(),
                 "layers": [_layer_record(layer) for layer in model.layers]}
    elif isinstance(model, MLP):
        net, extra = model, {"kind": "MLP"}
    else:
        raise TypeError(f"model: expected a fusedense MLP or Sequential, got {type(model).__name__}")
    record = {"format": FORMAT, "version": VERSION, "architecture": net.architecture(),
              "n_params": int(net.n_params), "sha256": _checksum(net.params), **extra}
    return record, net.params


def _layer_record(layer) -> dict:
    """A Sequential layer's constructor arguments; "type" is absent for Dense (files of version 1
    written before Embedding existed read the same)."""
    if isinstance(layer, Embedding):
        return {"type": "Embedding", "vocab_size": layer.vocab_size, "dim": layer.dim,
                "input_length": layer.input_length, "name": layer.name}
    if isinstance(layer, Flatten):
        return {"type": "Flatten", "name": layer.name}
    return {"units": layer.units, "activation": layer.activation, "name": layer.name,
            "kernel_initializer": layer.kernel_initializer, "alpha": layer.alpha}


def _layer_from_record(record: dict):
    record = dict(record)
    kind = record.pop("type", "Dense")
    classes = {"Dense": Dense, "Embedding": Embedding, "Flatten": Flatten}
    if kind not in classes:
        raise ValueError(f"unknown layer type {kind!r}")
    return classes[kind](**record)


def save_model(model, path) -> None:
    """Writes ``model`` (an MLP, EmbeddingMLP or Sequential) to ``path`` (the exact name given; no
    suffix is added) atomically; ``fd.load_model`` reads it back. Also ``model.save(path)``."""
    record, params = _record(model)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, record=np.frombuffer(json.dumps(record).encode("utf-8"), dtype=np.uint8),
                     params=params)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; a saved model is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class _Invalid(ValueError):
    pass


def _read(path):
    """(record, params) from the archive, or a ValueError naming what is wrong."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise _Invalid("it holds a single .npy array, not a fusedense model's ['params', 'record']")
        with data:
            if sorted(data.files) != ["params", "record"]:
                raise _Invalid(f"it holds {sorted(data.files)}, not a fusedense model's ['params', 'record']")
            raw, params = data["record"], data["params"]
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except _Invalid as exc:
        raise ValueError(f"path: {path!r} is not a fusedense model file: {exc}") from None
    except Exception as exc:  # zipfile.BadZipFile, EOFError, ValueError, zlib.error, ...
        raise ValueError(f"path: {path!r} is not a readable fusedense model file (truncated, "
                         f"corrupted or another format): {type(exc).__name__}: {exc}") from None
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"path: {path!r}: the record is not UTF-8 JSON bytes (dtype {raw.dtype})")
    try:
        record = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"path: {path!r}: the record is not valid JSON: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"path: {path!r} is not a fusedense model file (format "
                         f"{record.get('format') if isinstance(record, dict) else None!r})")
    if record.get("version") != VERSION:
        raise ValueError(f"path: {path!r} has format version {record.get('version')!r}; this fusedense "
                         f"reads version {VERSION}")
    return record, params


def _n_params(architecture) -> int:
    """The parameter count an architecture record implies, computed without allocating."""
    sizes, start = architecture["sizes"], 0
    if "embedding" in architecture:  # the table comes first; the dense layers read its flattened rows
        emb = architecture["embedding"]
        start = int(emb["vocab_size"]) * int(emb["dim"])
        sizes = [int(emb["context"]) * int(emb["dim"]), *sizes]
    return make_layout(sizes, architecture["activations"], architecture["alphas"], start=start)[2]


def load_model(path, backend=None):
    """The model saved at ``path``: a Sequential (compiled again if it was) or an MLP."""
    record, params = _read(path)
    try:
        architecture = record["architecture"]
        # the sizes come from the file: check them against the stored parameters before
        # allocating anything (a tampered record could ask for terabytes)
        if params.shape != (_n_params(architecture),):
            raise ValueError(f"the parameters (shape {params.shape}) do not match the architecture")
        cls = EmbeddingMLP if "embedding" in architecture else MLP
        net = cls.from_architecture(architecture, backend=backend)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"path: {path!r}: invalid architecture record: {exc}") from None
    if record.get("n_params") != net.n_params or params.shape != (net.n_params,) or params.dtype != net.dtype:
        raise ValueError(f"path: {path!r}: the parameters (shape {params.shape}, dtype {params.dtype}) do not "
                         f"match the architecture ({net.n_params} values of {net.dtype}); the file was altered")
    if _checksum(params) != record.get("sha256"):
        raise ValueError(f"path: {path!r}: the parameters' SHA-256 does not match the record; the file was altered")
    net.params[...] = params
    if record.get("kind") == "MLP":
        return net
    if record.get("kind") != "Sequential":
        raise ValueError(f"path: {path!r}: unknown model kind {record.get('kind')!r}")
    try:
        layers = [_layer_from_record(layer) for layer in record["layers"]]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"path: {path!r}: invalid layer record: {exc}") from None
    model = Sequential(layers, name=record.get("name"), dtype=net.dtype, backend=backend)
    model.build(net.n_inputs)
    if model.network.architecture() != net.architecture():
        raise ValueError(f"path: {path!r}: the layer list does not match the architecture record; the file was altered")
    model.network.params[...] = net.params
    config = record.get("compile")
    if config:
        model.compile(optimizer=from_config(*config["optimizer"]), loss=config["loss"], metrics=config["metrics"])
    return model


# The model classes cannot import this module (it builds on them), so it gives them their method.
MLP.save = Sequential.save = save_model
