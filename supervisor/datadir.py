"""The data dir, where env monitors write: directories made in it without following any link.

The server may run as root while env code runs as another user who can write inside the data
dir. So a monitor directory is never reached by its path: each component is opened from its
parent's descriptor with O_NOFOLLOW (a link planted by env code is refused, not followed), and
the last one is handed to the env's user through its descriptor. Nothing the server does as
root takes a path that env code controls.
"""

import errno
import logging
import os
from pathlib import PurePosixPath

from supervisor.errors import BadRequest, StorageFull

log = logging.getLogger("gym_supervisor.env")

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def parts_of(directory: str) -> list[str]:
    """A client's directory as components under the data dir: relative paths are taken under it
    and absolute ones mapped under it (`/tmp/x` -> `tmp/x`); `..` may not leave it."""
    if "\0" in directory:
        raise BadRequest("monitor directory may not contain a NUL character")
    parts: list[str] = []
    for part in PurePosixPath(directory).parts:
        if part in ("/", "."):
            continue
        if part == "..":
            if not parts:
                raise BadRequest(f"monitor directory {directory!r} leaves the server's data directory; "
                                 "use a path inside it")
            parts.pop()
        else:
            parts.append(part)
    return parts


class DataDir:
    """Owns a descriptor of the data dir, opened once at start (every walk begins there), and
    whether the dir is past its cap (then no monitor directory is made)."""

    def __init__(self, path: str, cap_mb: int | None = None) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = os.path.realpath(path)
        self._fd = os.open(self.path, _DIR)
        self.cap_mb = default_cap_mb(self.path) if cap_mb is None else cap_mb
        self.full: str | None = None  # why no monitor may start, while past the cap

    def measure(self) -> bool:
        """Walk the data dir (blocking: from a thread) and say whether it is past its cap."""
        used, cap = self.used_bytes(), self.cap_mb * 2**20
        if used <= cap:
            if self.full is not None:
                log.info("data_dir_below_cap used_mb=%d cap_mb=%d", used // 2**20, self.cap_mb)
            self.full = None
            return False
        if self.full is None:
            log.warning("data_dir_full used_mb=%d cap_mb=%d", used // 2**20, self.cap_mb)
        self.full = (f"the server's data dir holds {used / 2**20:.0f} MB, more than its cap of {self.cap_mb} MB "
                     "(--data-dir-max-mb): no monitor starts until the admin clears it")
        return True

    def make(self, directory: str, owner: tuple[int, int] | None = None, under: str = "") -> str:
        """Make the client's monitor directory (and its parents) under the data dir (in its
        directory `under`, a user's name, if given), give the last one to `owner` (its user
        alone may enter it: mode 0700), and return its path for the env process. It may pass
        only through directories of the server's or of `owner`'s own, so no other env can plant
        a link on the env's way to it later."""
        if self.full is not None:
            raise StorageFull(self.full)
        parts = parts_of(directory)
        if not parts:
            raise BadRequest(f"monitor directory {directory!r} names the data directory itself; "
                             "name a directory inside it")
        parts = [under, *parts] if under else parts  # `..` was resolved within the client's part alone
        mine = {0, os.geteuid()} if owner is None else {0, os.geteuid(), owner[0]}
        fd = os.dup(self._fd)
        try:
            for i, part in enumerate(parts):
                leaf = i == len(parts) - 1
                try:
                    os.mkdir(part, 0o700 if leaf else 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                child = os.open(part, _DIR | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = child
                if os.fstat(fd).st_uid not in mine:
                    raise BadRequest(f"monitor directory {directory!r} passes through a directory of another "
                                     "env; use one of this env's own")
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, 0o700)
        except OSError as exc:
            raise BadRequest(_why(directory, exc)) from None
        finally:
            os.close(fd)
        return os.path.join(self.path, *parts)

    def used_bytes(self) -> int:
        """What the entries under the data dir take, links not followed (a blocking walk, with a
        stack: a tree deeper than Python's recursion must not stop it). Each entry counts at
        least a block, so a flood of empty files counts too."""
        total, todo = 0, [self.path]
        while todo:
            try:
                entries = list(os.scandir(todo.pop()))
            except OSError:
                continue  # gone, or not ours to read
            for entry in entries:
                try:
                    total += max(entry.stat(follow_symlinks=False).st_blocks * 512, 4096)
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(entry.path)
                except OSError:
                    pass  # gone while we looked
        return total

    def close(self) -> None:
        os.close(self._fd)


def default_cap_mb(path: str) -> int:
    """The data dir's cap unless the admin says otherwise: a tenth of its file system."""
    fs = os.statvfs(path)
    return fs.f_blocks * fs.f_frsize // 10 // 2**20


def _why(directory: str, exc: OSError) -> str:
    """Why a monitor directory cannot be made, without the server's own paths."""
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return (f"monitor directory {directory!r} passes through a symbolic link or a file inside the data "
                "directory; use a plain path of directories")
    if exc.errno == errno.ENAMETOOLONG:
        return f"monitor directory {directory[:64]!r}... has a name too long for the file system"
    return f"monitor directory {directory!r} cannot be made: {os.strerror(exc.errno or 0)}"
