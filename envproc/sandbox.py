"""Least privilege for env code: a network namespace of its own, and another user's identity."""

import ctypes
import fcntl
import os
import socket
import struct

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
_libc = ctypes.CDLL(None, use_errno=True)  # at import: no dlopen in a forked child


def unshare_network() -> None:
    """Enter a new network namespace: only a loopback device, which we bring up."""
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH22x", b"lo", 0)  # struct ifreq: name, flags, padding to 40 bytes
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def drop_to(uid: int, gid: int) -> None:
    """Become uid/gid for good, with no supplementary groups (the order matters: groups and gid
    can only be changed while still root)."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def can_unshare_network() -> str | None:
    """None if this process may make network namespaces, else why not (tried in a child)."""
    pid = os.fork()
    if pid == 0:
        try:
            unshare_network()
            os._exit(0)
        except OSError as exc:
            os._exit(exc.errno or 1)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return None if code == 0 else os.strerror(code)
