"""What the registry enforces: the server's settings as the supervisor sees them."""

import msgspec


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """What the registry enforces; the API layer builds it from the server's settings."""

    allow_modules: tuple[str, ...] = ()
    preload: tuple[str, ...] = ()
    prespawn: tuple[str, ...] = ()  # ENV_ID=N: envs kept made ahead of their creates
    env_path: tuple[str, ...] = ()  # where env modules are found (after the working directory)
    max_envs: int = 0  # env processes alive or starting at once; 0: no limit
    env_memory_mb: int | None = None  # per env, its whole process tree; 0: no limit; None: a quarter of the RAM
    max_kwargs_bytes: int = 0  # largest create kwargs, as JSON; 0: no limit
    max_reply_mb: int = 0  # largest reply an env may send; 0: no limit
    env_cpu_seconds: float = 0  # per env process; 0: no limit
    env_max_files: int = 0  # open files per env process; 0: as inherited
    env_max_procs: int = 0  # processes and threads per env, where a pids cgroup can be had; 0: no limit
    max_procs: int | None = None  # of all envs together; 0: no limit; None: half the machine's pid_max
    idle_timeout: float = 0  # close an env with no request for this long; 0: never
    max_lifetime: float = 0  # close an env this long after its creation; 0: never
    dead_retention: float = 600  # forget a dead env's cause after this long
    watch_interval: float = 0.5  # seconds between looks at the envs (memory, idleness, age)
    create_timeout: float = 60  # for automatic restarts, which have no request to take one from
    restart_max: int = 0  # the restart policy of envs created without one; 0: no restarts
    restart_within: float = 60  # and its window, also for policies that give none
    env_user: str | None = None  # the user env code runs as
    env_uid_range: str | None = None  # or START:COUNT, a uid of its own for each env
    env_no_network: bool = False  # each env in a network namespace of its own
    backend: str = "local"  # where env processes run: "local" (forked here) or "ray" (on a Ray cluster's nodes)
    ray_address: str | None = None  # the Ray cluster to join (None: start a local instance, and stop it after)
    ray_agent_host: str | None = None  # where each node's agent listens (None: the node's address in Ray)
    data_dir: str = "data"  # where monitors write
    data_dir_max_mb: int | None = None  # past it no new monitor, and running ones close; 0: none; None: a tenth of its fs
