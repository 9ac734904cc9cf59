"""The server's settings: one field per CLI flag, built once by the CLI and passed down."""

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Literal

import msgspec
from msgspec import Meta


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    host: Annotated[str, Meta(description="address to listen on (the seed's -l/--listen)")] = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535, description="port to listen on (the seed's -p/--port)")] = 5000
    step_timeout: Annotated[
        float, Meta(gt=0, description="seconds an env may take to answer any request before it is killed (504)")
    ] = 30.0
    create_timeout: Annotated[
        float, Meta(gt=0, description="seconds an env may take to start and be made before it is killed (504)")
    ] = 60.0
    max_request_timeout: Annotated[
        float, Meta(gt=0, description="cap on the X-Request-Timeout a client may ask for, in seconds")
    ] = 600.0
    allow_module: Annotated[
        tuple[str, ...], Meta(description="module whose envs create may name as 'module:EnvId' (repeatable)")
    ] = ()
    preload: Annotated[
        tuple[str, ...], Meta(description="module imported at start, its envs then made by plain id (repeatable)")
    ] = ()
    prespawn: Annotated[
        tuple[str, ...], Meta(description="ENV_ID=N: keep N envs of this id made ahead, so that a create of it with "
                                          "no kwargs is a handover (repeatable)")
    ] = ()
    env_path: Annotated[
        tuple[str, ...], Meta(description="directory where env modules are looked for, after the working directory "
                                          "(repeatable)")
    ] = ()
    max_kwargs_bytes: Annotated[
        int, Meta(ge=0, description="largest create `kwargs`, in bytes of JSON (0: no limit); past it create "
                                    "answers 413")
    ] = 65536
    max_reply_mb: Annotated[
        int, Meta(ge=0, description="largest reply an env may send, in MB (0: no limit); past it the env is "
                                    "stopped (502, then 410)")
    ] = 64
    max_envs: Annotated[
        int, Meta(ge=0, description="env processes the server runs at once; past it create answers 503 (0: no limit)")
    ] = 256
    env_memory_mb: Annotated[
        int, Meta(ge=0, description="memory per env, its helpers included, in MB; past it the env is stopped "
                                    "(default: a quarter of the machine's memory; 0: no limit)")
    ] | None = None
    env_cpu_seconds: Annotated[
        float, Meta(ge=0, description="CPU time per env process in seconds; past it the env is stopped (0: no limit)")
    ] = 0
    env_max_files: Annotated[int, Meta(ge=0, description="open files per env process (0: as the server's)")] = 1024
    env_max_procs: Annotated[
        int, Meta(ge=0, description="processes and threads per env, helpers included, where a pids cgroup can be had (0: no limit)")
    ] = 512
    max_procs: Annotated[
        int, Meta(ge=0, description="processes and threads of all envs together, where a pids cgroup can be had "
                                    "(default: half of the machine's pid_max; 0: no limit)")
    ] | None = None
    idle_timeout: Annotated[
        float, Meta(ge=0, description="close an env after this many seconds without a request (0: never)")
    ] = 0
    max_lifetime: Annotated[
        float, Meta(ge=0, description="close an env this many seconds after its creation, once its request ends (0: never)")
    ] = 0
    dead_retention: Annotated[
        float, Meta(ge=0, description="seconds a dead env stays listed with its cause before it is forgotten")
    ] = 600
    restart_max: Annotated[
        int, Meta(ge=0, description="restart an env that crashed or was killed for a timeout, at most N times "
                                    "within --restart-within s, unless its create says otherwise (0: never)")
    ] = 0
    restart_within: Annotated[float, Meta(gt=0, description="the window of --restart-max, in seconds")] = 60
    env_user: Annotated[
        str | None, Meta(description="run env code as this user, with no supplementary groups (the server must be root)")
    ] = None
    env_uid_range: Annotated[
        str | None, Meta(description="run each env as a user of its own, uid START+k "
                                                           "(START:COUNT, uids no account has; the server must be root)")
    ] = None
    env_no_network: Annotated[
        bool, Meta(description="run each env in a network namespace of its own, with only loopback")
    ] = False
    read_timeout: Annotated[
        float, Meta(ge=0, description="seconds a client may take to send a request's line and headers, or leave "
                                      "its body unsent, before it is answered 408 and cut off (0: for ever)")
    ] = 10.0
    max_connections: Annotated[
        int, Meta(ge=0, description="client connections open at once; past it a new one is answered 503 and "
                                    "closed (0: no limit)")
    ] = 1000
    shutdown_grace: Annotated[
        float, Meta(ge=0, description="seconds requests still running may take to finish when the server stops; "
                                      "then their envs are killed and they are answered 503")
    ] = 5.0
    users: Annotated[
        str | None, Meta(description="TOML file of the users who may call the server, by token (re-read on SIGHUP); "
                                     "without it the server is open, to one user, and listens on loopback only")
    ] = None
    insecure_open: Annotated[
        bool, Meta(description="let a server without --users listen beyond loopback, where anyone who reaches "
                               "the port may do anything")
    ] = False
    backend: Annotated[
        Literal["local", "ray"], Meta(description="where env processes run: forked on this machine, or on the "
                                                  "nodes of a Ray cluster (needs gym-supervisor[ray])")
    ] = "local"
    ray_address: Annotated[
        str, Meta(description="with --backend ray: the Ray cluster to join, as 'ray start' printed it (left running "
                              "when the server stops; default: start a Ray instance on this machine, and stop it)")
    ] | None = None
    ray_agent_host: Annotated[
        str, Meta(description="with --backend ray: the address each node's agent listens on for this server "
                              "(default: the node's address in Ray; 127.0.0.1 only for a cluster on one machine)")
    ] | None = None
    data_dir: Annotated[str, Meta(description="monitor directories are confined under this directory (each "
                                              "user's under their name)")] = "data"
    data_dir_max_mb: Annotated[
        int, Meta(ge=0, description="what the data dir may hold, in MB; past it monitors are closed and new ones "
                                    "refused with 507 (default: a tenth of its file system; 0: no cap)")
    ] | None = None
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"], Meta(description="how much the server logs")
    ] = "info"


def package_version() -> str:
    try:
        return version("gym-supervisor")
    except PackageNotFoundError:
        return "unknown (not installed)"
