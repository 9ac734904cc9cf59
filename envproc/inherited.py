"""What an env process must not keep of the server's: every descriptor but its own pipe end."""

import os


def close_all_but(keep: set[int]) -> None:
    """Close every descriptor above stderr not in `keep`, before any env code runs.

    The forkserver closes what it knows it holds; this also closes whatever else a process
    above us left open by mistake, so no env can use or keep alive anything of the server's
    or of another env's.
    """
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own descriptor, already gone
