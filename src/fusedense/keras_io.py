"""Models to and from real Keras 3: ``fd.Sequential.from_keras(keras_model)``, ``fd.load_keras(path)``
(a ``.keras`` file: a zip of ``config.json``, ``metadata.json`` and ``model.weights.h5``), and
``model.save("m.keras")`` / ``model.save_weights("m.weights.h5")`` writing files Keras loads.

Supported layers: InputLayer, Dense (any activation fusedense has under Keras's name, use_bias,
kernel_regularizer), Activation (after a linear Dense), Dropout, Embedding (first) + Flatten;
any other layer, or a setting fusedense cannot reproduce, is refused with a ValueError naming it.
Reading .keras / .weights.h5 files needs h5py (``pip install fusedense[keras]``); from_keras needs
only the Keras model. Neither imports Keras.

Keras's weight file names each layer's group by its class in snake case, numbered in the model's
order (``layers/dense``, ``layers/dense_1``, ...), whatever the layers' own names.
"""
from __future__ import annotations

import datetime
import io as _bytes_io
import json
import os
import tempfile
import warnings
import zipfile

import numpy as np

from . import io as _io
from . import losses as _losses
from . import optimizers as _optimizers
from . import regularizers as _regularizers
from . import models as _models
from .layers import Activation, Dense, Dropout, Embedding, EmbeddingBag, Flatten, snake_case
from .models import Sequential
from .network import MLP

__all__ = ["from_keras", "load_keras", "save_keras", "load_model"]

KERAS_VERSION = "3.15.1"  # written in metadata.json: the Keras whose file layout this module follows

# Keras activation names → fusedense's, and back (a fusedense activation with no Keras name is refused)
_FROM_KERAS = {"linear": "identity", None: "identity", "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh",
               "softmax": "softmax", "log_softmax": "log_softmax", "elu": "elu", "gelu": "gelu_erf",
               "silu": "silu", "swish": "silu", "softplus": "softplus", "leaky_relu": "leaky_relu"}
_TO_KERAS = {"identity": "linear", "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "softmax": "softmax",
             "log_softmax": "log_softmax", "elu": "elu", "gelu_erf": "gelu", "silu": "silu", "softplus": "softplus",
             "leaky_relu": "leaky_relu"}
_KERAS_ALPHA = {"leaky_relu": 0.2, "elu": 1.0}  # the parameter Keras's activation functions use by name
_SUPPORTED = "InputLayer, Dense, Activation, Dropout, Embedding, Flatten"


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("reading and writing Keras weight files needs h5py: pip install 'fusedense[keras]'") from None
    return h5py


def _activation(name, where):
    if isinstance(name, dict):  # a serialised function: Keras writes its name in the config
        name = name.get("config", name.get("class_name"))
    if name not in _FROM_KERAS:
        raise ValueError(f"{where}: activation {name!r} has no fusedense kernel; supported: "
                         f"{', '.join(sorted(k for k in _FROM_KERAS if k))}")
    return _FROM_KERAS[name]


def _layer(class_name, config, first):
    """The fusedense layer for one Keras layer's (class name, config), or a ValueError naming it."""
    name = config.get("name")
    where = f"layer {name!r} ({class_name})"
    if class_name == "Dense":
        for setting in ("bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint",
                        "quantization_config"):
            if config.get(setting) is not None:
                raise ValueError(f"{where}: {setting} is not supported by fusedense")
        activation = _activation(config.get("activation"), where)
        regularizer = config.get("kernel_regularizer")
        return Dense(int(config["units"]), activation=activation, use_bias=config.get("use_bias", True),
                     kernel_regularizer=None if regularizer is None else _regularizers.get(regularizer),
                     alpha=_KERAS_ALPHA.get(activation), name=name)
    if class_name == "Activation":
        activation = _activation(config.get("activation"), where)
        return Activation(activation, name=name)
    if class_name == "Dropout":
        if config.get("noise_shape") is not None:
            raise ValueError(f"{where}: noise_shape is not supported by fusedense")
        return Dropout(float(config["rate"]), seed=config.get("seed"), name=name)
    if class_name == "Embedding":
        if config.get("mask_zero") or config.get("embeddings_regularizer") is not None:
            raise ValueError(f"{where}: mask_zero and embeddings_regularizer are not supported by fusedense")
        return Embedding(int(config["input_dim"]), int(config["output_dim"]), name=name)
    if class_name == "Flatten":
        return Flatten(name=name)
    raise ValueError(f"{where}: fusedense cannot run this layer; supported layers: {_SUPPORTED}")


def _input_width(shape, where):
    shape = list(shape or [])
    if len(shape) != 2 or shape[1] is None:
        raise ValueError(f"{where}: expected an input shape (None, n), got {shape}; fusedense models take flat "
                         f"feature vectors (or token ids of a fixed length for an Embedding)")
    return int(shape[1])


def _model(name, layer_configs, input_shape, dtype, backend):
    """An unbuilt Sequential from Keras layer (class name, config) pairs."""
    layers = [_layer(cls, cfg, i == 0) for i, (cls, cfg) in enumerate(layer_configs) if cls != "InputLayer"]
    width = _input_width(input_shape, "input")
    if layers and isinstance(layers[0], Embedding):
        layers[0].input_length = width
    model = Sequential(name=name, dtype=dtype, backend=backend)
    for layer in layers:
        model.add(layer)
    model.build(width)
    return model


def _dtype(policy):
    name = policy.get("config", {}).get("name") if isinstance(policy, dict) else policy
    if name not in (None, "float32", "float64"):
        raise ValueError(f"dtype: fusedense computes in float32 or float64, the Keras model uses {name!r}")
    return name or "float32"


def from_keras(keras_model, backend=None) -> Sequential:
    """A fusedense Sequential with the layers and weights of a built Keras 3 Sequential model
    (compiled like it when its loss, metrics and optimizer have fusedense equivalents)."""
    if type(keras_model).__name__ != "Sequential":
        raise ValueError(f"keras_model: expected a keras.Sequential, got {type(keras_model).__name__}")
    if not keras_model.built:
        raise ValueError("keras_model: the Keras model is not built (give it a keras.Input or call it once)")
    configs = [(type(layer).__name__, layer.get_config()) for layer in keras_model.layers]
    model = _model(keras_model.name, configs, tuple(keras_model.inputs[0].shape), _dtype(keras_model.dtype_policy.name),
                   backend)
    model.set_weights([np.asarray(w) for layer in keras_model.layers for w in layer.get_weights()])
    compile_config = keras_model.get_compile_config() if getattr(keras_model, "compiled", False) else None
    if compile_config:
        _compile(model, compile_config)
    return model


def load_keras(path, backend=None, compile=True) -> Sequential:
    """The Sequential model saved by Keras 3 at ``path`` (``model.save("m.keras")``)."""
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if not {"config.json", "model.weights.h5"} <= names:
                raise ValueError(f"path: {path!r} is not a Keras 3 model file (it holds {sorted(names)}, without "
                                 f"config.json and model.weights.h5)")
            config = json.loads(archive.read("config.json"))
            weights = archive.read("model.weights.h5")
    except zipfile.BadZipFile:
        raise ValueError(f"path: {path!r} is not a .keras file (not a zip archive)") from None
    if config.get("class_name") != "Sequential":
        raise ValueError(f"path: {path!r}: fusedense loads Keras Sequential models, this is a {config.get('class_name')!r}")
    inner = config["config"]
    configs = [(layer["class_name"], layer["config"]) for layer in inner["layers"]]
    input_shape = inner.get("build_input_shape") or (config.get("build_config") or {}).get("input_shape")
    if input_shape is None and configs and configs[0][0] == "InputLayer":
        input_shape = configs[0][1]["batch_shape"]
    model = _model(inner.get("name"), configs, input_shape, _dtype(inner.get("dtype")), backend)
    _read_weights(model, _bytes_io.BytesIO(weights), path)
    if compile and config.get("compile_config"):
        _compile(model, config["compile_config"])
    return model


def _weight_groups(model):
    """(layer, group path) in Keras's file layout, for every layer of the model."""
    seen = {}
    for layer in model.layers:
        base = snake_case(type(layer).__name__)
        count = seen.get(base, 0)
        seen[base] = count + 1
        yield layer, f"layers/{base}" + (f"_{count}" if count else "")


def _read_weights(model, source, path):
    h5py = _h5py()
    with h5py.File(source, "r") as f:
        for layer, group in _weight_groups(model):
            expected = layer.weights if isinstance(layer, (Dense, Embedding)) else []
            stored = f.get(f"{group}/vars")
            found = [] if stored is None else [stored[str(i)] for i in range(len(stored))]
            if len(found) != len(expected):
                raise ValueError(f"path: {path!r}: {group} holds {len(found)} weight arrays, layer "
                                 f"{layer.name!r} has {len(expected)}")
            for i, (target, value) in enumerate(zip(expected, found)):
                if value.shape != target.shape:
                    raise ValueError(f"path: {path!r}: {group}/vars/{i} has shape {value.shape}, layer "
                                     f"{layer.name!r} expects {target.shape}")
                target[...] = value[()]


def _compile(model, compile_config):
    """Compiles like Keras's compile_config when fusedense has its optimizer, loss and metrics;
    otherwise warns and leaves the model uncompiled."""
    try:
        optimizer = compile_config.get("optimizer")
        if isinstance(optimizer, dict):
            name, cfg = optimizer["class_name"], optimizer.get("config", {})
            args = {k: cfg[k] for k in ("learning_rate", "momentum", "nesterov", "beta_1", "beta_2", "epsilon",
                                        "rho", "centered") if k in cfg}
            if cfg.get("weight_decay") and name == "Adam":
                name = "AdamW"  # Keras's weight_decay is decoupled, which is fusedense's AdamW
            if cfg.get("weight_decay"):
                args["weight_decay"] = cfg["weight_decay"]
            if name == "SGD":
                args = {k: v for k, v in args.items() if k in ("learning_rate", "momentum", "nesterov")}
            optimizer = _optimizers.from_config(name, args)
        loss = compile_config.get("loss")
        if isinstance(loss, dict):
            loss = {"class_name": loss["class_name"],
                    "config": {k: v for k, v in loss.get("config", {}).items() if k == "from_logits"}}
        metrics = [m if isinstance(m, str) else m.get("config", {}).get("name") for m in compile_config.get("metrics") or []]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the loss's reading is Keras's, as the model was trained
            model.compile(optimizer=optimizer or "rmsprop", loss=loss, metrics=metrics)
    except (KeyError, TypeError, ValueError, NotImplementedError) as exc:
        warnings.warn(f"the Keras model's compile settings have no fusedense equivalent ({exc}); the model is "
                      f"loaded uncompiled: call model.compile(...)", UserWarning, stacklevel=3)


# --- writing Keras files -----------------------------------------------------------------------

def _keras_layer_config(layer, model):
    """(class name, config) of a fusedense layer in Keras 3's serialisation, or a ValueError."""
    config = {"name": layer.name, "trainable": True, "dtype": model.dtype.name}
    if isinstance(layer, EmbeddingBag):
        raise ValueError(f"save: layer {layer.name!r}: Keras has no EmbeddingBag layer; save to fusedense's .npz")
    if isinstance(layer, Dense):
        activation = _TO_KERAS.get(layer.activation)
        default_alpha = _KERAS_ALPHA.get(layer.activation)
        if activation is None or default_alpha is not None and layer.alpha not in (None, default_alpha):
            raise ValueError(f"save: layer {layer.name!r}: Keras has no activation named for {layer.activation!r}"
                             + (f" with alpha {layer.alpha}" if layer.alpha is not None else ""))
        if default_alpha is not None and layer.alpha is None and default_alpha != _default_alpha(layer.activation):
            raise ValueError(f"save: layer {layer.name!r}: fusedense's {layer.activation} (alpha "
                             f"{_default_alpha(layer.activation)}) differs from Keras's (alpha {default_alpha}); "
                             f"give alpha={default_alpha} to save it as a Keras model")
        reg = layer.kernel_regularizer
        config.update(units=layer.units, activation=activation, use_bias=layer.use_bias,
                      kernel_regularizer=None if reg is None else {"module": "keras.regularizers",
                                                                   "class_name": type(reg).__name__,
                                                                   "config": reg.get_config(), "registered_name": None})
        return "Dense", config
    if isinstance(layer, Activation):
        if layer.activation not in _TO_KERAS:
            raise ValueError(f"save: layer {layer.name!r}: Keras has no activation named for {layer.activation!r}")
        return "Activation", {**config, "activation": _TO_KERAS[layer.activation]}
    if isinstance(layer, Dropout):
        return "Dropout", {**config, "rate": layer.rate, "seed": layer.seed, "noise_shape": None}
    if isinstance(layer, Embedding):
        return "Embedding", {**config, "input_dim": layer.vocab_size, "output_dim": layer.dim}
    return "Flatten", config


def _default_alpha(activation):
    from .activations import get_activation
    return get_activation(activation).default_alpha


def _keras_config(model):
    width = model.input_dim
    input_layer = {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
                   "config": {"batch_shape": [None, width], "name": "input_layer",
                              "dtype": "int32" if model.embedding is not None else model.dtype.name}}
    layers = [input_layer] + [{"module": "keras.layers", "class_name": cls, "config": cfg, "registered_name": None}
                              for cls, cfg in (_keras_layer_config(layer, model) for layer in model.layers)]
    return {"module": "keras", "class_name": "Sequential", "registered_name": None,
            "config": {"name": model.name, "trainable": True, "dtype": model.dtype.name, "layers": layers,
                       "build_input_shape": [None, width]},
            "build_config": {"input_shape": [None, width]}, "compile_config": None}


def _write_weights(model, target):
    h5py = _h5py()
    with h5py.File(target, "w") as f:
        f.create_group("vars")
        for layer, group in _weight_groups(model):
            variables = f.create_group(f"{group}/vars")
            for i, w in enumerate(layer.weights if isinstance(layer, (Dense, Embedding)) else []):
                variables.create_dataset(str(i), data=w)


def _atomic_write(path, write):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save_keras(model, path) -> None:
    """Writes ``model`` as a Keras 3 ``.keras`` file (architecture and weights; Keras loads it
    uncompiled, since fusedense's optimizer state has no Keras layout) or raises ValueError when
    the model has something Keras cannot express the same way."""
    if not isinstance(model, Sequential):
        raise ValueError(f"save: only a Sequential model can be written as a .keras file, got {type(model).__name__} "
                         f"(save it under another name: fusedense's own format)")
    model._built("save")
    config = _keras_config(model)
    weights = _bytes_io.BytesIO()
    _write_weights(model, weights)
    metadata = {"keras_version": KERAS_VERSION, "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")}

    def write(tmp):
        with zipfile.ZipFile(tmp, "w") as archive:
            archive.writestr("metadata.json", json.dumps(metadata))
            archive.writestr("config.json", json.dumps(config))
            archive.writestr("model.weights.h5", weights.getvalue())
    _atomic_write(os.fspath(path), write)


def _save(model, filepath, overwrite=True, **kwargs):
    """``model.save(path)``: a ``.keras`` path gets a Keras 3 file, any other fusedense's format."""
    if os.fspath(filepath).endswith(".keras"):
        return save_keras(model, filepath)
    return _io.save_model(model, filepath)


def _save_weights(model, filepath, overwrite=True):
    """Keras's ``save_weights``: the weights alone in Keras's ``.weights.h5`` layout."""
    filepath = os.fspath(filepath)
    if not filepath.endswith(".weights.h5"):
        raise ValueError(f"filepath: Keras weight files end in .weights.h5, got {filepath!r}")
    model._built("save_weights")
    _atomic_write(filepath, lambda tmp: _write_weights(model, tmp))


def _load_weights(model, filepath):
    """Keras's ``load_weights`` from a ``.weights.h5`` or ``.keras`` file of the same architecture."""
    filepath = os.fspath(filepath)
    model._built("load_weights")
    if filepath.endswith(".keras"):
        with zipfile.ZipFile(filepath) as archive:
            return _read_weights(model, _bytes_io.BytesIO(archive.read("model.weights.h5")), filepath)
    _read_weights(model, filepath, filepath)


def load_model(path, backend=None, compile=True):
    """A saved model: Keras's ``.keras`` files through load_keras, fusedense's own through fusedense.io."""
    if os.fspath(path).endswith(".keras"):
        return load_keras(path, backend=backend, compile=compile)
    return _io.load_model(path, backend=backend)


def _refuse_keras_name(save):
    def mlp_save(model, path):
        if os.fspath(path).endswith(".keras"):
            raise ValueError("save: an MLP is not a Keras model; save it under another name (fusedense's format), "
                             "or build an fd.Sequential to write a .keras file")
        return save(model, path)
    mlp_save.__doc__ = save.__doc__
    return mlp_save


# The model classes cannot import this module (it builds on them), so it gives them their methods.
Sequential.save, Sequential.save_weights, Sequential.load_weights = _save, _save_weights, _load_weights
Sequential.from_keras = staticmethod(from_keras)
MLP.save = _refuse_keras_name(_io.save_model)
_models.load_model = load_model  # keras.models.load_model("m.keras") with `import fusedense as keras`
