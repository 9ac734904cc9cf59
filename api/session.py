"""`WS /v1/envs/{id}/session`: one env's requests over one WebSocket, answered in order.

Each message is a request (`{"op": "step", "action": ...}`, `{"op": "reset", "seed"?: ...,
"options"?: ...}`, `{"op": "sample"}`); each answer is what the HTTP route would answer, with its
`"status"`. Text frames carry JSON, binary frames msgpack, and each answer comes in its
request's kind. A client may send many requests before reading: they queue in the socket (the
server reads the next when it has answered one), so a client that never reads holds nothing
more than the socket's buffers. Once the env is dead or gone the server sends that error as the
last message and closes with code 4000 + its status.
"""

from typing import Any
from urllib.parse import parse_qs

import msgspec

from api.auth import Callers, signed_in
from api.codec import with_status
from api.errors import error_body, headers_of, status_of
from api.params import TIMEOUT_HEADER_KEY, Seed
from api.routes import caller_timeout
from api.settings import Settings
from envproc.protocol import Reset, Sample, Step
from supervisor.errors import (
    BadRequest,
    EnvCrashed,
    EnvGone,
    EnvTimeout,
    SupervisorError,
    UnknownInstance,
)
from supervisor.registry import Registry
from supervisor.view import CallerView

OPS = ("step", "reset", "sample")
# After these the env is dead or gone: nothing more can be asked of it on this session.
FINAL = (EnvCrashed, EnvTimeout, EnvGone, UnknownInstance)


class SessionRequest(msgspec.Struct):
    op: str
    seed: Seed | None = None
    options: dict[str, Any] | None = None  # a step's action is skipped here: the env process reads it


_decode_json = msgspec.json.Decoder(SessionRequest).decode
_decode_msgpack = msgspec.msgpack.Decoder(SessionRequest).decode


def session_instance(scope: dict[str, Any]) -> str | None:
    """The instance id of `/v1/envs/<id>/session[/]`, else None."""
    parts = scope["path"].split("/")
    if (5 <= len(parts) <= 6 and parts[1] == "v1" and parts[2] == "envs" and parts[3] and parts[4] == "session"
            and (len(parts) == 5 or not parts[5])):
        return parts[3]
    return None


def parse(raw: bytes, binary: bool) -> SessionRequest:
    try:
        req = _decode_msgpack(raw) if binary else _decode_json(raw)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"Invalid request parameter: {exc}") from None
    except (msgspec.DecodeError, RecursionError):
        raise BadRequest("the message is not " + ("valid msgpack" if binary else "valid JSON")
                         + ' with an "op"; see the README for the session\'s messages') from None
    if req.op not in OPS:
        raise BadRequest(f"op {req.op!r} is not one of {', '.join(OPS)}")
    return req


class Session:
    """Owns one WebSocket's loop: who is calling, which env, the timeout, and the answers' order."""

    def __init__(self, registry: Registry, settings: Settings, callers: Callers) -> None:
        self.registry = registry
        self.settings = settings
        self.callers = callers

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any, instance_id: str) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        try:
            envs, timeout = self._admit(scope, instance_id)
        except SupervisorError as exc:
            await self._refuse(scope, send, exc)
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return  # websocket.disconnect: the client left, or the server stops
            text = message.get("text")
            binary = text is None
            raw = (message.get("bytes") or b"") if binary else text.encode()
            out, final = await self._answer(envs, instance_id, raw, binary, timeout)
            try:
                await send({"type": "websocket.send", "bytes": out} if binary else
                           {"type": "websocket.send", "text": out.decode()})
                if final is not None:
                    await send({"type": "websocket.close", "code": 4000 + final, "reason": "the env is gone"})
                    return
            except OSError:  # the client left while its env worked: nobody reads the answer
                return

    def _admit(self, scope: dict[str, Any], instance_id: str) -> tuple[CallerView, float]:
        """The caller's view and the session's timeout, or why the session is refused. A token may
        come as `?token=` (browsers cannot set headers on a WebSocket) or in Authorization."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        authorization = header = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value
            elif key == TIMEOUT_HEADER_KEY:
                header = value
        if "token" in query:
            authorization = f"Bearer {query['token'][-1]}"
        caller = signed_in(self.callers.resolve(authorization))
        if "timeout" in query:
            header = query["timeout"][-1]
        timeout = caller_timeout(self.settings, caller, header)
        envs = CallerView(self.registry, caller)
        envs.get(instance_id)  # an unknown (or another user's) env is refused before the upgrade
        return envs, timeout

    async def _answer(self, envs: CallerView, instance_id: str, raw: bytes, binary: bool,
                      timeout: float) -> tuple[bytes, int | None]:
        """The answer to one message with its status; and the status if it is the last."""
        try:
            req = parse(raw, binary)
            if req.op == "step":  # the message is the step's body: the env process reads its action
                out = await envs.call(instance_id, Step, timeout, body=raw, binary=binary, msgpack_body=binary)
            elif req.op == "reset":
                out = await envs.call(instance_id, Reset, timeout, seed=req.seed, options=req.options, binary=binary)
            else:
                out = await envs.call(instance_id, Sample, timeout, binary=binary)
        except SupervisorError as exc:
            status = status_of(exc)
            return with_status(status, error_body(str(exc), binary), binary), status if isinstance(exc, FINAL) else None
        return with_status(200, out, binary), None

    async def _refuse(self, scope: dict[str, Any], send: Any, exc: SupervisorError) -> None:
        """Refused before the upgrade: an HTTP answer with the status and message the HTTP
        routes give, where the server can send one, else a close with 4000 + that status."""
        status = status_of(exc)
        if "websocket.http.response" in scope.get("extensions", {}):
            body = error_body(str(exc))
            headers = [(k.lower().encode(), v.encode()) for k, v in headers_of(exc).items()]
            await send({"type": "websocket.http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                                    *headers]})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 4000 + status})
