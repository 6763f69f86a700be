"""Saving and loading models: one .npz file holding the flat parameters and a JSON record.

The archive has exactly two arrays: ``params`` (the flat buffer, see fusedense.layout) and
``record`` (UTF-8 JSON as uint8) with the format name and version, the architecture, a SHA-256
and, for Sequential models, the layers and compile settings. Version 2's SHA-256 covers the
whole record (architecture, layers, compile settings) and the parameters; version 1's covered
the parameters only, and such files are still read (their architecture is checked like any
other, it is just not covered by the checksum).

Loading treats the file as hostile: it refuses special files without opening them for reading
(no blocking on a FIFO), never unpickles (``allow_pickle=False`` semantics: only plain float and
uint8 arrays are read), checks the zip directory, the .npy headers and the record against one
another before allocating anything (every size is bounded by the file's own size and a
compression-ratio limit), and raises ValueError naming the problem for any malformed record.
Saving writes a temporary file beside the target (the target of a symlink) and renames it
(atomic on POSIX), keeping an existing file's mode; it leaves no temporary file behind.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import secrets
import stat
import struct
import zipfile

import numpy as np

from .activations import ACTIVATIONS, get_activation
from .embedding import EmbeddingMLP
from .layout import QUANT_KINDS, layer_record, make_layout, quantized_layout
from .layers import Activation, Dense, Dropout, Embedding, EmbeddingBag, Flatten
from .models import Sequential
from .network import MLP
from .optimizers import from_config
from .quantized import QuantizedEmbeddingMLP, QuantizedMLP

__all__ = ["save_model", "load_model", "check_output_path", "FORMAT", "VERSION"]

FORMAT = "fusedense-model"
VERSION = 2
READABLE_VERSIONS = (1, 2)

#: The JSON record of any real model is a few kB; a larger one is refused unread.
MAX_RECORD_BYTES = 1 << 20
#: save_model stores members uncompressed (ratio 1); a recompressed archive may shrink float
#: parameters a little, never by 4×. A member claiming more is a decompression bomb.
MAX_COMPRESSION_RATIO = 4
#: Members this small are read whatever their ratio (memory cannot matter below this).
_SMALL_MEMBER = 64 << 10
_MEMBERS = ("params.npy", "record.npy")
_PARAM_DTYPES = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}
_BUFFER_DTYPES = {**_PARAM_DTYPES, "uint8": np.dtype("u1")}  # (a quantized network's buffer: bytes)
_READ_CHUNK = 1 << 20


class _Invalid(ValueError):
    """A malformed file; load_model prefixes the path."""


# --- the checksum ------------------------------------------------------------------------------

def _checksum(record: dict, params: np.ndarray) -> str:
    """Version 2: SHA-256 of the canonical JSON of the record (without its ``sha256``) and the
    parameters' bytes, so that no field can change unnoticed."""
    unsigned = {key: value for key, value in record.items() if key != "sha256"}
    digest = hashlib.sha256(json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    digest.update(b"\0")
    digest.update(memoryview(np.ascontiguousarray(params)).cast("B"))
    return digest.hexdigest()


def _checksum_v1(record: dict, params: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(params)).cast("B")).hexdigest()


_CHECKSUMS = {1: _checksum_v1, 2: _checksum}


# --- saving ------------------------------------------------------------------------------------

def _record(model) -> tuple:
    """(record dict, params) for an MLP or a Sequential model."""
    if isinstance(model, Sequential):
        net = model._built("save")
        extra = {"kind": "Sequential", "name": model.name, "compile": model.compile_config(),
                 "layers": [_layer_record(layer) for layer in model.layers]}
    elif isinstance(model, MLP):
        net, extra = model, {"kind": "MLP"}
    elif type(model) in (QuantizedMLP, QuantizedEmbeddingMLP):
        # the buffer is stored as it is, after a quantized LM's float32 table or the sparse
        # form's first layer (table, column scales, bias), as little-endian bytes; the record
        # holds what the layout is computed from (the architecture, with the table's shape, and
        # the dtype: offsets are never read from a file) and the activation scales
        quantized = {"dtype": model.qdtype, "x_amax": [float(a) for a in model.qlayers["x_amax"]]}
        head = []
        if isinstance(model, QuantizedEmbeddingMLP):
            head = [model.embeddings.astype("<f4", copy=False)]
        elif model.table is not None:
            head = [model.table.astype(model.table.dtype.newbyteorder("<"), copy=False),
                    model.table_scales.astype("<f4", copy=False), model.table_bias.astype("<f4", copy=False)]
            quantized.update(x_amax=[0.0] + quantized["x_amax"], sparse_input=True)
        params = np.concatenate([a.reshape(-1).view(np.uint8) for a in head] + [model.qbuffer])
        record = {"format": FORMAT, "version": VERSION, "architecture": model.architecture(),
                  "n_params": int(params.size), "kind": "QuantizedMLP", "quantized": quantized}
        return _signed(record, params)
    else:
        raise TypeError(f"model: expected a fusedense MLP, EmbeddingMLP, QuantizedMLP, QuantizedEmbeddingMLP or Sequential, got {type(model).__name__}")
    record = {"format": FORMAT, "version": VERSION, "architecture": net.architecture(),
              "n_params": int(net.n_params), **extra}
    return _signed(record, net.params)


def _signed(record, params):
    """(record with its sha256, params); the checksum is over the record as it will be read back
    (tuples become lists, ...)."""
    record = json.loads(json.dumps(record))
    record["sha256"] = _checksum(record, params)
    return record, params


def _layer_record(layer) -> dict:
    """A Sequential layer's constructor arguments (its ``get_config()``); "type" is absent for
    Dense (files of version 1 written before Embedding existed read the same)."""
    if type(layer) is Dense:
        return layer.get_config()
    return {"type": type(layer).__name__, **layer.get_config()}


def check_output_path(path) -> str:
    """``path`` if a model (or any output file) can be written there: its directory exists and is
    writable, and it is not a directory. Raises ValueError saying why not — call it before
    long work (training) whose result would otherwise be lost."""
    path = os.fspath(path)
    if not path:
        raise ValueError("path: expected a file name, got ''")
    target = os.path.realpath(path)  # a symlink is written through: its target must be writable
    directory = os.path.dirname(target)
    if os.path.isdir(target):
        raise ValueError(f"path: {path!r} is a directory; give a file name")
    if not os.path.isdir(directory):
        raise ValueError(f"path: the directory {os.path.dirname(path) or '.'!r} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"path: the directory {os.path.dirname(path) or '.'!r} is not writable")
    return path


def save_model(model, path) -> None:
    """Writes ``model`` (an MLP, EmbeddingMLP, QuantizedMLP, QuantizedEmbeddingMLP or Sequential) to ``path`` (the exact name given; no
    suffix is added) atomically; ``fd.load_model`` reads it back. Also ``model.save(path)``.

    A symlink at ``path`` keeps pointing where it did: its target is replaced. An existing
    file keeps its permission bits; a new one gets the umask's. On any failure, including
    KeyboardInterrupt, no temporary file is left and ``path`` is unchanged."""
    record, params = _record(model)
    target = os.path.realpath(os.fspath(path))
    directory, name = os.path.split(target)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None
    fd, tmp = _open_temporary(directory, name)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            np.savez(f, record=np.frombuffer(json.dumps(record).encode("utf-8"), dtype=np.uint8),
                     params=params)
            f.flush()
            os.fsync(f.fileno())
            if tmp is None:  # the anonymous file gets a name only now, complete, for the rename
                tmp = _temporary_name(directory, name)
                _link_anonymous(f.fileno(), tmp)
        os.replace(tmp, target)
        tmp = None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def _link_anonymous(fd, path):
    """Names the O_TMPFILE file ``fd`` (linkat through /proc/self/fd, following the magic link;
    a src_dir_fd makes CPython call linkat with AT_SYMLINK_FOLLOW rather than link)."""
    descriptors = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(str(fd), path, src_dir_fd=descriptors, follow_symlinks=True)
    finally:
        os.close(descriptors)


def _temporary_name(directory, name):
    return os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")


def _open_temporary(directory, name):
    """(fd, None) for an anonymous file in ``directory`` (Linux O_TMPFILE: a process killed while
    writing leaves nothing behind), else (fd, path) of a new named file. The mode is 0o666
    minus the umask, applied by the kernel (reading the umask is not thread-safe)."""
    if hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd"):
        try:
            return os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666), None
        except OSError:  # a filesystem without O_TMPFILE support
            pass
    tmp = _temporary_name(directory, name)
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), tmp


# --- loading: the archive ----------------------------------------------------------------------

def _open_regular(path):
    """A binary file object for ``path``, refusing directories, FIFOs, devices and sockets
    without blocking (O_NONBLOCK: opening a FIFO would otherwise wait for a writer)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory, not a fusedense model file", os.fspath(path))
        if not stat.S_ISREG(mode):
            kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
            raise _Invalid(f"it is {kind}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


_EOCD, _ZIP64_LOCATOR, _ZIP64_END = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06"


def _check_entry_count(f, size):
    """The zip's end record must list exactly two entries, read before zipfile parses a central
    directory that could hold millions of them."""
    tail_size = min(size, 22 + 0xFFFF)  # the end record, then a comment of at most 64 kB
    f.seek(size - tail_size)
    tail = f.read(tail_size)
    at = tail.rfind(_EOCD)
    if at < 0 or at + 22 > len(tail):
        raise _Invalid("it is not a zip archive (.npz)")
    counts = struct.unpack("<HH", tail[at + 8:at + 12])
    locator = tail[at - 20:at] if at >= 20 else b""
    if locator[:4] == _ZIP64_LOCATOR:  # a zip64 end record (save_model's for files over 4 GB) holds the counts
        f.seek(struct.unpack("<Q", locator[8:16])[0])
        zip64_end = f.read(40)
        if len(zip64_end) < 40 or zip64_end[:4] != _ZIP64_END:
            raise _Invalid("its zip64 end record is missing or corrupted")
        counts = struct.unpack("<QQ", zip64_end[24:40])
    if set(counts) != {len(_MEMBERS)}:
        raise _Invalid(f"the archive lists {max(counts)} members, not a fusedense model's {len(_MEMBERS)}")
    f.seek(0)


def _members(archive, size):
    """{name: ZipInfo} of the two members, each checked against the file's size and the
    compression-ratio limit before a byte is decompressed."""
    infos = archive.infolist()
    names = sorted(info.filename for info in infos)
    if names != sorted(_MEMBERS):
        raise _Invalid(f"it holds {names}, not a fusedense model's {list(_MEMBERS)}")
    for info in infos:
        if info.flag_bits & 0x1:
            raise _Invalid(f"member {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _Invalid(f"member {info.filename!r} uses compression method {info.compress_type} "
                           f"(expected stored or deflated)")
        if info.compress_size > size or (info.compress_type == zipfile.ZIP_STORED
                                         and info.compress_size != info.file_size):
            raise _Invalid(f"member {info.filename!r} declares {info.compress_size} stored bytes "
                           f"for {info.file_size} bytes in a {size}-byte file")
        if info.file_size > max(_SMALL_MEMBER, MAX_COMPRESSION_RATIO * info.compress_size):
            raise _Invalid(f"member {info.filename!r} would expand {info.compress_size} bytes to "
                           f"{info.file_size} (more than {MAX_COMPRESSION_RATIO}× compression)")
    return {info.filename: info for info in infos}


def _npy_header(member, info):
    """(dtype, n_elements, data bytes) from a member's .npy header, refusing anything but a
    1-D C-order array of plain numbers whose data exactly fills the member."""
    try:
        version = np.lib.format.read_magic(member)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = read[version](member)  # numpy bounds the header (10 kB, literal_eval)
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError, struct.error) as exc:
        raise _Invalid(f"member {info.filename!r} has a malformed .npy header: {exc}") from None
    if dtype.hasobject or dtype.kind not in "uf" or dtype.fields is not None or dtype.subdtype is not None:
        raise _Invalid(f"member {info.filename!r} holds dtype {dtype}, not plain numbers (nothing is unpickled)")
    if len(shape) != 1 or shape[0] < 0 or fortran:
        raise _Invalid(f"member {info.filename!r} holds an array of shape {shape}, expected a 1-D array")
    data_bytes = shape[0] * dtype.itemsize
    header_bytes = member.tell()
    if header_bytes + data_bytes != info.file_size:
        raise _Invalid(f"member {info.filename!r} declares {shape[0]} values of {dtype} but holds "
                       f"{info.file_size - header_bytes} data bytes")
    return dtype, shape[0], data_bytes


def _read_into(member, out: np.ndarray, name):
    """Fills ``out`` from the member in bounded chunks (no second copy of the data)."""
    view, position = out.view(np.uint8), 0
    while position < view.size:
        chunk = member.read(min(_READ_CHUNK, view.size - position))
        if not chunk:
            raise _Invalid(f"member {name!r} ends after {position} of {view.size} data bytes")
        view[position:position + len(chunk)] = np.frombuffer(chunk, np.uint8)
        position += len(chunk)


# --- loading: the record -----------------------------------------------------------------------

def _reject_constant(name):
    raise _Invalid(f"the record holds {name}, which JSON does not allow")


def _parse_record(raw: bytes) -> dict:
    try:
        record = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except _Invalid:
        raise
    except RecursionError:
        raise _Invalid("the record is nested too deeply to be a fusedense record") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, ints of > 4300 digits
        raise _Invalid(f"the record is not valid JSON: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise _Invalid(f"it is not a fusedense model file (format "
                       f"{record.get('format') if isinstance(record, dict) else None!r})")
    if type(record.get("version")) is not int or record["version"] not in READABLE_VERSIONS:
        raise _Invalid(f"it has format version {record.get('version')!r}; this fusedense reads versions "
                       f"{', '.join(map(str, READABLE_VERSIONS))}")
    return record


def _keys(name, value, required, optional=()):
    if not isinstance(value, dict):
        raise _Invalid(f"{name}: expected an object, got {type(value).__name__}")
    missing = [key for key in required if key not in value]
    extra = sorted(set(value) - set(required) - set(optional))
    if missing or extra:
        raise _Invalid(f"{name}: " + "; ".join(
            ([f"missing {', '.join(map(repr, missing))}"] if missing else [])
            + ([f"unexpected {', '.join(map(repr, extra))}"] if extra else [])))
    return value


def _count(name, value, low=1):
    if type(value) is not int or value < low:
        raise _Invalid(f"{name}: expected an integer >= {low}, got {value!r}")
    return value


def _list(name, value, length=None):
    if not isinstance(value, list) or (length is not None and len(value) != length):
        expected = "a list" if length is None else f"a list of {length}"
        got = f"{len(value)} items" if isinstance(value, list) else type(value).__name__
        raise _Invalid(f"{name}: expected {expected}, got {got}")
    return value


def _activation_name(name, value):
    if not isinstance(value, str) or value not in ACTIVATIONS:
        raise _Invalid(f"{name}: unknown activation {value!r}; expected one of {', '.join(ACTIVATIONS)}")
    return value


def _alpha(name, value, activation):
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise _Invalid(f"{name}: expected None or a finite number >= 0, got {value!r}")
    if not get_activation(activation).has_alpha:
        raise _Invalid(f"{name}: activation {activation!r} takes no alpha, got {value!r}")
    return value


def _checked_architecture(architecture) -> int:
    """The parameter count of a checked architecture record (computed, nothing allocated)."""
    architecture = _keys("architecture", architecture, ("sizes", "activations", "alphas", "dtype"),
                         ("embedding", "dropout", "dropout_seeds", "penalties"))
    sizes = [_count(f"architecture.sizes[{i}]", s) for i, s in enumerate(_list("architecture.sizes", architecture["sizes"]))]
    n_layers = len(sizes) - (0 if "embedding" in architecture else 1)
    if n_layers < 1:
        raise _Invalid(f"architecture.sizes: too few sizes for a network: {sizes}")
    activations = _list("architecture.activations", architecture["activations"], n_layers)
    for i, activation in enumerate(activations):
        _activation_name(f"architecture.activations[{i}]", activation)
    for i, (alpha, activation) in enumerate(zip(_list("architecture.alphas", architecture["alphas"], n_layers), activations)):
        _alpha(f"architecture.alphas[{i}]", alpha, activation)
    if not isinstance(architecture["dtype"], str) or architecture["dtype"] not in _PARAM_DTYPES:
        raise _Invalid(f"architecture.dtype: expected 'float32' or 'float64', got {architecture['dtype']!r}")
    start = 0
    if "embedding" in architecture:  # the table comes first; the dense layers read its flattened rows
        emb = _keys("architecture.embedding", architecture["embedding"], ("vocab_size", "dim", "context"))
        vocab, dim, context = (_count(f"architecture.embedding.{key}", emb[key]) for key in ("vocab_size", "dim", "context"))
        start, sizes = vocab * dim, [context * dim, *sizes]
    try:
        layout, alphas, n_params = make_layout(sizes, activations, architecture["alphas"], start=start)
        layer_record(layout, alphas, n_params, "architecture", dropout=architecture.get("dropout"),
                     seeds=architecture.get("dropout_seeds"), penalties=architecture.get("penalties"))
        return n_params
    except (TypeError, ValueError) as exc:
        raise _Invalid(f"architecture: {exc}") from None


def _checked_layers(layers, architecture):
    """The Sequential layer list, checked against the architecture before any is built."""
    layers = _list("layers", layers)
    expected_dense = [(s, a) for s, a in zip(architecture["sizes"][0 if "embedding" in architecture else 1:],
                                             architecture["activations"])]
    dense, built = [], []
    for i, layer in enumerate(layers):
        name = f"layers[{i}]"
        kind = layer.get("type", "Dense") if isinstance(layer, dict) else None
        if kind == "Dense":
            _keys(name, layer, ("units", "activation", "name", "kernel_initializer", "alpha"),
                  ("type", "use_bias", "bias_initializer", "kernel_regularizer"))
            dense.append((_count(f"{name}.units", layer["units"]), _activation_name(f"{name}.activation", layer["activation"])))
            _alpha(f"{name}.alpha", layer["alpha"], layer["activation"])
        elif kind == "EmbeddingBag":  # the sparse first layer: linear, no bias
            _keys(name, layer, ("type", "input_dim", "output_dim", "mode", "name", "embeddings_initializer"))
            if i != 0 or layer["input_dim"] != architecture["sizes"][0]:
                raise _Invalid(f"{name}: an EmbeddingBag is the first layer, as wide as the model's input")
            dense.append((_count(f"{name}.output_dim", layer["output_dim"]), "identity"))
        elif kind == "Activation":  # becomes the activation of the linear Dense layer before it
            _keys(name, layer, ("type", "activation", "name"))
            if not dense or dense[-1][1] != "identity":
                raise _Invalid(f"{name}: an Activation layer must follow a linear Dense layer")
            dense[-1] = (dense[-1][0], _activation_name(f"{name}.activation", layer["activation"]))
        elif kind == "Dropout":
            _keys(name, layer, ("type", "rate", "name"), ("seed",))
        elif kind == "Embedding":
            _keys(name, layer, ("type", "vocab_size", "dim", "input_length", "name"))
            emb = architecture.get("embedding")
            # input_length is None when fit found the context length from the data
            if i != 0 or emb is None or (layer["vocab_size"], layer["dim"]) != (emb["vocab_size"], emb["dim"]) \
                    or layer["input_length"] not in (None, emb["context"]):
                raise _Invalid(f"{name}: the Embedding layer does not match the architecture record")
        elif kind == "Flatten":
            _keys(name, layer, ("type", "name"))
        else:
            raise _Invalid(f"{name}: unknown layer type {kind!r}")
        if not isinstance(layer["name"], str):
            raise _Invalid(f"{name}.name: expected a string, got {type(layer['name']).__name__}")
        record = dict(layer)
        cls = {cls.__name__: cls for cls in (Activation, Dense, Dropout, Embedding, EmbeddingBag, Flatten)}[record.pop("type", "Dense")]
        try:
            built.append(cls(**record))
        except (TypeError, ValueError) as exc:
            raise _Invalid(f"{name}: {exc}") from None
    if dense != expected_dense:
        raise _Invalid("layers: the layer list does not match the architecture record")
    return built


def _checked_compile(config):
    if config is None:
        return None
    _keys("compile", config, ("loss", "metrics", "optimizer"), ("weighted_metrics",))
    optimizer = _list("compile.optimizer", config["optimizer"], 2)
    name, settings = optimizer
    if not isinstance(name, str):
        raise _Invalid(f"compile.optimizer: expected a class name, got {name!r}")
    if not isinstance(settings, dict):
        raise _Invalid(f"compile.optimizer settings: expected an object, got {type(settings).__name__}")
    for key, value in settings.items():
        if type(value) not in (int, float, bool) and value is not None:
            raise _Invalid(f"compile.optimizer.{key}: expected a number, got {value!r}")
    loss = config["loss"]
    if isinstance(loss, dict):  # a loss object: {"class_name": ..., "config": {"from_logits": bool}}
        _keys("compile.loss", loss, ("class_name", "config"))
        if not isinstance(loss["class_name"], str) or not isinstance(loss["config"], dict) \
                or any(k != "from_logits" or type(v) is not bool for k, v in loss["config"].items()):
            raise _Invalid("compile.loss: expected a class name and {'from_logits': true/false}")
    elif not isinstance(loss, str):
        raise _Invalid("compile: the loss must be a name or a loss class with from_logits")
    metrics = _list("compile.metrics", config["metrics"]) + _list("compile.weighted_metrics",
                                                                  config.get("weighted_metrics") or [])
    if not all(isinstance(m, str) for m in metrics):
        raise _Invalid("compile: metrics must be names")
    return config


_TOP = ("format", "version", "architecture", "n_params", "sha256", "kind")
_SEQUENTIAL = ("name", "compile", "layers")


def _checked_quantized(record) -> int:
    """The byte count of a quantized network's file buffer (a quantized LM's float32 table or the
    sparse form's first layer, then the quantized layers), from its checked architecture and dtype."""
    architecture = record["architecture"]
    if architecture["dtype"] != "float32":
        raise _Invalid("architecture: a quantized network computes in float32, got dtype "
                       f"{architecture['dtype']!r}")
    sizes, table_bytes = architecture["sizes"], 0
    if "embedding" in architecture:
        emb = architecture["embedding"]
        sizes, table_bytes = [emb["context"] * emb["dim"], *sizes], 4 * emb["vocab_size"] * emb["dim"]
    quantized = _keys("quantized", record["quantized"], ("dtype", "x_amax"), ("sparse_input",))
    if not isinstance(quantized["dtype"], str) or quantized["dtype"] not in QUANT_KINDS:
        raise _Invalid(f"quantized.dtype: expected 'int8' or 'bf16', got {quantized['dtype']!r}")
    amaxes = _list("quantized.x_amax", quantized["x_amax"], len(sizes) - 1)
    layered = sizes
    if "sparse_input" in quantized:  # the first layer is a table: codes, then n scales and n biases
        if quantized["sparse_input"] is not True or "embedding" in architecture or len(sizes) < 3:
            raise _Invalid("quantized.sparse_input: expected true, for a network of two or more layers without "
                           "an embedding")
        width = 1 if quantized["dtype"] == "int8" else 2
        table_bytes, layered = sizes[0] * sizes[1] * width + 8 * sizes[1], sizes[1:]
    for i, amax in enumerate(amaxes):
        if type(amax) not in (int, float) or not (0 <= amax < 3.4e38) or (amax and quantized["dtype"] != "int8"):
            raise _Invalid(f"quantized.x_amax[{i}]: expected a finite number >= 0 (0 for bf16), got {amax!r}")
    return table_bytes + quantized_layout(layered, QUANT_KINDS[quantized["dtype"]])[1]


def _check_record(record) -> int:
    """The parameter count (a quantized network's: bytes) of a record whose every field was checked."""
    kind = record.get("kind")
    if kind not in ("MLP", "Sequential", "QuantizedMLP"):
        raise _Invalid(f"kind: unknown model kind {kind!r}")
    _keys("record", record, _TOP + {"Sequential": _SEQUENTIAL, "QuantizedMLP": ("quantized",)}.get(kind, ()))
    n_params = _checked_architecture(record["architecture"])
    if kind == "QuantizedMLP":
        n_params = _checked_quantized(record)
    if record["n_params"] != n_params or type(record["n_params"]) is not int:
        raise _Invalid(f"n_params: the record says {record['n_params']!r}, the architecture needs {n_params}")
    if not isinstance(record["sha256"], str):
        raise _Invalid("sha256: expected a hex string")
    if kind == "Sequential":
        if not isinstance(record["name"], str):
            raise _Invalid(f"name: expected a string, got {type(record['name']).__name__}")
        _checked_compile(record["compile"])
        _checked_layers(record["layers"], record["architecture"])
    return n_params


def _read(path, backend):
    """(record, network with the file's parameters), or a ValueError naming what is wrong."""
    with _open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            _check_entry_count(f, size)
            archive = zipfile.ZipFile(f)
        except _Invalid:
            raise
        except Exception as exc:  # zipfile.BadZipFile, struct.error, EOFError, ...
            raise _Invalid(f"it is not a readable zip archive (truncated, corrupted or another format): "
                           f"{type(exc).__name__}: {exc}") from None
        with archive:
            infos = _members(archive, size)
            record_info = infos["record.npy"]
            if record_info.file_size > MAX_RECORD_BYTES:
                raise _Invalid(f"its record has {record_info.file_size} bytes (at most {MAX_RECORD_BYTES})")
            with _member(archive, record_info) as member:
                dtype, count, data_bytes = _guarded(_npy_header, member, record_info)
                if dtype != np.uint8:
                    raise _Invalid(f"the record is not UTF-8 JSON bytes (dtype {dtype})")
                raw = _read_member(member, data_bytes, record_info.filename)
            record = _parse_record(raw)
            n_params = _check_record(record)
            params_info = infos["params.npy"]
            quantized = record["kind"] == "QuantizedMLP"
            with _member(archive, params_info) as member:
                dtype, count, _ = _guarded(_npy_header, member, params_info)
                architecture = record["architecture"]
                expected = "uint8" if quantized else architecture["dtype"]
                if dtype != _BUFFER_DTYPES[expected] or count != n_params:
                    raise _Invalid(f"the parameters ({count} values of {dtype}) do not match the architecture "
                                   f"({n_params} values of {expected}); the file was altered")
                # every size is now bounded by the file's: build the network, then fill it in place
                if quantized:  # (the network is built from the buffer once its checksum is verified)
                    params = np.empty(n_params, np.uint8)
                else:
                    cls = EmbeddingMLP if "embedding" in architecture else MLP
                    net = cls.from_architecture(architecture, backend=backend)  # checked: errors here are the backend's
                    params = net.params
                _guarded(_read_into, member, params, params_info.filename)
                _guarded(member.read, 1)  # at the end: zipfile checks the CRC-32
    if _CHECKSUMS[record["version"]](record, params) != record["sha256"]:
        raise _Invalid("the SHA-256 does not match the record and parameters; the file was altered")
    if quantized:
        architecture, qrecord = record["architecture"], record["quantized"]
        try:
            if "embedding" in architecture:  # the table's bytes, then the buffer (copied apart)
                emb = architecture["embedding"]
                table_bytes = 4 * emb["vocab_size"] * emb["dim"]
                table = params[:table_bytes].view("<f4").astype(np.float32).reshape(emb["vocab_size"], emb["dim"])
                net = QuantizedEmbeddingMLP.from_buffer(architecture, qrecord["dtype"], qrecord["x_amax"],
                                                        params[table_bytes:].copy(), backend, embeddings=table)
            elif qrecord.get("sparse_input"):  # the table, its scales and biases, then the buffer
                k, n = architecture["sizes"][:2]
                code = np.dtype("<i1" if qrecord["dtype"] == "int8" else "<u2")
                at = k * n * code.itemsize
                table = (params[:at].view(code).astype(code.newbyteorder("=")).reshape(k, n),
                         params[at:at + 4 * n].view("<f4").astype(np.float32),
                         params[at + 4 * n:at + 8 * n].view("<f4").astype(np.float32))
                net = QuantizedMLP.from_buffer(architecture, qrecord["dtype"], qrecord["x_amax"],
                                               params[at + 8 * n:].copy(), backend, table=table)
            else:
                net = QuantizedMLP.from_buffer(architecture, qrecord["dtype"], qrecord["x_amax"], params, backend)
        except (TypeError, ValueError) as exc:
            raise _Invalid(f"quantized: {exc}") from None
    return record, net


def _guarded(function, *args):
    """Runs a read of compressed data, turning zip and zlib errors into _Invalid."""
    try:
        return function(*args)
    except _Invalid:
        raise
    except Exception as exc:  # zipfile.BadZipFile (bad CRC), zlib.error, EOFError, ...
        raise _Invalid(f"it is corrupted: {type(exc).__name__}: {exc}") from None


def _member(archive, info):
    return _guarded(archive.open, info)


def _read_member(member, n_bytes, name):
    out = np.empty(n_bytes, np.uint8)
    _guarded(_read_into, member, out, name)
    _guarded(member.read, 1)
    return out.tobytes()


def load_model(path, backend=None):
    """The model saved at ``path``: a Sequential (compiled again if it was), an MLP or a QuantizedMLP.

    Raises FileNotFoundError / PermissionError / IsADirectoryError for the path itself and
    ValueError naming the problem for any other file that is not an intact fusedense model."""
    try:
        record, net = _read(path, backend)
        if record["kind"] in ("MLP", "QuantizedMLP"):
            return net
        return _sequential(record, net, backend)
    except _Invalid as exc:
        raise ValueError(f"path: {os.fspath(path)!r} is not a fusedense model file: {exc}") from None


def _sequential(record, net, backend):
    layers = _checked_layers(record["layers"], record["architecture"])
    try:
        model = Sequential(layers, name=record["name"], dtype=net.dtype, backend=backend)
        model.build(net.n_inputs)
    except (TypeError, ValueError) as exc:
        raise _Invalid(f"layers: {exc}") from None
    # a Dropout without a seed draws one at build: the saved seeds are the model's
    built, saved = model.network.architecture(), net.architecture()
    built.pop("dropout_seeds", None)
    if built != {k: v for k, v in saved.items() if k != "dropout_seeds"}:
        raise _Invalid("the layer list does not match the architecture record; the file was altered")
    model.network.set_dropout(net.dropout, net.dropout_seeds)
    model.network.params[...] = net.params
    config = record["compile"]
    if config:
        try:
            model.compile(optimizer=from_config(*config["optimizer"]), loss=config["loss"], metrics=config["metrics"],
                          weighted_metrics=config.get("weighted_metrics") or None)
        except (TypeError, ValueError) as exc:
            raise _Invalid(f"compile: {exc}") from None
    return model


# The model classes cannot import this module (it builds on them), so it gives them their method.
MLP.save = Sequential.save = QuantizedMLP.save = save_model
