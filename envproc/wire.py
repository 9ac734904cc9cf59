"""The two codecs a client may pick: JSON (the default, numpy arrays as nested lists) and
msgpack, where a numpy array travels as its raw bytes in one map any msgpack library reads:

    {"dtype": "uint8", "shape": [84, 84, 3], "data": <bin: the elements, C order, little-endian>}

`dtype` is numpy's name for a bool, integer or float type ("bool", "int8" ... "uint64",
"float16", "float32", "float64"); arrays of other types travel as nested lists, as in JSON.
"""

import math
from typing import Any

import msgspec
import numpy as np

JSON = "application/json"
MSGPACK = "application/msgpack"
ARRAY_KEYS = frozenset({"dtype", "shape", "data"})
_KINDS = "biuf"  # bool, signed, unsigned, float: the types whose bytes mean the same in any language


def _array(a: np.ndarray) -> Any:
    if a.dtype.kind not in _KINDS:
        return a.tolist()
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    # msgspec writes the buffer itself as bin: no copy when the array is already C-contiguous
    flat = np.ascontiguousarray(a).reshape(-1)  # 1-d: a view of no elements in 2-d cannot be cast to bytes
    return {"dtype": a.dtype.name, "shape": list(a.shape), "data": flat.data.cast("B")}


def _msgpack_hook(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return _array(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return repr(obj)  # an info value msgpack cannot hold still reaches the client, as text


def _json_hook(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return repr(obj)


encode_json = msgspec.json.Encoder(enc_hook=_json_hook).encode
encode_msgpack = msgspec.msgpack.Encoder(enc_hook=_msgpack_hook).encode


def encode(value: Any, binary: bool) -> bytes:
    """`value` in msgpack if `binary`, else in JSON."""
    return encode_msgpack(value) if binary else encode_json(value)


class BadArray(ValueError):
    """A map with an array's keys whose values do not make an array."""


def to_array(m: dict[str, Any]) -> np.ndarray:
    """The array one msgpack array map holds (a writable copy: the client may change it)."""
    dtype, shape, data = m["dtype"], m["shape"], m["data"]
    try:
        dt = np.dtype(dtype) if isinstance(dtype, str) else None
    except TypeError:
        dt = None
    if dt is None or dt.kind not in _KINDS:
        raise BadArray(f"an array's dtype must name a bool, integer or float type, not {dtype!r}")
    if not (isinstance(shape, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                            for n in shape)):
        raise BadArray(f"an array's shape must be a list of sizes, not {shape!r}")
    if not isinstance(data, bytes):
        raise BadArray("an array's data must be bin (its raw bytes)")
    dt = dt.newbyteorder("<")
    size = math.prod(shape) * dt.itemsize  # Python integers: a huge shape cannot wrap around
    if size != len(data):
        raise BadArray(f"an array of shape {shape} and dtype {dtype} takes {size} bytes, not {len(data)}")
    try:
        return np.frombuffer(data, dtype=dt).reshape(shape).astype(dt.newbyteorder("="))
    except (ValueError, TypeError) as exc:  # no elements but a shape numpy cannot hold
        raise BadArray(f"an array of shape {shape} cannot be made: {exc}") from None


def is_array(m: dict[str, Any]) -> bool:
    """A map is an array's when it has exactly its three keys, with a string, a list and bin:
    a Dict value with those keys holds other values (arrays there are maps, not bin)."""
    return (m.keys() == ARRAY_KEYS and isinstance(m["dtype"], str) and isinstance(m["shape"], list)
            and isinstance(m["data"], bytes))


def arrays(value: Any) -> Any:
    """A decoded msgpack value with each array map made a numpy array."""
    if isinstance(value, dict):
        if is_array(value):
            return to_array(value)
        return {k: arrays(v) for k, v in value.items()}
    if isinstance(value, list):
        return [arrays(v) for v in value]
    return value
