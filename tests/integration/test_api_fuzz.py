"""Property-based fuzzing of the whole API from its own /openapi.json (schemathesis), on SQLite
and PostgreSQL, with a fixed seed and a bounded number of examples.

- every operation, with data that fits the schema: no 5xx, answers with the documented status
  codes, media types and shapes, and schema-valid data accepted except where a rule the schema
  cannot state refuses it (``SEMANTIC_FIELDS``, named by the problem's fields);
- every operation, with data that breaks the schema: no 5xx;
- the stateful phase: sequences that follow the OpenAPI links (a created webhook to its test
  send, deliveries and replay; an event to its user...): no 5xx, documented answers.

The app runs in schemathesis' own event loop (its ASGI client), with its own context, on a
database emptied first; the organization is created through the admin API. Host names in
generated URLs are not looked up (no DNS from a test): a failed lookup is not a refusal.
Each stateful scenario starts from the same empty organization (see ``setup``), and every
creating POST may start one (``_every_creation_is_a_root``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case as GenericCase
from schemathesis import CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import get_client, shutdown_lifespans
from schemathesis.specs.openapi import stateful as openapi_stateful
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from consent_relay import crypto
from consent_relay.api.app import create_app
from consent_relay.services import webhooks as webhook_service
from consent_relay.settings import Settings
from consent_relay.storage import databases
from consent_relay.storage.store import Store
from tests.conftest import prepare_store

Case = GenericCase[Any]
SEED = 20261201
# Examples per operation and mode, and stateful scenarios; a deeper run now and then:
# CONSENT_RELAY_FUZZ_EXAMPLES=400 pytest tests/integration/test_api_fuzz.py (15 minutes)
EXAMPLES = int(os.environ.get("CONSENT_RELAY_FUZZ_EXAMPLES", "8"))
STEPS = 5 * EXAMPLES
# The suite's 300 s a test, and more for a deeper run: its stateful phase takes about
# 0.8 s an example (2,000 steps at 400 outgrew the 300 s).
pytestmark = pytest.mark.timeout(max(300, 3 * EXAMPLES))
ADMIN_TOKEN = "fuzz-admin-token"

# Rules the schema cannot state; schema-valid data may break them and get a 422 naming the
# field (a problem field equal to one of these, or below one: "consents" covers
# "consents.vendors"). Anything else refused from schema-valid data is a schema that lies.
SEMANTIC_FIELDS = (
    "cursor",  # only a cursor this API returned
    "created_at",  # at most five minutes ahead
    "since",  # years 1000 to 9999 once in UTC
    "until",
    "consents",  # ids listed once; a vendor not both enabled and disabled
    "metadata",  # free-form JSON: no integer beyond 64 bits, nesting depth
    "user.metadata",
    "delegate.metadata",
    "url",  # the SSRF guard: loopback, private, metadata addresses
    "authentication.token_url",
    "authentication.client_secret",  # required when creating OAuth, optional in a PATCH
    "authentication.token_request_headers",  # reserved names, 8 KiB in all
    "headers",  # reserved names, 8 KiB in all, Authorization with OAuth
    "delivery_ids",  # must be dead letters of this webhook
    "status",  # a confirmed event stays confirmed
)


def _semantic(field: str) -> bool:
    if field.startswith("consents.") and field.endswith(".metadata"):
        return True
    return any(field == name or field.startswith(f"{name}.") for name in SEMANTIC_FIELDS)


def accepted_unless_semantic(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Schema-valid data is accepted (2xx, or 404/409 about a resource), except a 422 whose
    every field is one of ``SEMANTIC_FIELDS``."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code < 400:
        return None
    if response.status_code in (401, 404, 409):
        return None
    fields: list[str] = []
    if response.status_code == 422:
        fields = [error["field"] for error in response.json().get("errors", [])]
        if fields and all(_semantic(field) for field in fields):
            return None
    raise AssertionError(
        f"schema-valid data refused with {response.status_code} (fields {fields}): "
        f"{response.text[:500]}"
    )


CHECKS: list[Any] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    accepted_unless_semantic,
]


async def _no_dns(host: str) -> list[str]:
    raise OSError(f"no DNS lookups in the fuzz test ({host})")


@pytest.fixture
def offline_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SSRF guard as the webhook service calls it, resolving nothing."""
    guard = webhook_service.targets  # type: ignore[attr-defined]
    checked = guard.check_url_resolved

    async def check_url_resolved(url: str, *args: Any, **kwargs: Any) -> None:
        await checked(url, *args, **{**kwargs, "resolve": _no_dns})

    monkeypatch.setattr(guard, "check_url_resolved", check_url_resolved)


async def _empty_database(settings: Settings) -> None:
    store = Store(settings.resolved_database_url, pool_size=1)
    try:
        await prepare_store(store)
    finally:
        await store.close()


@pytest.fixture
def fuzzed(
    tmp_path: Path, db_url: str, offline_targets: None
) -> Iterator[tuple[schemathesis.BaseSchema, Callable[[Case], dict[str, str]], Settings]]:
    """The schema of an app on a fresh database, and the credentials for each case."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        admin_token=ADMIN_TOKEN,
        secret_key=crypto.new_key(),
        allowed_networks=[],
        request_timeout=2.0,
        connect_timeout=1.0,
    )
    asyncio.run(_empty_database(settings))
    app: FastAPI = create_app(settings)
    try:
        with get_client(app) as client:  # type: ignore[arg-type]  # starts the app (stays up)
            created = client.post(
                "/v1/admin/organizations",
                json={"id": "acme", "name": "Acme"},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
        assert created.status_code == 201, created.text
        api_key = created.json()["api_key"]
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)

        def credentials(case: Case) -> dict[str, str]:
            admin = case.operation.path.startswith("/v1/admin")
            return {"Authorization": f"Bearer {ADMIN_TOKEN if admin else api_key}"}

        yield schema, credentials, settings
    finally:
        shutdown_lifespans()  # closes the app's store


async def _empty_organization(store: Store) -> None:
    """Every row gone but the organization and its API key (test plumbing, not app SQL)."""
    async with store.write() as tx:
        await databases.clear_tables(tx, keep={"organizations", "api_keys"})


def _stateful_settings() -> hypothesis_settings:
    return hypothesis_settings(
        max_examples=STEPS,
        stateful_step_count=15,
        derandomize=True,  # the same sequences every run
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


def _settings(examples: int) -> hypothesis_settings:
    return hypothesis_settings(
        max_examples=examples,
        derandomize=False,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


def _run_operation(
    operation: Any, mode: GenerationMode, credentials: Callable[[Case], dict[str, str]]
) -> None:
    positive = mode is GenerationMode.POSITIVE
    checks = CHECKS if positive else [not_a_server_error]

    @seed(SEED)
    @_settings(EXAMPLES if positive else max(1, EXAMPLES // 2))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Case) -> None:
        case.call_and_validate(headers=credentials(case), checks=checks)

    run()


def test_every_operation_fuzzed(
    fuzzed: tuple[schemathesis.BaseSchema, Callable[[Case], dict[str, str]], Settings],
) -> None:
    schema, credentials, _ = fuzzed
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) > 20
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _run_operation(operation, mode, credentials)
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to break: no parameters
            except (Exception, BaseExceptionGroup) as exc:  # every operation is tried
                failures.append(f"{operation.label} ({mode.value}): {exc}"[:3000])
    assert not failures, "\n\n".join(failures)


def _every_creation_is_a_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start scenarios from every POST that creates something. Schemathesis' guess takes
    ``proofs_id`` and ``organization_user_id`` in an event or user for references to
    resources that nothing creates, and then never starts from events or users."""

    def likely_root(operation: Any, node: Any, produced_anywhere: set[str]) -> bool:
        return operation.method == "post" or (
            operation.method == "get" and not operation.path_parameters
        )

    monkeypatch.setattr(openapi_stateful, "is_likely_root_transition", likely_root)


def test_stateful_sequences_fuzzed(
    fuzzed: tuple[schemathesis.BaseSchema, Callable[[Case], dict[str, str]], Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schema, credentials, settings = fuzzed
    _every_creation_is_a_root(monkeypatch)
    base = schema.as_state_machine()
    reached: set[str] = set()

    loop = asyncio.new_event_loop()  # the resets' own, apart from the app's
    store = Store(settings.resolved_database_url, pool_size=1)

    class Machine(base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            # Each scenario starts from the same empty organization, so that replaying one
            # (hypothesis does) meets the same answers: no 409 for ids an earlier one took.
            loop.run_until_complete(_empty_organization(store))

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"headers": credentials(case)}

        def validate_response(
            self, response: Response, case: Case, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            if response.status_code < 400:
                reached.add(case.operation.label)
            case.validate_response(
                response,
                checks=[
                    not_a_server_error,
                    status_code_conformance,
                    content_type_conformance,
                    response_schema_conformance,
                ],
                transport_kwargs=kwargs or None,
            )

    try:
        Machine.run(settings=_stateful_settings())
    finally:
        loop.run_until_complete(store.close())
        loop.close()

    # The links lead past creation: to a webhook's own routes and its deliveries, to events
    # and users. (Scenarios are not fully reproducible: schemathesis draws some link choices
    # from a free-running random, so the check asks for kinds of routes, not a fixed list.)
    assert {"POST /v1/webhooks", "POST /v1/consents/events"} <= reached, sorted(reached)
    assert any("{webhook_id}/" in label for label in reached), sorted(reached)
    assert any("deliver" in label for label in reached), sorted(reached)
    assert any("{user_id}" in label for label in reached), sorted(reached)


def test_openapi_states_constraints_and_links(tmp_path: Path) -> None:
    """What the fuzzer relies on, stated in /openapi.json itself."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'unused.db'}",
        admin_token=ADMIN_TOKEN,
        secret_key=crypto.new_key(),
    )
    document = create_app(settings).openapi()
    schemas = document["components"]["schemas"]
    headers = schemas["WebhookIn"]["properties"]["headers"]
    assert headers["maxProperties"] == 20
    assert headers["propertyNames"]["pattern"].startswith("^[!#$%&'*+")
    assert headers["additionalProperties"]["pattern"] == "^[ -~]*$"
    regulations = schemas["WebhookIn"]["properties"]["regulations"]["items"]
    assert "gdpr" in regulations["enum"]
    assert "anyOf" in schemas["EventUserIn"]
    assert "null" not in str(schemas["WebhookPatch"]["properties"]["url"])
    created = document["paths"]["/v1/webhooks"]["post"]["responses"]["201"]
    targets_of_links = {link["operationId"] for link in created["links"].values()}
    assert any("list_deliveries" in target for target in targets_of_links)
    assert any("replay" in target for target in targets_of_links)
    sent = document["paths"]["/v1/webhooks/{webhook_id}/test"]["post"]["responses"]["202"]
    [link] = sent["links"].values()
    assert link["parameters"] == {"delivery_id": "$response.body#/delivery_id"}
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
