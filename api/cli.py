"""`gym-supervisor serve`: flags built from Settings' fields, one each, then uvicorn."""

import argparse
import errno
import ipaddress
import logging
import re
import resource
import sys
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import msgspec

from api.settings import Settings, package_version

PING_EVERY = 20.0  # seconds between the server's pings on a WebSocket session

SEED_ALIASES = {"host": ["-l", "--listen"], "port": ["-p"]}
METAVARS = {str: "TEXT", int: "N", float: "SECONDS"}
LIST_METAVARS = {"env_path": "DIR", "prespawn": "ENV_ID=N"}  # repeatable flags; the others name modules

log = logging.getLogger("gym_supervisor.server")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gym-supervisor", description="Serve Gymnasium envs over the gym-http-api v1 REST API.")
    parser.add_argument("--version", action="version", version=f"gym-supervisor {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    token = sub.add_parser("token", help="make a token for a user: the token, a blank line, then the users file's "
                                         "block for it (which holds only the token's SHA-256)")
    token.add_argument("name", help="the user's name (letters, digits, '.', '_', '-')")
    role = token.add_mutually_exclusive_group()
    role.add_argument("--admin", action="store_const", const="admin", dest="role", help="role admin: everything")
    role.add_argument("--viewer", action="store_const", const="viewer", dest="role",
                      help="role viewer: their own envs, and reads every admin view and /metrics")
    serve = sub.add_parser("serve", help="run the server", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = get_type_hints(Settings, include_extras=True)
    for field in msgspec.structs.fields(Settings):
        annotated = hints[field.name]
        if get_origin(annotated) is not Annotated:  # Annotated[...] | None: None means a default worked out later
            annotated = next(a for a in get_args(annotated) if a is not type(None))
        kind, meta = get_args(annotated)[0], get_args(annotated)[1]
        flag = "--" + field.name.replace("_", "-")
        names = [flag, *SEED_ALIASES.get(field.name, [])]
        kwargs: dict[str, Any] = {"dest": field.name, "help": meta.description, "default": field.default}
        if field.default is None:  # unset: the help says what happens then, not "None"
            kwargs["default"] = argparse.SUPPRESS
        if type(None) in get_args(kind):  # optional: the flag takes the other type
            kind = next(k for k in get_args(kind) if k is not type(None))
        if kind is bool:
            kwargs.update(action="store_true")
        elif get_origin(kind) is tuple:
            kwargs.update(action="append", default=argparse.SUPPRESS, metavar=LIST_METAVARS.get(field.name, "MODULE"))
        elif get_origin(kind) is Literal:
            kwargs["choices"] = get_args(kind)
        else:
            kwargs.update(type=kind, metavar=METAVARS.get(kind, "VALUE"))
        serve.add_argument(*names, **kwargs)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = vars(parser.parse_args(argv))
    if args.pop("command") == "token":
        _token(parser, args["name"], args["role"] or "user")
        return
    fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in args.items() if v is not None}
    try:
        settings = msgspec.convert(fields, Settings)  # checks the bounds in Settings' Meta
    except msgspec.ValidationError as exc:
        parser.error(f"bad setting: {exc}")
    try:
        import uvicorn

        from api.app import build
        from api.http import GuardedHttp
        from api.http import Limits as HttpLimits
        from api.params import MAX_BODY
        from api.server import Server, listen
        from api.users import BadUsersFile, read_users
        from supervisor.errors import SupervisorError
    except ImportError as exc:
        parser.error(f"the server needs its own dependencies ({exc}): pip install 'gym-supervisor[server]'")
    if settings.backend != "ray" and (settings.ray_address or settings.ray_agent_host):
        parser.error("--ray-address and --ray-agent-host are for --backend ray")
    users = None
    if settings.users is not None:
        try:
            users = read_users(settings.users)
        except BadUsersFile as exc:
            parser.error(f"--users: {exc}")
    elif not settings.insecure_open and not is_loopback(settings.host):
        parser.error(f"--host {settings.host} is not a loopback address, and without --users anyone who reaches "
                     "the port could run code and stop the server; give --users FILE (see "
                     "'gym-supervisor token'), or --insecure-open if this network is yours alone")
    logging.basicConfig(
        level=settings.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    _raise_descriptor_limit()
    try:
        sock = listen(settings.host, settings.port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            parser.error(f"port {settings.port} on {settings.host} is already in use (another server?); "
                         "choose another with --port")
        parser.error(f"cannot listen on {settings.host} port {settings.port}: {exc.strerror or exc}")
    server: Server | None = None

    def request_exit() -> None:
        assert server is not None
        server.should_exit = True

    try:
        app = build(settings, request_exit, users)
    except SupervisorError as exc:
        sock.close()
        parser.error(str(exc))
    http = type("ServerHttp", (GuardedHttp,), {"limits": HttpLimits(settings.read_timeout, settings.max_connections)})
    config = uvicorn.Config(
        # The sans-I/O implementation: it waits for the client to read before it writes more, and
        # reads a session's next message only once the app took the last (api/session.py). So a
        # pipelining client's pong is read only after the message in progress, which may take
        # the longest request timeout: a ping's answer may take that long, and no longer.
        app, loop="uvloop", http=http, ws="websockets-sansio", ws_max_size=MAX_BODY, ws_per_message_deflate=False,
        ws_ping_interval=PING_EVERY, ws_ping_timeout=settings.max_request_timeout + PING_EVERY, lifespan="on",
        log_level=settings.log_level,
        access_log=False, timeout_graceful_shutdown=int(settings.shutdown_grace) + 2,
    )
    server = Server(config, app.registry, settings.shutdown_grace)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    registry = app.registry
    effective = msgspec.structs.asdict(settings) | {"env_path": registry.env_path,
                                                    "env_memory_mb": registry.limits.env_memory_mb,
                                                    "max_procs": registry.limits.max_procs,
                                                    "data_dir_max_mb": registry.data_dir.cap_mb}
    log.info("server_started version=%s url=http://%s:%d %s", package_version(), host, sock.getsockname()[1],
             " ".join(f"{k}={v!r}" for k, v in effective.items() if k not in ("host", "port")))
    server.run(sockets=[sock])


def _token(parser: argparse.ArgumentParser, name: str, role: str) -> None:
    from api.users import NAME, new_token

    if not re.match(NAME, name):
        parser.error(f"user name {name!r}: letters, digits, '.', '_' or '-' (64 at most), not starting with '.', "
                     "'_' or '-'")
    sys.stdout.write(new_token(name, role))  # type: ignore[arg-type]


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another name: it may resolve to anything


def _raise_descriptor_limit() -> None:
    """Take the descriptors the machine allows (a connection or an env pipe is one each): a
    soft limit of 1024 would run out long before --max-connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


if __name__ == "__main__":
    main()
