"""What an env process must not keep of the server's: every descriptor but its own pipe end."""

import os
from multiprocessing import forkserver, resource_tracker


def close_all_but(keep: set[int]) -> None:
    """Close every descriptor above stderr not in `keep`, before any env code runs.

    A forkserver child inherits the forkserver's liveness pipe, the resource tracker's pipe and
    the pipe its start-up data came through. The forkserver and the tracker live until every
    copy of their write ends is closed, so a helper of an env that kept one would keep both
    alive after the server died. An env that uses multiprocessing itself then starts a
    forkserver or a tracker of its own.
    """
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own descriptor, already gone
    fs = forkserver._forkserver
    fs._forkserver_alive_fd = fs._forkserver_address = fs._forkserver_pid = None
    rt = resource_tracker._resource_tracker
    rt._fd = rt._pid = None
