"""Which webhook messages a change fires (docs/webhook-rules.md), as one pure function.

The service works out the entities before and after a change; this module only decides
which messages that makes, in which order, with which parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

JSON = dict[str, Any]

EVENT_TYPES = (
    "event.created",
    "event.updated",
    "event.deleted",
    "user.created",
    "user.updated",
    "user.deleted",
)

_IGNORED_IN_COMPARISON = frozenset({"version", "updated_at"})


class ChangeKind(Enum):
    EVENT_CREATED = "event_created"
    EVENT_UPDATED = "event_updated"
    EVENT_DELETED = "event_deleted"
    USER_CREATED = "user_created"
    USER_UPDATED = "user_updated"
    USER_DELETED = "user_deleted"


@dataclass(frozen=True)
class Change:
    """A change as the service saw it. ``user_before`` is None when the user is new;
    ``user_after`` is None when the user was deleted. User entities carry the consents of
    the regulation of the event that caused the change."""

    kind: ChangeKind
    event_before: JSON | None = None
    event_after: JSON | None = None
    user_before: JSON | None = None
    user_after: JSON | None = None


@dataclass(frozen=True)
class Message:
    type: str
    parameters: JSON


def effectively_changed(before: JSON | None, after: JSON | None) -> bool:
    """True when the user differs, ignoring ``version`` and ``updated_at``."""
    if before is None or after is None:
        return before is not after
    strip_before = {k: v for k, v in before.items() if k not in _IGNORED_IN_COMPARISON}
    strip_after = {k: v for k, v in after.items() if k not in _IGNORED_IN_COMPARISON}
    return strip_before != strip_after


def _user_updated(source: JSON | None, before: JSON, after: JSON) -> Message:
    return Message("user.updated", {"source": source, "old_entity": before, "new_entity": after})


def _is_pending(event: JSON) -> bool:
    return bool(event.get("status") == "pending_approval")


def messages_for(change: Change) -> list[Message]:
    """The messages a change fires, in order (the table in docs/webhook-rules.md)."""
    kind, user_before, user_after = change.kind, change.user_before, change.user_after
    messages: list[Message] = []

    if kind is ChangeKind.EVENT_CREATED:
        event = _required(change.event_after)
        messages.append(Message("event.created", {"entity": event}))
        if user_before is None:
            messages.append(Message("user.created", {"entity": _required(user_after)}))
        elif not _is_pending(event) and effectively_changed(user_before, user_after):
            messages.append(_user_updated(event, user_before, _required(user_after)))

    elif kind is ChangeKind.EVENT_UPDATED:
        before, after = _required(change.event_before), _required(change.event_after)
        if _is_pending(after):
            # Pending events are always sent as event.created (Didomi's rule).
            messages.append(Message("event.created", {"entity": after}))
        else:
            messages.append(
                Message(
                    "event.updated", {"source": after, "old_entity": before, "new_entity": after}
                )
            )
            if user_before is not None and effectively_changed(user_before, user_after):
                messages.append(_user_updated(after, user_before, _required(user_after)))

    elif kind is ChangeKind.EVENT_DELETED:
        event = _required(change.event_before)
        messages.append(Message("event.deleted", {"entity": event}))
        if user_before is not None and effectively_changed(user_before, user_after):
            messages.append(_user_updated(event, user_before, _required(user_after)))

    elif kind is ChangeKind.USER_CREATED:
        messages.append(Message("user.created", {"entity": _required(user_after)}))

    elif kind is ChangeKind.USER_UPDATED:
        before = _required(user_before)
        if effectively_changed(before, user_after):
            messages.append(_user_updated(None, before, _required(user_after)))

    elif kind is ChangeKind.USER_DELETED:
        messages.append(Message("user.deleted", {"entity": _required(user_before)}))

    return messages


def _required(value: JSON | None) -> JSON:
    if value is None:
        raise ValueError("this change needs that entity")
    return value
