"""Signatures: verifiable by the standardwebhooks library, and equal to an independent HMAC."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from consent_relay.security.signing import headers, new_secret, signature_header

BODY = b'{"type":"user.created","parameters":{"entity":{"id":"u1","name":"Zo\xc3\xab"}}}'
MSG_ID = "msg_01HZX3Q0000000000000000000"


def _expected(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def test_new_secret_shape_and_randomness() -> None:
    secret = new_secret()
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{32}", secret)
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    assert new_secret() != secret
    Webhook(secret)  # the library accepts it


@pytest.mark.parametrize(
    ("secret", "msg_id", "timestamp", "body"),
    [
        pytest.param(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
            b'{"test": 2432232314}', id="standard-webhooks-example",
        ),
        pytest.param(
            "whsec_" + base64.b64encode(bytes(range(24))).decode(), MSG_ID, 1700000000, BODY,
            id="utf8-body",
        ),
        pytest.param(
            "whsec_" + base64.b64encode(b"\xff" * 24).decode(), "m", 0, b"", id="empty-body"
        ),
    ],
)  # fmt: skip
def test_known_answer(secret: str, msg_id: str, timestamp: int, body: bytes) -> None:
    assert signature_header([secret], msg_id, timestamp, body) == _expected(
        secret, msg_id, timestamp, body
    )


def test_standard_webhooks_published_vector() -> None:
    # The example from the Standard Webhooks specification.
    assert (
        signature_header(
            ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b'{"test": 2432232314}',
        )
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_rotation_signs_with_every_secret_in_order() -> None:
    old, new = new_secret(), new_secret()
    header = signature_header([old, new], MSG_ID, 1700000000, BODY)
    assert header.split(" ") == [
        _expected(old, MSG_ID, 1700000000, BODY),
        _expected(new, MSG_ID, 1700000000, BODY),
    ]


def test_headers_verify_with_each_rotating_secret() -> None:
    old, new = new_secret(), new_secret()
    sent = headers([old, new], MSG_ID, int(time.time()), BODY)
    assert set(sent) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert sent["webhook-id"] == MSG_ID
    for secret in (old, new):
        assert Webhook(secret).verify(BODY, sent) == {
            "type": "user.created",
            "parameters": {"entity": {"id": "u1", "name": "Zoë"}},
        }


@pytest.mark.parametrize(
    ("body", "secret_kind"),
    [
        pytest.param(BODY.replace(b"u1", b"u2"), "signing", id="tampered-body"),
        pytest.param(BODY + b" ", "signing", id="appended-byte"),
        pytest.param(BODY, "other", id="wrong-secret"),
    ],
)
def test_verification_fails(body: bytes, secret_kind: str) -> None:
    secret = new_secret()
    sent = headers([secret], MSG_ID, int(time.time()), BODY)
    verifier = Webhook(secret if secret_kind == "signing" else new_secret())
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body, sent)


def test_no_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        signature_header([], MSG_ID, 1700000000, BODY)
