"""What each layer of one delivery request costs the client, in CPU-µs a request.

``python -m bench.client_costs`` starts the bench receiver and runs the same 1 KB POST, 200 in
flight, through the layers the worker adds one by one: the bare client; our session; the
Standard Webhooks headers; aiohttp's per-request total deadline; ``sender.send`` (deadline,
no redirects, the kept response, the outcome); ``attempt.run`` (the URL check, the attempt's
own clock), and with the signature. Each
variant runs twice, interleaved, because the machine is noisy; compare within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import uvloop

from bench.receiver import ReceiverProcess
from consent_relay.delivery import attempt, sender
from consent_relay.security import signing, targets
from consent_relay.settings import Settings

BODY = b'{"type":"event.created","parameters":{"x":"' + b"a" * 950 + b'"}}'
PLAIN = {"Content-Type": "application/json"}
HEADERS = {
    **PLAIN,
    "User-Agent": sender.USER_AGENT,
    "webhook-id": "msg_01jabcdefghjkmnpqrstvwxyz0",
    "webhook-timestamp": "1790000000",
    "webhook-signature": "v1," + "A" * 44,
}


async def _measure(count: int, concurrency: int, one: Callable[[], Awaitable[None]]) -> float:
    """CPU-µs a request for ``count`` requests, ``concurrency`` at a time."""
    started = 0

    async def loop() -> None:
        nonlocal started
        while started < count:
            started += 1
            await one()

    cpu = time.process_time()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return (time.process_time() - cpu) / count * 1e6


async def main(count: int, concurrency: int, log: str) -> None:
    async with ReceiverProcess(Path(log)) as receiver:
        url = receiver.url("/costs")
        plain = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
        ours = sender.make_session(Settings(), limit=concurrency)
        allowed = tuple(targets.parse_networks(["127.0.0.0/8"]))
        secrets = [signing.new_secret()]
        deadline = aiohttp.ClientTimeout(total=10, connect=5)

        async def bare() -> None:
            async with plain.post(url, data=BODY, headers=PLAIN) as response:
                await response.read()

        async def session() -> None:
            async with ours.post(url, data=BODY, headers=PLAIN) as response:
                await response.read()

        async def headers() -> None:
            async with ours.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()

        async def total_deadline() -> None:
            async with ours.post(url, data=BODY, headers=HEADERS, timeout=deadline) as response:
                await response.read()

        async def send() -> None:
            await sender.send(ours, url, BODY, dict(HEADERS), deadline=10)

        async def unsigned_attempt() -> None:
            await attempt.run(
                ours, url, BODY, dict(HEADERS), tokens=None, deadline=10, allowed=allowed
            )

        async def signed_attempt() -> None:
            signed = {**PLAIN, "User-Agent": sender.USER_AGENT}
            signed.update(signing.headers(secrets, "msg_1", int(time.time()), BODY))
            await attempt.run(ours, url, BODY, signed, tokens=None, deadline=10, allowed=allowed)

        variants = [
            ("bare client", bare),
            ("+ our session", session),
            ("+ webhook headers", headers),
            ("+ aiohttp total deadline", total_deadline),
            ("sender.send", send),
            ("attempt.run", unsigned_attempt),
            ("attempt.run, signed", signed_attempt),
        ]
        try:
            for round_ in (1, 2):
                for name, one in variants:
                    cost = await _measure(count, concurrency, one)
                    print(f"round {round_}  {name:28s} {cost:6.1f} CPU-us/request", flush=True)
        finally:
            await plain.close()
            await ours.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--log", default="/tmp/consent-relay-client-costs.log")
    args = parser.parse_args()
    uvloop.run(main(args.count, args.concurrency, args.log))
