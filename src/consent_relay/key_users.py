"""Which processes use the secret key of a SQLite database, so that ``rotate-secret-key``
refuses while one runs.

Re-encrypting every secret under a new key needs the database to itself: a ``serve`` or a
``worker`` still on the old key would write new webhooks under a key about to be discarded
(their deliveries would then wait for ever) and could not open the re-encrypted ones.

On SQLite (one machine) every process that loads the key (``crypto.secret_box``: ``serve``,
``worker``, the one-shot commands) holds a shared ``flock`` on ``<database>.keylock`` for as
long as it runs; the rotation takes it exclusively, so it is refused while any holder lives,
and holds it until the new key is in place: a process starting meanwhile waits, then reads the
new key. A crashed process's lock goes with it (the kernel drops it), so nothing goes stale.
Holders are named from ``/proc/locks`` where there is one (Linux).

PostgreSQL serves processes on many machines: there the rotation looks at the database's own
sessions instead (``services.secret_keys``), and this module holds nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import weakref
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

log = logging.getLogger("consent_relay.keys")


def lock_path(database_url: str) -> Path | None:
    """``<database file>.keylock`` for a SQLite file; None for PostgreSQL or in memory."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(f"{Path(url.database).resolve()}.keylock")


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


class KeyHold:
    """An open lock file: the lock lasts until ``close``, or until the hold is collected
    (a raw descriptor, closed by a finalizer: no file object to warn about)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.close = weakref.finalize(self, os.close, fd)


def hold(path: Path) -> KeyHold | None:
    """A shared hold on the key for this process, for as long as the returned hold lives.
    Waits while a rotation runs. None (after a warning) when the lock cannot be had at all,
    e.g. a read-only folder: the process runs, unguarded."""
    try:
        held = KeyHold(_open(path))
    except OSError as exc:
        log.warning("cannot open %s (%s): rotate-secret-key will not see this process", path, exc)
        return None
    try:
        fcntl.flock(held.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        log.warning("rotate-secret-key is running: waiting for it to finish")
        fcntl.flock(held.fd, fcntl.LOCK_SH)
    return held


@contextlib.contextmanager
def exclusive(path: Path, *, force: bool = False) -> Iterator[list[str]]:
    """The key to ourselves while the block runs. Yields the processes that hold it (named),
    an empty list when we have it alone; with ``force`` the block runs regardless."""
    held = KeyHold(_open(path))
    try:
        try:
            fcntl.flock(held.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not force:
                yield holders(path) or ["a process that could not be named"]
                return
        yield []
    finally:
        held.close()


def holders(path: Path) -> list[str]:
    """The processes holding a lock on ``path``, named from /proc (Linux); [] elsewhere."""
    try:
        table = Path("/proc/locks").read_text()
        stat = path.stat()
    except OSError:
        return []
    pids = lock_holders(table, os.major(stat.st_dev), os.minor(stat.st_dev), stat.st_ino)
    return [describe(pid, _cmdline(pid)) for pid in pids if pid != os.getpid()]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def lock_holders(proc_locks: str, major: int, minor: int, inode: int) -> list[int]:
    """The pids holding (not waiting for) a lock on one file, from the text of /proc/locks:
    ``1: FLOCK  ADVISORY  READ  1234 08:02:131090 0 EOF`` (device numbers in hex)."""
    device = f"{major:02x}:{minor:02x}:{inode}"
    found: list[int] = []
    for line in proc_locks.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->":
            continue
        pid, where = fields[4], fields[5]
        if where == device and pid.isdigit() and int(pid) not in found:
            found.append(int(pid))
    return found


def describe(pid: int, cmdline: bytes) -> str:
    """``consent-relay serve (pid 1234)`` from a process's /proc cmdline."""
    args = [arg for arg in cmdline.decode(errors="replace").split("\0") if arg]
    named = [i for i, arg in enumerate(args) if Path(arg).name == "consent-relay"]
    if named:
        command = " ".join(["consent-relay", *args[named[0] + 1 : named[0] + 2]])
    elif args:
        command = " ".join(Path(arg).name if i == 0 else arg for i, arg in enumerate(args[:3]))
    else:
        command = "a process"
    return f"{command} (pid {pid})"
