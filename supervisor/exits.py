"""How an env process ended, in words: pure functions over exit codes."""

import signal

from envproc.protocol import EXIT_OUT_OF_MEMORY, EnvLimits

NO_LIMITS = EnvLimits()


def memory_cause(limits: EnvLimits) -> str:
    return f"hit its memory limit {limits.memory_mb} MB" if limits.memory_mb else "ran out of memory"


def exit_kind(exitcode: int | None, limits: EnvLimits = NO_LIMITS, oom_killed: bool | None = None) -> str:
    """The kind of death (lifecycle.DEATHS) of an exit `describe_exit` tells of."""
    if exitcode == EXIT_OUT_OF_MEMORY or (exitcode == -signal.SIGKILL and oom_killed):
        return "memory"
    if exitcode == -signal.SIGXCPU and limits.cpu_seconds:
        return "cpu"
    return "crash"


def describe_exit(exitcode: int | None, limits: EnvLimits = NO_LIMITS, oom_killed: bool | None = None) -> str:
    """`describe_exit(-11) == "was killed by SIGSEGV"`; -N stands for signal N, and None for an
    exit the forkserver could not report, having ended first.

    Only deaths this server did not cause come here: its own kills set their cause first. The
    kernel's OOM killer is named only on its own evidence (`oom_killed`).
    """
    if exitcode is None:
        return "was killed when the server's env forkserver ended"
    if exitcode == EXIT_OUT_OF_MEMORY:
        return memory_cause(limits)
    if exitcode == -signal.SIGXCPU and limits.cpu_seconds:
        return f"was stopped: CPU limit {limits.cpu_seconds:g} s exceeded"
    if exitcode == -signal.SIGKILL:  # `oom_killed`: did the kernel's count of OOM kills move meanwhile
        over_cpu = f", or past its CPU limit {limits.cpu_seconds:g} s" if limits.cpu_seconds else ""
        if oom_killed:
            return ("was killed by SIGKILL while the kernel's OOM killer was at work on this machine (probably "
                    f"out of memory){over_cpu}; not by this server")
        if oom_killed is None:
            return f"was killed by SIGKILL from outside this server (perhaps the kernel's OOM killer){over_cpu}"
        return (f"was killed by SIGKILL from outside this server{over_cpu}; not by the kernel's OOM killer, "
                "which killed nothing meanwhile")
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with code {exitcode}"
