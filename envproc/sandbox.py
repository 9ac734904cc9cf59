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


def drop_privileges(uid: int | None, gid: int | None) -> None:
    """Give up for good every privilege env code could use against the machine, the server or
    other envs: the capability bounding set (while we may still change it), ambient and all
    other capabilities, the means to gain new ones (no_new_privs: no setuid or file-capability
    program gives them back), and, given a uid, root itself, keeping no supplementary group."""
    if os.geteuid() == 0:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
        for cap in range(last + 1):
            try:
                _prctl(PR_CAPBSET_DROP, cap)
            except PermissionError:  # a root without CAP_SETPCAP (some containers): capset below still acts
                break
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if uid is not None and gid is not None:  # the order matters: groups and gid only while root
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    # Root without --env-user keeps its uid but no capability: it cannot enter another
    # namespace, raise its limits, override file permissions or signal other users' processes.
    empty = (_CapData * 2)()
    if _libc.capset(ctypes.byref(_CapHeader(_CAPABILITY_VERSION_3, 0)), empty) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 38, 47, 4
_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _prctl(option: int, arg: int, *rest: int) -> None:
    if _libc.prctl(option, arg, *rest, *([0] * (3 - len(rest)))) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


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


def cannot_read_as(uid: int, gid: int, path: str) -> str | None:
    """None if uid/gid may list the directory `path`, else why not (tried in a child)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os.listdir(path)
            code = 0
        except OSError as exc:
            code = exc.errno or 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return None if code == 0 else os.strerror(code)
