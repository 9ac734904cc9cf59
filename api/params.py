"""Request bodies and headers read as the seed reads them: pure functions over bytes."""

import math
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta

from supervisor.asked import NONE_ASKED, AskedLimits
from supervisor.errors import BadRequest
from supervisor.restart import RestartPolicy

T = TypeVar("T", bound=msgspec.Struct)

NOT_JSON = "Request is not a valid json"
NOT_MSGPACK = "Request is not valid msgpack"
MAX_BODY = 10_000_000  # bytes; Litestar's default, applied to the step fast path too


Seed = Annotated[int, Meta(ge=0, le=2**63 - 1)]  # as numpy takes seeds, within what msgspec checks


class CreateBody(msgspec.Struct):
    env_id: str | None = None
    seed: Seed | None = None
    kwargs: dict[str, Any] = {}
    restart: RestartPolicy | None = None
    limits: AskedLimits = NONE_ASKED


class ResetBody(msgspec.Struct):
    seed: Seed | None = None
    options: dict[str, Any] | None = None


class MonitorStartBody(msgspec.Struct):
    directory: str | None = None
    force: bool = False
    resume: bool = False
    video_callable: int | bool = False


class UploadBody(msgspec.Struct):
    training_dir: str | None = None
    api_key: str | None = None
    algorithm_id: str | None = None


class NestedTooDeeply(BadRequest):
    """JSON, but nested deeper than the decoder goes: refused even where a body may be ignored."""


def _absent(value: Any) -> bool:
    return value is None or value == "" or value == []


def parse_object(raw: bytes, msgpack: bool = False) -> dict[str, Any]:
    """A JSON (or msgpack) object body; empty or `null` is `{}`."""
    if not (raw if msgpack else raw.strip()):
        return {}
    what = NOT_MSGPACK if msgpack else NOT_JSON
    try:
        obj = _decode_msgpack(raw) if msgpack else msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise BadRequest(what) from None
    except RecursionError:
        raise NestedTooDeeply(f"{what}: it is nested too deeply") from None
    if obj is None:
        return {}
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise BadRequest("Request is not a msgpack map with string keys" if msgpack else f"{what} object")
    return obj


def _no_ext(code: int, data: memoryview) -> Any:
    raise BadRequest(f"Request holds a msgpack extension value (type {code}), which this server does not read")


_decode_msgpack = msgspec.msgpack.Decoder(ext_hook=_no_ext).decode


def parse_body(raw: bytes, kind: type[T], msgpack: bool = False) -> T:
    """Decode a JSON (or msgpack) object body into `kind`, ignoring unknown keys.

    As in the seed, a parameter given as null, "" or [] counts as not given.
    """
    obj = parse_object(raw, msgpack)
    present = {k: v for k, v in obj.items() if k in kind.__struct_fields__ and not _absent(v)}
    try:
        return msgspec.convert(present, kind, strict=False)  # lax: "true"/"false" are booleans too
    except msgspec.ValidationError as exc:
        raise BadRequest(f"Invalid request parameter: {exc}") from None


def lenient_body(raw: bytes, kind: type[T], msgpack: bool = False) -> T:
    """For routes that ignore a body they cannot read (old clients send anything to reset); a
    JSON object with a bad parameter is still refused, not read as no parameter."""
    try:
        parse_object(raw, msgpack)
    except NestedTooDeeply:
        raise
    except BadRequest:
        return kind()
    return parse_body(raw, kind, msgpack)


def required(value: Any, name: str) -> Any:
    if _absent(value):
        raise BadRequest(f"A required request parameter '{name}' was not provided")
    return value


TIMEOUT_HEADER = "X-Request-Timeout"
TIMEOUT_HEADER_KEY = TIMEOUT_HEADER.lower().encode()  # as ASGI scopes hold header names


def request_timeout(header: str | bytes | None, default: float, cap: float) -> float:
    """The timeout one request runs under: the client's header, never above the cap, or else the
    server's own default (the admin's choice, which the cap on clients does not cut)."""
    if header is None:
        return default
    try:
        value = float(header)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        shown = header.decode(errors="replace") if isinstance(header, bytes) else header
        raise BadRequest(f"{TIMEOUT_HEADER} must be a finite positive number of seconds, not {shown!r}")
    return min(value, cap)
