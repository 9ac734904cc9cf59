"""What an env process must not keep of the server's: the forkserver's and resource tracker's pipes."""

import os
from multiprocessing import forkserver, resource_tracker


def _close(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def drop_server_pipes() -> None:
    """Close the pipes every forkserver child inherits, before any env code runs.

    The forkserver and the resource tracker live until every copy of these write ends is
    closed, so a helper of an env that kept them would keep both alive after the server died.
    An env that uses multiprocessing itself then starts a forkserver or tracker of its own.
    """
    fs = forkserver._forkserver
    _close(fs._forkserver_alive_fd)
    fs._forkserver_alive_fd = fs._forkserver_address = fs._forkserver_pid = None
    rt = resource_tracker._resource_tracker
    _close(rt._fd)
    rt._fd = rt._pid = None
