"""The base of every input model (``Strict``) and the checks of single values it is made of:
storable strings and JSON, UTC times, no time too far ahead, errors that name their field.
``schemas`` builds the API's shapes from these."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler, ValidationError, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

from consent_relay.input_text import find_unstorable

MAX_JSON_DEPTH = 64  # metadata nesting; orjson refuses documents deeper than 255 levels
MAX_FUTURE_SKEW = timedelta(minutes=5)  # how far ahead of our clock a created_at may be
NO_NUL = r"^[^\x00]*$"  # stated in the OpenAPI schema; the Strict walk refuses NUL first


def no_nul(value: str) -> str:
    # PostgreSQL text cannot hold U+0000: refuse it here rather than fail in the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL (U+0000) characters")
    return value


def storable_json(value: Any, depth: int = 0) -> None:
    """Refuse what cannot be stored and sent back as JSON: lone surrogates, NaN/Infinity,
    integers beyond 64 bits, nesting deeper than MAX_JSON_DEPTH."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            storable_json(key, depth)
            storable_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            storable_json(item, depth + 1)
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("holds a string that is not valid Unicode") from None
    elif isinstance(value, bool):
        return
    elif isinstance(value, int) and not -(2**63) <= value < 2**64:
        raise ValueError("holds an integer beyond 64 bits")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("holds NaN or Infinity, which JSON cannot represent")


def storable_metadata(value: dict[str, Any]) -> dict[str, Any]:
    storable_json(value)
    return value


def utc(value: datetime | None) -> datetime | None:
    """Aware UTC (a naive time is UTC, not the server's local time), years 1000 to 9999."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None
    if not 1000 <= value.year <= 9999:
        raise ValueError("must be between years 1000 and 9999 (UTC)")
    return value


# No whitespace (spelled out: \s differs between Python, Rust and ECMA regexes, and the
# OpenAPI schema must refuse exactly what the API does), no /, ?, # or NUL.
ID_PATTERN = (
    r"^[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff/?#\x00]+$"
)


def keys_as_property_names(schema: dict[str, Any]) -> None:
    """pydantic states constrained keys as ``patternProperties``, which in JSON Schema lets
    any other key through; say ``propertyNames`` instead, as the API refuses other keys."""
    patterns = schema.pop("patternProperties", None)
    if patterns:
        [(pattern, value)] = patterns.items()
        schema.setdefault("propertyNames", {})["pattern"] = pattern
        schema["additionalProperties"] = value


def check_not_future(value: datetime, now: datetime, skew: timedelta = MAX_FUTURE_SKEW) -> None:
    """Refuse a time more than ``skew`` after ``now`` (exactly ``skew`` is fine). An event
    dated years ahead would sort after every later withdrawal and freeze the user's consent;
    a few minutes allow for the sender's clock running ahead of ours. Raises ValueError."""
    if value > now + skew:
        minutes = int(skew.total_seconds() // 60)
        raise ValueError(f"must not be more than {minutes} minutes in the future")


def field_error(model: type[BaseModel], where: tuple[int | str, ...], message: str) -> None:
    """Raise a validation error about the field at ``where`` (relative to ``model``), so that
    a rule checked across fields still names the one at fault."""
    raise ValidationError.from_exception_data(
        model.__name__,
        [InitErrorDetails(type=PydanticCustomError("value_error", message), loc=where, input=None)],
    )


def _clean(data: dict[str, Any]) -> bool:
    """Whether no string anywhere in ``data`` (keys included) holds a NUL or a lone
    surrogate, decided in C: orjson refuses surrogates and writes NUL as ``\\u0000``.
    The walk that names each bad field runs only when this says no (the walk, in Python,
    was 6% of an event's ingest)."""
    try:
        return b"\\u0000" not in orjson.dumps(data)
    except TypeError:  # a surrogate, or something orjson does not take: walk it
        return False


class Strict(BaseModel):
    """Every input model: unknown fields refused; no string anywhere in the input (keys
    included) may hold NUL or a lone surrogate (see ``input_text``); each error names the
    field. ``FREE_JSON`` fields (metadata) are free-form JSON with their own check;
    ``NOT_NULL`` fields may be left out but not set to null (the schema says so too)."""

    model_config = ConfigDict(extra="forbid")
    FREE_JSON: ClassVar[frozenset[str]] = frozenset({"metadata"})
    NOT_NULL: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _storable_strings(cls, data: Any) -> Any:
        if isinstance(data, dict) and not _clean(data):
            found = list(find_unstorable(data, skip=cls.FREE_JSON))
            if found:
                raise ValidationError.from_exception_data(
                    cls.__name__,
                    [
                        InitErrorDetails(
                            type=PydanticCustomError("string_unstorable", message),
                            loc=where,
                            input=None,
                        )
                        for where, message in found
                    ],
                )
        if isinstance(data, dict):
            for name in cls.NOT_NULL:
                if name in data and data[name] is None:
                    field_error(cls, (name,), "cannot be null (leave it out to keep it)")
        return data

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        document = handler(schema)
        target = handler.resolve_ref_schema(document)
        properties = target.get("properties", {})
        for name in cls.NOT_NULL:
            field = properties.get(name, {})
            kept = [c for c in field.get("anyOf", [field]) if c.get("type") != "null"]
            extra = {k: v for k, v in field.items() if k not in ("anyOf", "default")}
            if "anyOf" in field:
                extra |= kept[0] if len(kept) == 1 else {"anyOf": kept}
            properties[name] = extra
        return document
