"""safetensors reading and writing for the project's Python scripts (PyTorch twins, converters, benches).

Python standard library + numpy (torch only when torch tensors are written), so it runs on Debian's
/usr/bin/python3 with python3-numpy and python3-torch 1.13 and no `safetensors` package. The format
(the same one packages/kernels/src/nn/safetensors.ts reads and writes): an 8-byte little-endian header
length, a JSON header mapping each tensor name to {dtype, shape, data_offsets} (plus an optional
"__metadata__" object of strings), then the raw little-endian data.

Scripts import it by path, relative to their own file, e.g. from packages/diffusion/reference/:

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "kernels", "python"))
    import cxr_safetensors

read(path) -> (OrderedDict name -> numpy array, metadata dict)
    Every dtype below; BF16 widens to float32 (numpy has no bfloat16). Arrays are writable copies.
    A malformed file raises SafetensorsError naming the file and, where it applies, the tensor.
write(path, tensors, metadata=None)
    numpy arrays or torch tensors, each kept in its own dtype (torch.bfloat16 as BF16); names sorted;
    metadata values written as strings; atomic (temporary file, fsync, rename), so a failed write
    leaves an existing file untouched.
"""
import json
import os
import struct
from collections import OrderedDict

import numpy as np

# safetensors dtype name -> little-endian numpy dtype (BF16 is handled apart).
DTYPES = OrderedDict(
    [
        ("F64", np.dtype("<f8")),
        ("F32", np.dtype("<f4")),
        ("F16", np.dtype("<f2")),
        ("I64", np.dtype("<i8")),
        ("I32", np.dtype("<i4")),
        ("I16", np.dtype("<i2")),
        ("I8", np.dtype("i1")),
        ("U8", np.dtype("u1")),
        ("BOOL", np.dtype("?")),
    ]
)
BF16_BYTES = 2


class SafetensorsError(ValueError):
    """A file that is not a well-formed safetensors file, or a tensor that cannot be written."""


def _itemsize(dtype):
    return BF16_BYTES if dtype == "BF16" else DTYPES[dtype].itemsize


def read(path):
    """Returns (OrderedDict of name -> numpy array in file order, metadata dict)."""
    with open(path, "rb") as handle:
        data = handle.read()
    if len(data) < 8:
        raise SafetensorsError(f"{path}: {len(data)} bytes, shorter than the 8-byte header length")
    (header_length,) = struct.unpack("<Q", data[:8])
    if 8 + header_length > len(data):
        raise SafetensorsError(f"{path}: header of {header_length} bytes runs past the end of the file ({len(data)} bytes)")
    try:
        header = json.loads(data[8 : 8 + header_length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SafetensorsError(f"{path}: header is not JSON ({error})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise SafetensorsError(f"{path}: __metadata__ is a JSON {type(metadata).__name__}, not an object")
    base = 8 + header_length
    tensors = OrderedDict()
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise SafetensorsError(f"{path}: tensor {name}: header entry is not an object")
        dtype = entry.get("dtype")
        if dtype != "BF16" and dtype not in DTYPES:
            raise SafetensorsError(f"{path}: tensor {name} has unsupported dtype {dtype!r}")
        shape = entry.get("shape")
        offsets = entry.get("data_offsets")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise SafetensorsError(f"{path}: tensor {name} has shape {shape!r}, not a list of sizes")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise SafetensorsError(f"{path}: tensor {name} has data_offsets {offsets!r}, not [begin, end]")
        begin, end = offsets
        if base + end > len(data):
            raise SafetensorsError(f"{path}: tensor {name} runs past the end of the file (truncated?)")
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * _itemsize(dtype):
            raise SafetensorsError(
                f"{path}: tensor {name} has {end - begin} bytes but {dtype} {shape} needs {count * _itemsize(dtype)}"
            )
        chunk = data[base + begin : base + end]
        if dtype == "BF16":
            array = (np.frombuffer(chunk, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(chunk, dtype=DTYPES[dtype])
        tensors[name] = array.reshape(tuple(shape)).copy()
    return tensors, metadata


def _encode(name, value):
    """(dtype name, shape, raw little-endian bytes) of a numpy array or torch tensor."""
    if hasattr(value, "detach") and hasattr(value, "dtype") and not isinstance(value, np.ndarray):
        import torch  # only when a torch tensor is written

        tensor = value.detach().contiguous().cpu()
        if tensor.dtype == torch.bfloat16:
            # numpy has no bfloat16: write the raw 16-bit words.
            return "BF16", list(tensor.shape), tensor.view(torch.int16).numpy().astype("<i2").tobytes()
        value = tensor.numpy()
    # tobytes() is C order whatever the layout (np.ascontiguousarray would turn a scalar into shape [1]).
    array = np.asarray(value)
    for dtype, numpy_dtype in DTYPES.items():
        if array.dtype.kind == numpy_dtype.kind and array.dtype.itemsize == numpy_dtype.itemsize:
            return dtype, list(array.shape), array.astype(numpy_dtype, copy=False).tobytes()
    raise SafetensorsError(f"tensor {name}: dtype {array.dtype} cannot be written (one of {', '.join(DTYPES)}, BF16)")


def write(path, tensors, metadata=None):
    """Writes {name: array or tensor} atomically; metadata values become strings."""
    header = OrderedDict()
    if metadata:
        header["__metadata__"] = {str(key): str(value) for key, value in metadata.items()}
    payloads = []
    offset = 0
    for name in sorted(tensors):
        dtype, shape, raw = _encode(name, tensors[name])
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        payloads.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Pad the header with spaces so that the data starts 8-byte aligned.
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "wb") as handle:
            handle.write(struct.pack("<Q", len(text)))
            handle.write(text)
            for raw in payloads:
                handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
