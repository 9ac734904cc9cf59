"""Gymnasium spaces and values to and from JSON: one small function per space type."""

from functools import singledispatch
from typing import Any

import msgspec
import numpy as np
from gymnasium import spaces

BIG = 1e100  # the seed writes +-inf as +-1e100: plain JSON has no Infinity


class BadValue(ValueError):
    """A client's JSON value does not fit the space."""


def _finite(a: np.ndarray) -> list[float]:
    flat = np.asarray(a, dtype=np.float64).ravel()
    return np.clip(np.nan_to_num(flat, posinf=BIG, neginf=-BIG), -BIG, BIG).tolist()


# --- describe: the space as JSON properties, with Gymnasium's own names ---


@singledispatch
def describe(space: spaces.Space) -> dict[str, Any]:
    return {"name": type(space).__name__, "shape": list(space.shape or ()), "dtype": str(space.dtype)}


@describe.register
def _(space: spaces.Discrete) -> dict[str, Any]:
    return {"name": "Discrete", "n": int(space.n), "start": int(space.start)}


@describe.register
def _(space: spaces.Box) -> dict[str, Any]:
    return {
        "name": "Box",
        "shape": list(space.shape),
        "low": _finite(space.low),
        "high": _finite(space.high),
        "dtype": str(space.dtype),
    }


@describe.register
def _(space: spaces.MultiDiscrete) -> dict[str, Any]:
    return {
        "name": "MultiDiscrete",
        "nvec": space.nvec.tolist(),
        "start": space.start.tolist(),
        "shape": list(space.shape),
        "dtype": str(space.dtype),
    }


@describe.register
def _(space: spaces.MultiBinary) -> dict[str, Any]:
    n = space.n
    return {"name": "MultiBinary", "n": n if isinstance(n, int) else list(np.asarray(n).tolist()), "shape": list(space.shape)}


@describe.register
def _(space: spaces.Tuple) -> dict[str, Any]:
    return {"name": "Tuple", "spaces": [describe(s) for s in space.spaces]}


@describe.register
def _(space: spaces.Dict) -> dict[str, Any]:
    return {"name": "Dict", "spaces": {k: describe(s) for k, s in space.spaces.items()}}


@describe.register
def _(space: spaces.Text) -> dict[str, Any]:
    return {"name": "Text", "min_length": space.min_length, "max_length": space.max_length, "characters": space.characters}


@describe.register
def _(space: spaces.Sequence) -> dict[str, Any]:
    return {"name": "Sequence", "feature_space": describe(space.feature_space), "stack": space.stack}


@describe.register
def _(space: spaces.Graph) -> dict[str, Any]:
    edge = None if space.edge_space is None else describe(space.edge_space)
    return {"name": "Graph", "node_space": describe(space.node_space), "edge_space": edge}


@describe.register
def _(space: spaces.OneOf) -> dict[str, Any]:
    return {"name": "OneOf", "spaces": [describe(s) for s in space.spaces]}


# --- to_json: a value of the space as plain JSON data (or, with `arrays`, numpy arrays kept
# whole, for msgpack's raw bytes: envproc/wire.py) ---


@singledispatch
def to_json(space: spaces.Space, value: Any, arrays: bool = False) -> Any:
    return space.to_jsonable([value])[0]


@to_json.register
def _(space: spaces.Discrete, value: Any, arrays: bool = False) -> Any:
    return int(value)


@to_json.register(spaces.Box)
@to_json.register(spaces.MultiDiscrete)
@to_json.register(spaces.MultiBinary)
def _(space: spaces.Space, value: Any, arrays: bool = False) -> Any:
    return np.asarray(value) if arrays else np.asarray(value).tolist()


@to_json.register
def _(space: spaces.Tuple, value: Any, arrays: bool = False) -> Any:
    return [to_json(s, v, arrays) for s, v in zip(space.spaces, value, strict=True)]


@to_json.register
def _(space: spaces.Dict, value: Any, arrays: bool = False) -> Any:
    return {k: to_json(s, value[k], arrays) for k, s in space.spaces.items()}


@to_json.register
def _(space: spaces.Text, value: Any, arrays: bool = False) -> Any:
    return str(value)


@to_json.register
def _(space: spaces.Sequence, value: Any, arrays: bool = False) -> Any:
    return [to_json(space.feature_space, v, arrays) for v in value]


@to_json.register
def _(space: spaces.OneOf, value: Any, arrays: bool = False) -> Any:
    index, sub = value
    return [int(index), to_json(space.spaces[int(index)], sub, arrays)]


# --- from_json: a client's JSON value as a value of the space ---


@singledispatch
def from_json(space: spaces.Space, x: Any) -> Any:
    try:
        return space.from_jsonable([x])[0]
    except Exception as exc:
        raise BadValue(f"{x!r} is not a value of {space}: {exc}") from None


@from_json.register
def _(space: spaces.Discrete, x: Any) -> Any:
    if isinstance(x, np.ndarray) and x.size == 1 and x.dtype.kind in "iu":  # msgpack's raw-bytes array
        x = int(x.reshape(-1)[0])
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    if isinstance(x, list) and len(x) == 1:  # some clients wrap a scalar action
        return from_json(space, x[0])
    if isinstance(x, bool) or not isinstance(x, int):
        raise BadValue(f"{x!r} is not an integer; {space} takes one")
    if not space.start <= x < space.start + space.n:
        raise BadValue(f"{x} is outside {space}")
    return x


@from_json.register(spaces.Box)
@from_json.register(spaces.MultiDiscrete)
@from_json.register(spaces.MultiBinary)
def _(space: spaces.Space, x: Any) -> Any:
    try:
        a = np.asarray(x, dtype=space.dtype)
        if a.shape != space.shape:
            a = a.reshape(space.shape)  # a flat list of the right size is accepted, as numpy would
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadValue(f"value does not fit {space}: {exc}") from None
    if not isinstance(space, spaces.Box) and not space.contains(a):
        raise BadValue(f"{x!r} is outside {space}")
    return a


@from_json.register
def _(space: spaces.Tuple, x: Any) -> Any:
    if not isinstance(x, list) or len(x) != len(space.spaces):
        raise BadValue(f"{space} takes a list of {len(space.spaces)} values")
    return tuple(from_json(s, v) for s, v in zip(space.spaces, x))


@from_json.register
def _(space: spaces.Dict, x: Any) -> Any:
    if not isinstance(x, dict) or x.keys() != space.spaces.keys():
        raise BadValue(f"{space} takes an object with the keys {sorted(space.spaces)}")
    return {k: from_json(s, x[k]) for k, s in space.spaces.items()}


@from_json.register
def _(space: spaces.Text, x: Any) -> Any:
    if not isinstance(x, str):
        raise BadValue(f"{x!r} is not a string; {space} takes one")
    return x


@from_json.register
def _(space: spaces.Sequence, x: Any) -> Any:
    if not isinstance(x, list):
        raise BadValue(f"{space} takes a list")
    items = tuple(from_json(space.feature_space, v) for v in x)
    return np.stack(items) if space.stack and items else items


@from_json.register
def _(space: spaces.OneOf, x: Any) -> Any:
    if not (isinstance(x, list) and len(x) == 2 and isinstance(x[0], int) and 0 <= x[0] < len(space.spaces)):
        raise BadValue(f"{space} takes [index, value]")
    return (x[0], from_json(space.spaces[x[0]], x[1]))


def parse_scalar(text: str) -> Any:
    """A value from a URL segment: JSON if it parses (`3`, `[1,2]`), else the string itself."""
    try:
        return msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError):
        return text


# --- build: a space again from its description (what a client does with the space routes) ---


def _unbig(values: list[float], shape: list[int]) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).reshape(shape)
    return np.where(a >= BIG, np.inf, np.where(a <= -BIG, -np.inf, a))


def build(desc: dict[str, Any]) -> spaces.Space:
    """The space `describe` described; `build(describe(s)) == s` for every space type."""
    name = desc["name"]
    if name == "Discrete":
        return spaces.Discrete(desc["n"], start=desc.get("start", 0))
    if name == "Box":
        dtype = np.dtype(desc.get("dtype", "float32"))
        low, high = _unbig(desc["low"], desc["shape"]), _unbig(desc["high"], desc["shape"])
        if dtype.kind in "iu":  # integer boxes: bounds as the dtype holds them
            info = np.iinfo(dtype)
            low, high = np.clip(low, info.min, info.max), np.clip(high, info.min, info.max)
        return spaces.Box(low.astype(dtype), high.astype(dtype), tuple(desc["shape"]), dtype)
    if name == "MultiDiscrete":
        return spaces.MultiDiscrete(desc["nvec"], dtype=desc.get("dtype", "int64"), start=desc.get("start"))
    if name == "MultiBinary":
        return spaces.MultiBinary(desc["n"])
    if name == "Tuple":
        return spaces.Tuple([build(d) for d in desc["spaces"]])
    if name == "Dict":
        return spaces.Dict({k: build(d) for k, d in desc["spaces"].items()})
    if name == "Text":
        return spaces.Text(desc["max_length"], min_length=desc["min_length"], charset=desc["characters"])
    if name == "Sequence":
        return spaces.Sequence(build(desc["feature_space"]), stack=desc.get("stack", False))
    if name == "OneOf":
        return spaces.OneOf([build(d) for d in desc["spaces"]])
    if name == "Graph":
        edge = desc.get("edge_space")
        return spaces.Graph(build(desc["node_space"]), None if edge is None else build(edge))
    raise ValueError(f"no space is called {name!r}")
