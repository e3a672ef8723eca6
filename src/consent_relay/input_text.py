"""Strings that can be stored and sent back: every text field of every input is checked here.

Two kinds of character break things far from where they came in, so they are refused at the
door (422 naming the field), whatever the field:

- U+0000 (NUL): PostgreSQL ``text`` cannot hold it; the insert fails with a 500.
- a lone surrogate (U+D800 to U+DFFF, from a JSON escape such as ``"\\ud800"``): not Unicode
  at all; UTF-8 encoding fails when the value is stored, logged or sent back as JSON.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

NUL_MESSAGE = "must not contain NUL (U+0000) characters"
SURROGATE_MESSAGE = "must not contain lone surrogates (U+D800 to U+DFFF); it is not valid Unicode"

Location = tuple[int | str, ...]


def unstorable_reason(value: str) -> str | None:
    """Why ``value`` cannot be stored, or None when it can."""
    if "\x00" in value:
        return NUL_MESSAGE
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATE_MESSAGE
    return None


def printable(value: str) -> str:
    """``value`` with what cannot be encoded as UTF-8 escaped (``\\ud800``), so that an error
    message or a field path that quotes it can always be sent back."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def find_unstorable(
    value: Any, where: Location = (), skip: frozenset[str] = frozenset()
) -> Iterator[tuple[Location, str]]:
    """Every string in ``value`` (keys included) that cannot be stored, with its location.
    Keys in ``skip`` are not looked into, at any depth: free-form JSON (metadata) has its own
    check. A model nested below (say a ``PreferenceValue`` under a purpose value named
    ``metadata``) still runs its own walk, so nothing typed escapes."""
    if isinstance(value, str):
        reason = unstorable_reason(value)
        if reason is not None:
            yield where, reason
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in skip:
                continue
            if isinstance(key, str):
                reason = unstorable_reason(key)
                if reason is not None:
                    yield (*where, printable(key)), f"the key {reason}"
                    continue
            yield from find_unstorable(item, (*where, key), skip)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from find_unstorable(item, (*where, index), skip)
