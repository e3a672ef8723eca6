"""Our HMAC signer against the ``standardwebhooks`` reference library, on varied inputs: the
same header as the library's ``sign`` for every secret (padded or not, of several lengths),
message id, timestamp and body, and accepted by its ``verify`` with every secret of a
rotation."""

from __future__ import annotations

import base64
import random
import time
from datetime import UTC, datetime

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from consent_relay.security.signing import headers, new_secret, signature_header

RANDOM = random.Random(20261202)  # fixed: the same cases every run


def _secret(size: int, padded: bool) -> str:
    encoded = base64.b64encode(RANDOM.randbytes(size)).decode()
    return "whsec_" + (encoded if padded else encoded.rstrip("="))


def _body(n: int) -> bytes:
    """A body as the worker renders them: orjson, hence UTF-8, some with non-ASCII text."""
    words = ["consent", "Zoë", "日本語", "emoji 🎉", 'quote " and \\ backslash', "\t\n"]
    parameters: dict[str, object] = {
        f"k{i}": RANDOM.choice(words) * RANDOM.randint(0, 40) for i in range(n % 7)
    }
    parameters["n"] = RANDOM.randint(-(2**40), 2**40)
    return orjson.dumps({"type": "event.created", "parameters": parameters})


CASES = [
    (
        _secret(RANDOM.choice([1, 2, 16, 24, 32, 64]), padded=n % 2 == 0),
        RANDOM.choice(["msg_", "m", "msg_01J", "ünïcode_id"]) + str(n),
        RANDOM.choice([0, 1, 1614265330, 1700000000 + n, 2**31 + n]),
        b"" if n % 10 == 0 else _body(n),
    )
    for n in range(40)
]


@pytest.mark.parametrize(("secret", "msg_id", "timestamp", "body"), CASES)
def test_the_same_signature_as_the_reference_library(
    secret: str, msg_id: str, timestamp: int, body: bytes
) -> None:
    expected = Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body.decode())
    assert signature_header([secret], msg_id, timestamp, body) == expected


@pytest.mark.parametrize("n", range(10))
def test_the_reference_library_verifies_every_secret_of_a_rotation(n: int) -> None:
    secrets = [new_secret() for _ in range(1 + n % 3)]
    body = _body(n)
    sent = headers(secrets, f"msg_{n}", int(time.time()), body)
    assert len(sent["webhook-signature"].split(" ")) == len(secrets)
    for secret in secrets:
        assert Webhook(secret).verify(body, sent) == orjson.loads(body)
    with pytest.raises(Exception):  # noqa: B017, PT011 - a secret that did not sign
        Webhook(new_secret()).verify(body, sent)


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        signature_header(["whsec_"], "m", 0, b"{}")
