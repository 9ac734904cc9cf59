"""The admin routes (every env of every user; viewers read, admins kill and restart) and the
health check, which needs no token."""

import asyncio
import collections
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any

from litestar import Request, Response, get, post

from api.auth import PUBLIC, is_admin, may_view
from api.codec import answer
from api.metrics import requests_by_status
from api.openapi import errors
from api.params import TIMEOUT_HEADER
from api.replies import AdminEnvs, AdminRow, Health, Restarted, Stats, UserKilled
from api.routes import caller_timeout
from api.settings import Settings
from supervisor.handle import EnvHandle
from supervisor.registry import Registry

ROW = ("instance_id", "owner", "env_id", "state", "pid", "node", "cpu_percent", "rss_bytes", "created", "last_active",
       "steps", "episodes", "waiting", "restarts", "cause")


def _registry(request: Request) -> Registry:
    return request.app.state.registry




def row(handle: EnvHandle) -> dict[str, Any]:
    """An env as the admin table shows it, with its recent usage (seconds ago, CPU %, RSS)."""
    info = handle.info()
    out = {key: info[key] for key in ROW}
    out["died"] = handle.died
    out["death"] = handle.death
    out["renders"] = handle.kwargs.get("render_mode") == "rgb_array"
    now = time.monotonic()
    out["history"] = [[round(now - at, 1), cpu, rss] for at, cpu, rss in handle.history]
    return out


@get("/v1/admin/envs", guards=[may_view], operation_id="admin_envs", responses=errors(401, 403))
async def admin_envs(request: Request) -> Response[AdminEnvs]:
    """Every env of every user, with its usage."""
    return answer(request, {"envs": [row(h) for h in _registry(request).handles()]})


@post("/v1/admin/envs/{instance_id:str}/kill", status_code=200, guards=[is_admin], operation_id="admin_kill",
      responses=errors(400, 401, 403))
async def admin_kill(request: Request, instance_id: str) -> Response[AdminRow]:
    """SIGKILL the env's processes now; its owner's request in flight is answered 502 at once."""
    registry = _registry(request)
    await registry.kill(instance_id, by=request.user.name)
    return answer(request, row(registry.get(instance_id)))


@post("/v1/admin/envs/{instance_id:str}/restart", status_code=200, guards=[is_admin], operation_id="admin_restart",
      responses=errors(400, 401, 403, 500, 502, 503, 504))
async def admin_restart(request: Request, instance_id: str) -> Response[Restarted]:
    """Restart any user's env (not counted against their quota)."""
    settings: Settings = request.app.state.settings
    timeout = caller_timeout(settings, request.user, request.headers.get(TIMEOUT_HEADER), settings.create_timeout)
    return answer(request, await _registry(request).restart(instance_id, timeout))


@post("/v1/admin/users/{user:str}/kill", status_code=200, guards=[is_admin], operation_id="admin_kill_user",
      responses=errors(401, 403))
async def admin_kill_user(request: Request, user: str) -> Response[UserKilled]:
    """Kill every live env of one user."""
    registry = _registry(request)
    ids = [h.instance_id for h in registry.handles() if h.owner == user and h.cause is None]
    await asyncio.gather(*(registry.kill(instance_id, by=request.user.name) for instance_id in ids))
    return answer(request, {"user": user, "killed": ids})


@get("/v1/admin/stats", guards=[may_view], operation_id="admin_stats", responses=errors(401, 403))
async def admin_stats(request: Request) -> Response[Stats]:
    """Totals: envs by state and by user, deaths by kind, the server's own usage, requests by status."""
    registry = _registry(request)
    handles = registry.handles()
    by_user: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for h in handles:
        by_user[h.owner][h.state.value] += 1
    own = resource.getrusage(resource.RUSAGE_SELF)
    return answer(request, {
        "backend": registry.backend.name,
        "nodes": registry.backend.nodes(),
        "envs": dict(collections.Counter(h.state.value for h in handles)),
        "envs_by_user": {user: dict(states) for user, states in sorted(by_user.items())},
        "live_envs": registry.live(),
        "pool": {env_id: registry.pool.ready(env_id) for env_id in registry.pool.sizes},
        "deaths": dict(registry.deaths),
        "server": {
            "pid": os.getpid(),
            "cpu_seconds": round(own.ru_utime + own.ru_stime, 3),
            "rss_bytes": _own_rss(),
            "uptime_s": round(time.time() - registry.started, 1),
            "threads": threading.active_count(),
            "tasks": len(asyncio.all_tasks()),
        },
        "requests_by_status": requests_by_status(),
    })


def _own_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@get("/healthz", opt={PUBLIC: True}, operation_id="healthz", responses=errors(503), security=[{}])  # [{}]: no token needed
async def healthz(request: Request) -> Response[Health]:
    """200 while the server can make and step an env; 503 and why otherwise."""
    why = await _registry(request).health()
    if why is None:
        return answer(request, {"status": "ok"})
    return answer(request, {"message": why}, 503)


PAGE = (Path(__file__).parent / "static" / "admin.html").read_bytes()


@get("/admin", opt={PUBLIC: True}, include_in_schema=False)
async def admin_page() -> Response:
    """The admin page: it asks for a token itself, so the page needs none."""
    return Response(PAGE, media_type="text/html; charset=utf-8")


ROUTES = [admin_page, admin_envs, admin_kill, admin_restart, admin_kill_user, admin_stats, healthz]
