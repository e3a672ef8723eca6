"""key_users: the key lock of a SQLite database, and naming who holds it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from consent_relay import key_users

PROC_LOCKS = """\
1: FLOCK  ADVISORY  READ  4242 08:02:131090 0 EOF
2: FLOCK  ADVISORY  READ  4343 08:02:131090 0 EOF
2: -> FLOCK  ADVISORY  WRITE 4444 08:02:131090 0 EOF
3: POSIX  ADVISORY  WRITE 5555 08:02:999 0 EOF
4: FLOCK  ADVISORY  READ  6666 08:03:131090 0 EOF
5: OFDLCK ADVISORY  READ  -1 08:02:131090 0 EOF
"""


@pytest.mark.parametrize(
    ("major", "minor", "inode", "pids"),
    [
        (8, 2, 131090, [4242, 4343]),  # holders only: 4444 waits
        (8, 2, 999, [5555]),
        (8, 3, 131090, [6666]),  # same inode, other device
        (8, 2, 1, []),
        (0x10, 2, 131090, []),  # device numbers are hex: 10 is not 08
    ],
)
def test_lock_holders(major: int, minor: int, inode: int, pids: list[int]) -> None:
    assert key_users.lock_holders(PROC_LOCKS, major, minor, inode) == pids


@pytest.mark.parametrize(
    ("cmdline", "named"),
    [
        (b"/v/bin/python\0/v/bin/consent-relay\0serve\0-q\0", "consent-relay serve (pid 7)"),
        (b"/usr/local/bin/consent-relay\0worker\0", "consent-relay worker (pid 7)"),
        (b"consent-relay\0", "consent-relay (pid 7)"),
        (b"/usr/bin/python3\0-m\0pytest\0-q\0", "python3 -m pytest (pid 7)"),
        (b"", "a process (pid 7)"),
    ],
)  # fmt: skip
def test_describe(cmdline: bytes, named: str) -> None:
    assert key_users.describe(7, cmdline) == named


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:////srv/data/relay.db", "/srv/data/relay.db.keylock"),
        ("postgresql://u@db/relay", None),
        ("sqlite:///:memory:", None),
        ("sqlite://", None),
    ],
)
def test_lock_path(url: str, path: str | None) -> None:
    found = key_users.lock_path(url)
    assert (str(found) if found else None) == path


def test_a_holder_is_named_and_a_rotation_refused(tmp_path: Path) -> None:
    lock = tmp_path / "relay.db.keylock"
    held = key_users.hold(lock)
    assert held is not None
    with key_users.exclusive(lock) as users:
        assert users == ["a process that could not be named"]  # the holder is us: unnamed
    with key_users.exclusive(lock, force=True) as users:
        assert users == []
    held.close()
    with key_users.exclusive(lock) as users:
        assert users == []


def test_a_starting_process_waits_for_the_rotation(tmp_path: Path) -> None:
    lock = tmp_path / "relay.db.keylock"
    holding = threading.Event()
    with key_users.exclusive(lock) as users:
        assert users == []

        def start() -> None:
            held = key_users.hold(lock)
            holding.set()
            assert held is not None
            held.close()

        starter = threading.Thread(target=start)
        starter.start()
        assert not holding.wait(0.3)  # blocked while the rotation holds the key
    assert holding.wait(5)
    starter.join(5)
