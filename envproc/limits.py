"""The env process's own limits, set on itself before any env code runs."""

import math
import os
import resource

from envproc.protocol import EnvLimits


def join_cgroup(path: str) -> None:
    """Move this process into a cgroup (the server made it and set its pids.max)."""
    with open(os.path.join(path, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))


def rlimits(limits: EnvLimits, address_space_now: int) -> dict[int, tuple[int, int]]:
    """The rlimits to set for `limits`; a pure function, so it is tested without a process."""
    out = {resource.RLIMIT_CORE: (0, 0)}  # a crashing env must not fill the disk with core files
    if limits.address_space_mb:
        cap = address_space_now + limits.address_space_mb * 2**20
        out[resource.RLIMIT_AS] = (cap, cap)
    if limits.cpu_seconds:
        soft = max(1, math.ceil(limits.cpu_seconds))
        out[resource.RLIMIT_CPU] = (soft, soft + 1)  # SIGXCPU first; SIGKILL a second later if ignored
    if limits.max_files:
        out[resource.RLIMIT_NOFILE] = (limits.max_files, limits.max_files)
    return out


def apply(limits: EnvLimits) -> None:
    if limits.cgroup:
        join_cgroup(limits.cgroup)
    with open("/proc/self/statm") as f:
        vm_bytes = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    for which, (soft, hard) in rlimits(limits, vm_bytes).items():
        _, old_hard = resource.getrlimit(which)
        if old_hard != resource.RLIM_INFINITY:
            hard = min(hard, old_hard)
            soft = min(soft, hard)
        resource.setrlimit(which, (soft, hard))
