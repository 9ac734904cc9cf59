"""Which codec a request speaks: JSON unless it asks for msgpack (envproc/wire.py) in Accept
(replies, errors included) or Content-Type (its body)."""

from functools import lru_cache
from typing import Any

from litestar import Request, Response

from envproc.wire import JSON, MSGPACK, encode, encode_msgpack

MSGPACK_NAMES = frozenset({"application/msgpack", "application/x-msgpack", "application/vnd.msgpack"})


@lru_cache(maxsize=256)  # clients send the same few headers again and again
def wants_msgpack(accept: str | bytes | None) -> bool:
    """Whether `Accept` asks for msgpack: listed with q > 0, and not below application/json."""
    if not accept:
        return False
    text = accept.decode("latin-1") if isinstance(accept, bytes) else accept
    msgpack_q, json_q = 0.0, 0.0
    for part in text.split(","):
        name, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        name = name.lower()
        if name in MSGPACK_NAMES:
            msgpack_q = max(msgpack_q, q)
        elif name == JSON:
            json_q = max(json_q, q)
    return msgpack_q > 0 and msgpack_q >= json_q


def is_msgpack(content_type: str | bytes | None) -> bool:
    """Whether the body's `Content-Type` says msgpack."""
    if not content_type:
        return False
    text = content_type.decode("latin-1") if isinstance(content_type, bytes) else content_type
    return text.partition(";")[0].strip().lower() in MSGPACK_NAMES


def media_type(binary: bool) -> str:
    return MSGPACK if binary else JSON


def binary_reply(request: Request) -> bool:
    return wants_msgpack(request.headers.get("accept"))


def binary_body(request: Request) -> bool:
    return is_msgpack(request.headers.get("content-type"))


def answer(request: Request, value: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """`value` in the codec the request asked for."""
    binary = binary_reply(request)
    return Response(encode(value, binary), status_code=status_code, media_type=media_type(binary), headers=headers)


_STATUS_KEY = encode_msgpack("status")


def with_status(status: int, obj: bytes, binary: bool) -> bytes:
    """An encoded object (a reply of the env, or an error) with `status` put first among its keys,
    without decoding it."""
    if not binary:
        return b'{"status":%d,' % status + obj[1:] if obj != b"{}" else b'{"status":%d}' % status
    # a msgpack map of up to 15 keys begins with one byte, 0x80 + its count (the env's replies
    # have at most 6, an error 1): one more key, and "status" and its value before the rest
    assert 0x80 <= obj[0] < 0x8F
    return bytes((obj[0] + 1,)) + _STATUS_KEY + encode_msgpack(status) + obj[1:]
