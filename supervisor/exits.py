"""How an env process ended, in words: pure functions over exit codes."""

import signal


def describe_exit(exitcode: int | None) -> str:
    """`describe_exit(-11) == "was killed by SIGSEGV"`; multiprocessing gives -N for signal N."""
    if exitcode is None:
        return "closed its pipe"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with code {exitcode}"
