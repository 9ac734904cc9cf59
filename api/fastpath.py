"""The step route as bare ASGI in front of Litestar: body in, one pipe message, bytes out.

Step is the hot path, so it skips Litestar's routing and response machinery. (Litestar 2.25's
own @asgi handlers fail routing when their path holds a parameter, so the route lives here.)
"""

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from api.errors import error_body, status_of
from api.params import MAX_BODY, TIMEOUT_HEADER, request_timeout
from api.settings import Settings
from envproc.protocol import Step
from supervisor.errors import SupervisorError
from supervisor.registry import Registry

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_HEADER = TIMEOUT_HEADER.lower().encode()
_JSON = [(b"content-type", b"application/json")]


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


class StepFastPath:
    """Owns nothing but the dispatch: step requests here, everything else to Litestar."""

    def __init__(self, app: ASGIApp, registry: Registry, settings: Settings) -> None:
        self.app = app
        self.registry = registry
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        instance_id = step_instance(scope)
        if instance_id is None:
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # cut short: an incomplete request never reaches the env, and nobody awaits a reply
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if not message.get("more_body") or size > MAX_BODY:
                break
        body = b"".join(chunks)  # once: `+=` on each piece is quadratic in their number
        header = next((v for k, v in scope["headers"] if k == _HEADER), None)
        try:
            if size > MAX_BODY:
                out, status = error_body(f"Request body exceeds the {MAX_BODY:,} byte limit"), 413
            else:
                timeout = request_timeout(header, self.settings.step_timeout, self.settings.max_request_timeout)
                out, status = await self.registry.call(instance_id, Step, timeout, body=body), 200
        except SupervisorError as exc:
            out, status = error_body(str(exc)), status_of(exc)
        await send({"type": "http.response.start", "status": status,
                    "headers": [*_JSON, (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})
