"""The step route as bare ASGI in front of Litestar: body in, one pipe message, bytes out (and
the WebSocket session, api/session.py, which Litestar never sees either).

Step is the hot path, so it skips Litestar's routing and response machinery, but not the
pipeline every route goes through: the same caller resolution and sign-in check (api/auth.py),
the same caller's view of the registry, the same error table, and the same request metrics
(the Prometheus plugin's middleware, around this route as around the others). (Litestar 2.25's
own @asgi handlers fail routing when their path holds a parameter, so the route lives here.)
"""

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from api.auth import Callers, signed_in
from api.codec import is_msgpack, wants_msgpack
from api.errors import error_body, headers_of, status_of
from api.metrics import CONFIG
from api.params import MAX_BODY, TIMEOUT_HEADER_KEY
from api.routes import caller_timeout
from api.session import Session, session_instance
from api.settings import Settings
from envproc.protocol import Step
from envproc.wire import JSON, MSGPACK
from supervisor.errors import SupervisorError, TooLarge
from supervisor.registry import Registry
from supervisor.view import CallerView

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TEMPLATE = "/v1/envs/{instance_id}/step"  # as Litestar names its routes' templates, for the metrics' label
_JSON = (b"content-type", JSON.encode())
_MSGPACK = (b"content-type", MSGPACK.encode())


def step_instance(scope: Scope) -> str | None:
    """The instance id of `POST /v1/envs/<id>/step[/]`, else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    parts = scope["path"].split("/")
    if len(parts) == 6 and parts[5]:
        return None
    if 5 <= len(parts) <= 6 and parts[1] == "v1" and parts[2] == "envs" and parts[4] == "step" and parts[3]:
        return parts[3]
    return None


async def read_body(receive: Receive) -> bytes | None:
    """The request's body, up to a little past MAX_BODY; None if the client went away first."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body") or size > MAX_BODY:
            return b"".join(chunks)  # once: `+=` on each piece is quadratic in their number


class StepFastPath:
    """Owns nothing but the dispatch: step requests here, everything else to Litestar."""

    def __init__(self, app: ASGIApp, registry: Registry, settings: Settings, callers: Callers) -> None:
        self.app = app
        self.registry = registry
        self.settings = settings
        self.callers = callers
        self._measured = CONFIG.middleware_class(self._step, CONFIG)
        self._session = Session(registry, settings, callers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        instance_id = step_instance(scope)
        if instance_id is None:
            if scope["type"] == "websocket" and (env := session_instance(scope)) is not None:
                await self._session(scope, receive, send, env)
            else:
                await self.app(scope, receive, send)
            return
        scope["path_template"] = TEMPLATE
        scope["path_params"] = {"instance_id": instance_id}
        await self._measured(scope, receive, send)

    async def _step(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        if body is None:
            return  # cut short: an incomplete request never reaches the env, and nobody awaits a reply
        timeout_header = authorization = accept = content_type = None
        for key, value in scope["headers"]:
            if key == TIMEOUT_HEADER_KEY:
                timeout_header = value
            elif key == b"authorization":
                authorization = value
            elif key == b"accept":
                accept = value
            elif key == b"content-type":
                content_type = value
        binary = wants_msgpack(accept)
        headers = [_MSGPACK if binary else _JSON]
        try:
            caller = signed_in(self.callers.resolve(authorization))
            if len(body) > MAX_BODY:
                raise TooLarge(f"Request body exceeds the {MAX_BODY:,} byte limit")
            timeout = caller_timeout(self.settings, caller, timeout_header)
            instance_id = scope["path_params"]["instance_id"]
            out = await CallerView(self.registry, caller).call(instance_id, Step, timeout, body=body, binary=binary,
                                                              msgpack_body=is_msgpack(content_type))
            status = 200
        except SupervisorError as exc:
            out, status = error_body(str(exc), binary), status_of(exc)
            headers += [(k.lower().encode(), v.encode()) for k, v in headers_of(exc).items()]
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})
