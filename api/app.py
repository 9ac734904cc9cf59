"""The ASGI app: Litestar with the v1 routes, the step fast path in front, the registry inside."""

from collections.abc import Callable

from litestar import Litestar

from api.errors import HANDLERS
from api.fastpath import StepFastPath
from api.params import MAX_BODY
from api.routes import ROUTES
from api.settings import Settings
from supervisor.registry import Limits, Registry
from supervisor.restart import RestartPolicy


def build(settings: Settings, request_exit: Callable[[], None]) -> StepFastPath:
    registry = Registry(
        Limits(
            allow_modules=settings.allow_module,
            preload=settings.preload,
            max_envs=settings.max_envs,
            env_memory_mb=settings.env_memory_mb,
            env_cpu_seconds=settings.env_cpu_seconds,
            env_max_files=settings.env_max_files,
            env_max_procs=settings.env_max_procs,
            idle_timeout=settings.idle_timeout,
            max_lifetime=settings.max_lifetime,
            dead_retention=settings.dead_retention,
            create_timeout=settings.create_timeout,
            env_user=settings.env_user,
            env_no_network=settings.env_no_network,
            restart=RestartPolicy(settings.restart_max, settings.restart_within) if settings.restart_max else None,
        )
    )
    app = Litestar(
        route_handlers=ROUTES,
        exception_handlers=HANDLERS,
        on_startup=[registry.start],
        on_shutdown=[registry.close_all],
        request_max_body_size=MAX_BODY,
        openapi_config=None,
        logging_config=None,
    )
    app.state.registry = registry
    app.state.settings = settings
    app.state.request_exit = request_exit
    return StepFastPath(app, registry, settings)
