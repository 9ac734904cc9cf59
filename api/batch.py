"""`POST /v1/batch/step`: many of the caller's envs stepped at once, each answered on its own."""

import asyncio
from typing import Any

import msgspec
from litestar import Request, Response, post

from api.codec import binary_body, binary_reply, media_type, with_status
from api.errors import error_body, status_of
from api.openapi import body, errors
from api.params import NOT_JSON, NOT_MSGPACK, TIMEOUT_HEADER
from api.routes import caller_timeout, view
from envproc.protocol import Step
from envproc.wire import encode_msgpack
from supervisor.errors import BadRequest, SupervisorError
from supervisor.view import CallerView

MAX_STEPS = 1024  # a batch's entries; each is a request to an env


class BatchEntry(msgspec.Struct):
    instance_id: str
    action: msgspec.Raw  # handed to the env as its step body's action, unread here


class BatchBody(msgspec.Struct):
    steps: list[BatchEntry]
    autoreset: bool = False  # an env whose episode ended is reset by its next step instead


class BatchResult(msgspec.Struct):
    """A step's reply as the step route gives it, with its status; or the status and message
    of the error the step route would give."""

    status: int
    message: str | None = None
    observation: Any = None
    reward: float | None = None
    done: bool | None = None
    info: dict[str, Any] | None = None
    terminated: bool | None = None
    truncated: bool | None = None


class BatchReply(msgspec.Struct):
    results: list[BatchResult]


_decode = msgspec.json.Decoder(BatchBody).decode
_decode_msgpack = msgspec.msgpack.Decoder(BatchBody).decode


def parse_batch(raw: bytes, msgpack: bool = False) -> BatchBody:
    what = NOT_MSGPACK if msgpack else NOT_JSON
    try:
        batch = _decode_msgpack(raw) if msgpack else _decode(raw)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"Invalid request parameter: {exc}") from None
    except msgspec.DecodeError:
        raise BadRequest(what) from None
    except RecursionError:
        raise BadRequest(f"{what}: it is nested too deeply") from None
    if len(batch.steps) > MAX_STEPS:
        raise BadRequest(f"a batch takes at most {MAX_STEPS} steps, not {len(batch.steps)}; send several")
    # Once each: a batch then holds no more replies than as many clients stepping at once would
    # (an env named a thousand times could make the server hold a thousand of its largest replies).
    seen: set[str] = set()
    for entry in batch.steps:
        if entry.instance_id in seen:
            raise BadRequest(f"env {entry.instance_id} is named twice in this batch; a batch steps each env once")
        seen.add(entry.instance_id)
    return batch


def _array_header(n: int) -> bytes:
    """msgpack's header of an array of `n` items."""
    return bytes((0x90 + n,)) if n < 16 else b"\xdc" + n.to_bytes(2, "big") if n < 65536 else b"\xdd" + n.to_bytes(4, "big")


_ACTION_KEY = b"\x81" + encode_msgpack("action")  # a map of one key, "action"


async def _one(envs: CallerView, entry: BatchEntry, timeout: float, autoreset: bool, binary: bool,
               msgpack_body: bool) -> bytes:
    action = bytes(entry.action)
    body = _ACTION_KEY + action if msgpack_body else b'{"action":' + action + b"}"
    try:
        reply = await envs.call(entry.instance_id, Step, timeout, body=body, autoreset=autoreset, binary=binary,
                                msgpack_body=msgpack_body)
    except SupervisorError as exc:
        return with_status(status_of(exc), error_body(str(exc), binary), binary)
    return with_status(200, reply, binary)


@post("/v1/batch/step", status_code=200, operation_id="batch_step", operation_class=body(BatchBody),
      responses=errors(400, 401, 413, 503))
async def batch_step(request: Request) -> Response[BatchReply]:
    """Step several of the caller's envs concurrently, each once; each result is what the step
    route would answer, with its status. One timeout (X-Request-Timeout) covers every step,
    counted from the batch's arrival."""
    msgpack_body, binary = binary_body(request), binary_reply(request)
    batch = parse_batch(await request.body(), msgpack_body)
    timeout = caller_timeout(request.app.state.settings, request.user, request.headers.get(TIMEOUT_HEADER))
    envs = view(request)
    results = await asyncio.gather(*(_one(envs, e, timeout, batch.autoreset, binary, msgpack_body)
                                     for e in batch.steps))
    if binary:
        out = b"\x81" + encode_msgpack("results") + _array_header(len(results)) + b"".join(results)
    else:
        out = b'{"results":[' + b",".join(results) + b"]}"
    return Response(out, media_type=media_type(binary))
