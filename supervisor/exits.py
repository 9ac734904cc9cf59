"""How an env process ended, in words: pure functions over exit codes."""

import signal

from envproc.protocol import EXIT_OUT_OF_MEMORY, EnvLimits

NO_LIMITS = EnvLimits()


def memory_cause(limits: EnvLimits) -> str:
    return f"hit its memory limit {limits.memory_mb} MB" if limits.memory_mb else "ran out of memory"


def describe_exit(exitcode: int | None, limits: EnvLimits = NO_LIMITS) -> str:
    """`describe_exit(-11) == "was killed by SIGSEGV"`; -N stands for signal N, and None for an
    exit the forkserver could not report, having ended first.

    Only deaths this server did not cause come here: its own kills set their cause first.
    """
    if exitcode is None:
        return "was killed when the server's env forkserver ended"
    if exitcode == EXIT_OUT_OF_MEMORY:
        return memory_cause(limits)
    if exitcode == -signal.SIGXCPU and limits.cpu_seconds:
        return f"was stopped: CPU limit {limits.cpu_seconds:g} s exceeded"
    if exitcode == -signal.SIGKILL:
        over_cpu = f", or past its CPU limit {limits.cpu_seconds:g} s" if limits.cpu_seconds else ""
        return f"was killed by SIGKILL, probably out of memory (the kernel's OOM killer){over_cpu}; not by this server"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with code {exitcode}"
