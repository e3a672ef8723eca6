"""The "flatten request body" webhook option (docs/webhook-rules.md, "Flatten").

Some receivers (no-code tools, spreadsheets, CRMs with flat field mappings) cannot reach into
nested JSON, so a webhook may ask for one flat object instead. Only the entity a change is about
matters to them: ``parameters.entity``, or ``parameters.new_entity`` for updates, both land under
the same ``parameters__entity__`` prefix so a receiver maps one set of keys for every event type.
``source`` and ``old_entity`` are dropped.

Lists of objects that all carry an ``id`` (purposes, vendors...) are keyed by that id rather than
by position, so ``...__purposes__market_research__enabled`` keeps meaning the same thing whatever
order the purposes come in. Ids are copied verbatim: renaming them would break the receiver's
mapping the day an id changes shape.
"""

from __future__ import annotations

from typing import Any

SEPARATOR = "__"
ENTITY_PREFIX = "parameters__entity"


def flatten_body(body: dict[str, Any]) -> dict[str, Any]:
    """Flatten a webhook body ``{"type", "parameters", ["regulation"]}`` into one flat object.

    ``type`` comes first, then ``regulation`` when the body has one, then the entity's leaves.
    """
    flat: dict[str, Any] = {"type": body["type"]}
    if "regulation" in body:
        flat["regulation"] = body["regulation"]
    parameters: dict[str, Any] = body.get("parameters") or {}
    # An update carries both states; receivers want the state after the change.
    if "new_entity" in parameters:
        _flatten_value(parameters["new_entity"], ENTITY_PREFIX, flat)
    elif "entity" in parameters:
        _flatten_value(parameters["entity"], ENTITY_PREFIX, flat)
    return flat


def _flatten_value(value: Any, key: str, out: dict[str, Any]) -> None:
    """Write ``value`` into ``out`` under ``key``, recursing into objects and lists."""
    if isinstance(value, dict):
        # An empty object has no leaves, so it simply leaves no key behind.
        for child_key, child in value.items():
            _flatten_value(child, f"{key}{SEPARATOR}{child_key}", out)
    elif isinstance(value, list):
        _flatten_list(value, key, out)
    else:
        # Scalars and nulls are leaves: a null is information ("not set"), so it stays.
        out[key] = value


def _flatten_list(items: list[Any], key: str, out: dict[str, Any]) -> None:
    if not items or all(_is_scalar(item) for item in items):
        # Empty lists and lists of scalars are already flat values a receiver can store as-is.
        out[key] = list(items)
        return
    ids = _list_ids(items)
    if ids is not None:
        for item_id, item in zip(ids, items, strict=True):
            # The id is already in the key; repeating it as a leaf would only add noise.
            rest = {k: v for k, v in item.items() if k != "id"}
            _flatten_value(rest, f"{key}{SEPARATOR}{item_id}", out)
        return
    for index, item in enumerate(items):
        _flatten_value(item, f"{key}{SEPARATOR}{index}", out)


def _list_ids(items: list[Any]) -> list[str] | None:
    """The ids to key ``items`` by, or None when the list must be keyed by index.

    Every item must be an object with a string or integer ``id``, and the ids must be unique:
    keying by a duplicated id would silently overwrite one item with another, so such a list
    falls back to positions and loses nothing.
    """
    ids: list[str] = []
    for item in items:
        if not isinstance(item, dict) or "id" not in item:
            return None
        item_id = item["id"]
        if isinstance(item_id, bool) or not isinstance(item_id, str | int):
            return None
        ids.append(str(item_id))
    if len(set(ids)) != len(ids):
        return None
    return ids


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, dict | list)
