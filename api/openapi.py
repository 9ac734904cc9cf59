"""The OpenAPI schema's parts that Litestar cannot see: request bodies (handlers read raw bytes, to
answer old clients as the seed did), error replies by status, links for stateful testing, and
the docs page's vendored Swagger UI."""

import dataclasses
from pathlib import Path
from typing import Any

import msgspec
from litestar import Router
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import (
    Link,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Reference,
    RequestBody,
    Schema,
)
from litestar.static_files import create_static_files_router

from api.auth import PUBLIC
from api.params import CreateBody, MonitorStartBody, ResetBody, UploadBody


class ErrorBody(msgspec.Struct):
    message: str  # what happened, to which env, and what to do


class StepBody(msgspec.Struct):
    action: Any  # a value of the env's action space, as JSON
    render: bool = False


class ContainsBody(msgspec.Struct):
    """Keys of the observation space's description, compared with the env's own."""

    name: str | None = None


BODIES = [CreateBody, ResetBody, StepBody, MonitorStartBody, UploadBody, ContainsBody]

WHY = {
    400: "bad input, or an unknown instance id (also any id of another user's)",
    401: "no token, or a token of no user (the server has --users)",
    403: "the caller's role may not do this",
    410: "the env died earlier (its cause in the message); close it",
    413: "the request, or its create kwargs, is larger than the server takes",
    429: "the user runs as many envs as their quota allows",
    500: "the env's own code raised (the env lives on)",
    501: "this server lacks what the request needs",
    502: "the env process died while answering",
    503: "the server runs its limit of envs (Retry-After), or is shutting down",
    504: "no answer in time: the env was killed, or was busy and this request not run",
    507: "the data dir holds more than its cap: no new monitor",
}
ENV_CALL = (400, 401, 410, 500, 502, 503, 504)  # a request an env answers


def errors(*statuses: int) -> dict[int, ResponseSpec]:
    return {s: ResponseSpec(data_container=ErrorBody, description=WHY[s], generate_examples=False) for s in statuses}


_ALIASES = {f.metadata.get("alias", f.name): f.name for f in dataclasses.fields(Schema)}
_NESTED = {"properties", "patternProperties"}  # name -> schema
_ONE = {"items", "not", "additionalProperties", "contains"}
_MANY = {"anyOf", "oneOf", "allOf", "prefixItems"}


def to_spec(node: dict[str, Any], defs: dict[str, Any]) -> Schema:
    """A JSON schema as msgspec writes it, its references inlined (Litestar keeps only the
    component schemas it makes itself), in Litestar's OpenAPI objects."""
    if "$ref" in node:
        return to_spec(defs[node["$ref"].rsplit("/", 1)[1]], defs)
    fields: dict[str, Any] = {}
    for key, value in node.items():
        if key in _NESTED:
            value = {name: to_spec(v, defs) for name, v in value.items()}
        elif key in _ONE and isinstance(value, dict):
            value = to_spec(value, defs)
        elif key in _MANY:
            value = [to_spec(v, defs) for v in value]
        fields[_ALIASES[key]] = value
    return Schema(**fields)


# What a body must hold, though the handler reads a missing field as the seed did (400, named).
REQUIRED = {"CreateBody": {"env_id": {"type": "string", "examples": ["CartPole-v1"]}}}


def body_schema(kind: type[msgspec.Struct]) -> Schema:
    (top,), defs = msgspec.json.schema_components([kind])
    for name, fields in REQUIRED.items():
        if name in defs:
            defs[name]["properties"].update(fields)
            defs[name]["required"] = sorted(fields)
    return to_spec(top, defs)


CREATED = "$response.body#/instance_id"  # link sources: the id a create answers,
SAME = "$request.path.instance_id"  # or the id the request named


def body(kind: type[msgspec.Struct], links: dict[str, str] | None = None, source: str = CREATED) -> type[Operation]:
    """An Operation with `kind` as its JSON request body (optional where the kind has no required
    field: an empty body is `{}`), and, where given, links from its 200 reply to the operations
    (by id) that take the instance id `source` gives."""
    needed = kind.__name__ in REQUIRED or any(f.required for f in msgspec.structs.fields(kind))

    @dataclasses.dataclass
    class WithBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                content={"application/json": OpenAPIMediaType(schema=body_schema(kind))},
                required=needed,
            )
            if self.responses is not None and "413" not in self.responses:  # any body may be too large
                self.responses["413"] = OpenAPIResponse(description=WHY[413], content={"application/json": OpenAPIMediaType(
                    schema=Reference("#/components/schemas/ErrorBody"))})
            ok = (self.responses or {}).get("200")
            if links and ok is not None and not isinstance(ok, Reference):
                ok.links = {name: Link(operation_id=op, parameters={"instance_id": source})
                            for name, op in links.items()}

    return WithBody


STATIC = Path(__file__).parent / "static"
STATIC_URL = "/static"


def config(version: str) -> OpenAPIConfig:
    swagger = f"{STATIC_URL}/swagger"
    return OpenAPIConfig(
        title="gym-supervisor",
        version=version,
        description="The gym-http-api v1 REST API on Gymnasium, one supervised process per env; "
                    "and the admin routes of a shared server.",
        path="/schema",
        use_handler_docstrings=True,
        # documentation tells nothing of envs or users: readable without a token, as the README is
        openapi_router=Router("/schema", route_handlers=[], include_in_schema=False, opt={PUBLIC: True}),
        render_plugins=[SwaggerRenderPlugin(
            path="/", js_url=f"{swagger}/swagger-ui-bundle.js", css_url=f"{swagger}/swagger-ui.css",
            standalone_preset_js_url=f"{swagger}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{swagger}/favicon-32x32.png'>",
        )],
    )


def static_files() -> Any:
    """The vendored files the docs and admin pages load (nothing from outside: a lab network may
    have no internet)."""
    return create_static_files_router(path=STATIC_URL, directories=[STATIC], include_in_schema=False,
                                      opt={PUBLIC: True})
