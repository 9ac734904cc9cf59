"""`gym-supervisor serve`: flags built from Settings' fields, one each, then uvicorn."""

import argparse
import logging
import sys
from typing import Any, Literal, get_args, get_origin, get_type_hints

import msgspec
import uvicorn

from api.app import build
from api.settings import Settings
from supervisor.errors import SupervisorError

SEED_ALIASES = {"host": ["-l", "--listen"], "port": ["-p"]}
METAVARS = {str: "TEXT", int: "N", float: "SECONDS"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gym-supervisor", description="Serve Gymnasium envs over the gym-http-api v1 REST API.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = get_type_hints(Settings, include_extras=True)
    for field in msgspec.structs.fields(Settings):
        annotated = hints[field.name]
        kind, meta = get_args(annotated)[0], get_args(annotated)[1]
        flag = "--" + field.name.replace("_", "-")
        names = [flag, *SEED_ALIASES.get(field.name, [])]
        kwargs: dict[str, Any] = {"dest": field.name, "help": meta.description, "default": field.default}
        if type(None) in get_args(kind):  # optional: the flag takes the other type
            kind = next(k for k in get_args(kind) if k is not type(None))
        if kind is bool:
            kwargs.update(action="store_true")
        elif get_origin(kind) is tuple:
            kwargs.update(action="append", default=argparse.SUPPRESS, metavar="MODULE")
        elif get_origin(kind) is Literal:
            kwargs["choices"] = get_args(kind)
        else:
            kwargs.update(type=kind, metavar=METAVARS.get(kind, "VALUE"))
        serve.add_argument(*names, **kwargs)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = vars(parser.parse_args(argv))
    args.pop("command")
    fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in args.items() if v is not None}
    try:
        settings = msgspec.convert(fields, Settings)  # checks the bounds in Settings' Meta
    except msgspec.ValidationError as exc:
        parser.error(f"bad setting: {exc}")
    logging.basicConfig(
        level=settings.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    server: uvicorn.Server | None = None

    def request_exit() -> None:
        assert server is not None
        server.should_exit = True

    try:
        app = build(settings, request_exit)
    except SupervisorError as exc:
        parser.error(str(exc))
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port,
        loop="uvloop", http="httptools", lifespan="on", log_level=settings.log_level,
        access_log=False,
    )
    server = uvicorn.Server(config)
    server.run()


if __name__ == "__main__":
    main()
