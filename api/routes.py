"""The v1 routes: parse the request, call the caller's view of the registry, answer bytes (step
is served by fastpath.py in front of Litestar; its handler here documents it)."""

import asyncio
from typing import Any

from litestar import Request, Response, get, post

from api.auth import is_admin
from api.codec import answer, binary_body, binary_reply, media_type
from api.openapi import ENV_CALL, SAME, ContainsBody, StepBody, body, errors
from api.params import (
    TIMEOUT_HEADER,
    CreateBody,
    MonitorStartBody,
    ResetBody,
    UploadBody,
    lenient_body,
    parse_body,
    parse_object,
    request_timeout,
    required,
)
from api.replies import (
    Created,
    EnvInfo,
    EnvList,
    Me,
    Member,
    Message,
    Restarted,
    ResetReply,
    SampleReply,
    SpaceReply,
    StepReply,
)
from api.settings import Settings
from envproc import protocol
from supervisor.errors import BadRequest
from supervisor.view import Caller, CallerView

NEXT = {"step": "env_step", "info": "env_info", "close": "env_close"}  # what may follow a reset or a step


def view(request: Request) -> CallerView:
    """The registry as the request's caller sees it (the guards made sure there is one)."""
    return CallerView(request.app.state.registry, request.user)


def caller_timeout(settings: Settings, caller: Caller, header: str | bytes | None, default: float = 0) -> float:
    """The timeout a request runs under: its header's within the server's cap and the caller's
    own, or else the server's `default` (--step-timeout unless given: that within the caller's
    cap too; creates keep --create-timeout, for envs slow to build)."""
    cap = caller.timeout_cap(settings.max_request_timeout)
    return request_timeout(header, default or caller.timeout_cap(settings.step_timeout), cap)


def _timeout(request: Request, default: float = 0) -> float:
    return caller_timeout(request.app.state.settings, request.user, request.headers.get(TIMEOUT_HEADER), default)


async def _call(request: Request, instance_id: str, kind: type[protocol.Request], **fields: Any) -> Response:
    """The env's reply, encoded in the env process in the codec the request asked for."""
    binary = binary_reply(request)
    body = await view(request).call(instance_id, kind, _timeout(request), binary=binary, **fields)
    return Response(body, media_type=media_type(binary))


@post("/v1/envs", status_code=200, operation_id="env_create", operation_class=body(CreateBody, {"reset": "env_reset", **NEXT}),
      responses=errors(400, 401, 413, 429, 500, 502, 503, 504))
async def env_create(request: Request) -> Response[Created]:
    """Make an env in a process of its own; its instance id."""
    args = parse_body(await request.body(), CreateBody, binary_body(request))
    env_id = required(args.env_id, "env_id")
    timeout = _timeout(request, request.app.state.settings.create_timeout)
    envs = view(request)
    instance_id = await envs.create(env_id, args.kwargs, args.seed, timeout, args.restart, args.limits)
    reply: dict[str, Any] = {"instance_id": instance_id}
    if (policy := envs.restart_policy(instance_id)) is not None:  # as the server bounded it
        reply["restart"] = {"max": policy.max, "within_s": policy.within_s}
    return answer(request, reply)


@get("/v1/envs", operation_id="env_list_all", responses=errors(401))
async def env_list_all(request: Request) -> Response[EnvList]:
    """The caller's envs."""
    return answer(request, {"all_envs": view(request).list_all()})


@get("/v1/envs/{instance_id:str}", operation_id="env_info", responses=errors(400, 401))
async def env_info(request: Request, instance_id: str) -> Response[EnvInfo]:
    """What the server knows of one env: state, process, usage, limits, cause of death."""
    return answer(request, view(request).info(instance_id))


@post("/v1/envs/{instance_id:str}/reset", status_code=200, operation_id="env_reset", operation_class=body(ResetBody, NEXT, SAME),
      responses=errors(*ENV_CALL))
async def env_reset(request: Request, instance_id: str) -> Response[ResetReply]:
    args = lenient_body(await request.body(), ResetBody, binary_body(request))
    return await _call(request, instance_id, protocol.Reset, seed=args.seed, options=args.options)


@post("/v1/envs/{instance_id:str}/step", status_code=200, operation_id="env_step", operation_class=body(StepBody, NEXT, SAME),
      responses=errors(*ENV_CALL, 413))
async def env_step(request: Request, instance_id: str) -> Response[StepReply]:
    """Step the env. Served by the fast path in front of Litestar (api/fastpath.py), through the
    same pipeline; this handler documents the route, and answers alike should one reach it."""
    return await _call(request, instance_id, protocol.Step, body=await request.body(),
                       msgpack_body=binary_body(request))


@get("/v1/envs/{instance_id:str}/action_space", operation_id="env_action_space_info", responses=errors(*ENV_CALL))
async def env_action_space_info(request: Request, instance_id: str) -> Response[SpaceReply]:
    return await _call(request, instance_id, protocol.SpaceInfo, space="action")


@get("/v1/envs/{instance_id:str}/observation_space", operation_id="env_observation_space_info",
     responses=errors(*ENV_CALL))
async def env_observation_space_info(request: Request, instance_id: str) -> Response[SpaceReply]:
    return await _call(request, instance_id, protocol.SpaceInfo, space="observation")


@get("/v1/envs/{instance_id:str}/action_space/sample", operation_id="env_action_space_sample",
     responses=errors(*ENV_CALL))
async def env_action_space_sample(request: Request, instance_id: str) -> Response[SampleReply]:
    return await _call(request, instance_id, protocol.Sample)


@get("/v1/envs/{instance_id:str}/action_space/contains/{x:str}", operation_id="env_action_space_contains",
     responses=errors(*ENV_CALL))
async def env_action_space_contains(request: Request, instance_id: str, x: str) -> Response[Member]:
    return await _call(request, instance_id, protocol.ActionContains, x=x)


@post("/v1/envs/{instance_id:str}/observation_space/contains", status_code=200,
      operation_id="env_observation_space_contains", operation_class=body(ContainsBody), responses=errors(*ENV_CALL))
async def env_observation_space_contains(request: Request, instance_id: str) -> Response[Member]:
    props = parse_object(await request.body(), binary_body(request))
    return await _call(request, instance_id, protocol.ObservationContains, props=props)


@post("/v1/envs/{instance_id:str}/monitor/start", status_code=204, operation_id="env_monitor_start",
      operation_class=body(MonitorStartBody), responses=errors(*ENV_CALL, 507))
async def env_monitor_start(request: Request, instance_id: str) -> None:
    args = parse_body(await request.body(), MonitorStartBody, binary_body(request))
    envs = view(request)
    envs.get(instance_id)  # an unknown instance is reported before a missing directory, as the seed does
    every = 0 if args.video_callable is False else int(args.video_callable)  # true: every episode
    if every < 0:
        raise BadRequest("video_callable must be false, true or a positive number n (record every n-th episode)")
    directory = envs.prepare_directory(instance_id, required(args.directory, "directory"))
    await envs.call(
        instance_id, protocol.MonitorStart, _timeout(request),
        directory=directory, force=args.force, resume=args.resume, video_every=every,
    )


@post("/v1/envs/{instance_id:str}/monitor/close", status_code=204, operation_id="env_monitor_close",
      responses=errors(*ENV_CALL))
async def env_monitor_close(request: Request, instance_id: str) -> None:
    await view(request).call(instance_id, protocol.MonitorClose, _timeout(request))


@post("/v1/envs/{instance_id:str}/restart", status_code=200, operation_id="env_restart",
      responses=errors(400, 401, 429, 500, 502, 503, 504))
async def env_restart(request: Request, instance_id: str) -> Response[Restarted]:
    """Kill the env's process, whatever it does, and make a new one under the same id."""
    timeout = _timeout(request, request.app.state.settings.create_timeout)
    report = await view(request).restart(instance_id, timeout)
    return answer(request, report)


@post("/v1/envs/{instance_id:str}/close", status_code=204, operation_id="env_close", responses=errors(400, 401))
async def env_close(request: Request, instance_id: str) -> None:
    await view(request).close(instance_id)


@post("/v1/upload", status_code=501, operation_id="upload", operation_class=body(UploadBody),
      responses=errors(400, 401))
async def upload(request: Request) -> Response[Message]:
    """The seed's upload to the OpenAI Gym site, which no longer exists: always 501."""
    args = parse_body(await request.body(), UploadBody, binary_body(request))
    required(args.training_dir, "training_dir")
    required(args.api_key, "api_key")
    message = (
        "The OpenAI Gym upload service no longer exists, so nothing was uploaded; "
        "the monitor files stay in the server's data directory"
    )
    return answer(request, {"message": message}, 501)


@get("/v1/envs/{instance_id:str}/render", operation_id="env_render", media_type="image/png",
     responses=errors(*ENV_CALL))
async def env_render(request: Request, instance_id: str) -> Response[bytes]:
    """The env's current frame as PNG (envs made with render_mode rgb_array); viewers and admins
    may see any env's (the admin page's thumbnails)."""
    envs = CallerView(request.app.state.registry, request.user, sees_all=True)
    png = await envs.call(instance_id, protocol.Render, _timeout(request))
    return Response(png, media_type="image/png")


@get("/v1/me", operation_id="me", responses=errors(401))
async def me(request: Request) -> Response[Me]:
    """Who the token names: the user's name and role (an open server's one user: "", admin)."""
    caller: Caller = request.user
    return answer(request, {"name": caller.name, "role": caller.role})


@post("/v1/shutdown", status_code=200, guards=[is_admin], operation_id="shutdown", responses=errors(401, 403))
async def shutdown(request: Request) -> Response[Message]:
    """Stop as SIGTERM does: requests running get --shutdown-grace seconds, then their envs are killed."""
    asyncio.get_running_loop().call_soon(request.app.state.request_exit)
    return answer(request, {"message": "Server shutting down"})


ROUTES = [
    env_create,
    env_list_all,
    env_info,
    env_reset,
    env_step,
    env_action_space_info,
    env_observation_space_info,
    env_action_space_sample,
    env_action_space_contains,
    env_observation_space_contains,
    env_monitor_start,
    env_monitor_close,
    env_restart,
    env_close,
    env_render,
    me,
    upload,
    shutdown,
]
