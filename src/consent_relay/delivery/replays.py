"""Automatic replay: a webhook's dead letters go out again once its receiver delivers.

The worker's recorder hands each recorded batch to ``AutoReplay.note``; webhooks that
delivered something are looked at (at most every ``RECOVERY_CHECK`` s, at once after one
of their deliveries died) for dead letters to replay, off the recorder's path, in a side
task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from consent_relay import errors, metrics
from consent_relay.domain.timefmt import from_ms
from consent_relay.runtime import Context
from consent_relay.storage import recovery
from consent_relay.storage.queue import Result

log = logging.getLogger("consent_relay.worker")
RECOVERY_CHECK = 1.0  # seconds between two looks for a delivering webhook's dead letters


class AutoReplay:
    def __init__(self, ctx: Context, wake: asyncio.Event) -> None:
        self.ctx = ctx
        self._wake = wake  # set when dead letters were replayed: they are due now
        self._recovery_checked: dict[str, float] = {}  # webhook -> last look (monotonic)
        self._recovery_todo: set[str] = set()
        self._recovery_later: set[str] = set()  # looked at less than RECOVERY_CHECK s ago
        self._recovery_task: asyncio.Task[None] | None = None

    def note(self, kept: Sequence[Result]) -> None:
        """Webhooks that delivered something are looked at (at most every
        ``RECOVERY_CHECK`` s, at once after one of their deliveries died) for dead letters to
        replay; off the recorder's path, in a side task."""
        for result in kept:
            if result.status == "dead":
                self._recovery_checked.pop(result.claimed.webhook_id, None)
        now = time.monotonic()
        for result in kept:
            hook = result.claimed.webhook_id
            if result.status != "delivered":
                continue
            if now - self._recovery_checked.get(hook, -RECOVERY_CHECK) >= RECOVERY_CHECK:
                self._recovery_checked[hook] = now
                self._recovery_todo.add(hook)
            else:
                self._recovery_later.add(hook)
        waiting = self._recovery_todo or self._recovery_later
        if waiting and (self._recovery_task is None or self._recovery_task.done()):
            self._recovery_task = asyncio.create_task(self._recover(), name="recovery")

    async def _recover(self) -> None:
        while self._recovery_todo or self._recovery_later:
            if not self._recovery_todo:
                await asyncio.sleep(RECOVERY_CHECK)  # those looked at a moment ago, again
                self._recovery_todo, self._recovery_later = self._recovery_later, set()
                now = time.monotonic()
                self._recovery_checked.update(dict.fromkeys(self._recovery_todo, now))
            hooks, self._recovery_todo = self._recovery_todo, set()
            try:
                async with self.ctx.store.read() as tx:
                    found = await recovery.needing_replay(tx, hooks)
                for webhook_id, org_id in found:
                    now_ms = self.ctx.clock_ms()
                    async with self.ctx.store.write() as tx:
                        done = await recovery.replay_webhook(
                            tx, org_id, webhook_id, now_ms, from_ms(now_ms)
                        )
                    if done.replayed:
                        log.info(
                            "webhook %s delivers again: %d dead letters replayed",
                            webhook_id,
                            len(done.replayed),
                        )
                        metrics.auto_replays.inc(len(done.replayed))
                        self._wake.set()
            except errors.StorageUnavailable:
                log.warning("database unavailable; dead letters are replayed later")
            except Exception:
                log.exception("automatic replay failed; tried again after the next delivery")

    async def stop(self) -> None:
        """Cancel a replay under way (cut short, it rolls back: done later)."""
        if self._recovery_task is not None:
            self._recovery_task.cancel()
            await asyncio.gather(self._recovery_task, return_exceptions=True)
