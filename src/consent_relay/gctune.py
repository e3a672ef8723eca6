"""The cyclic garbage collector, tuned for a long-running service process.

Measured under the ingest load (docs/write-path.md): with CPython's defaults the API process
spent about a quarter of its CPU in the collector. A request allocates thousands of
short-lived objects, so the youngest generation filled every few hundred microseconds, and
each full collection walked every object the process holds: modules, the FastAPI app, the
compiled pydantic and SQLAlchemy structures, all alive for the whole life of the process.

``settle()`` runs once start-up is over: it collects what start-up left behind, moves every
object alive then out of the collector's reach (``gc.freeze``: they are never collected, and
never walked again), and lets the youngest generation grow larger before a collection.
Reference counting still frees almost every object the moment it is unused; only cycles wait
for the collector, and they still get collected.
"""

from __future__ import annotations

import gc
import os

# Allocations (net) before a young collection; CPython's default is 700.
YOUNG = int(os.environ.get("CONSENT_RELAY_GC_YOUNG", "50000"))
OLDER = (20, 100)  # young collections per middle one, middle ones per full one (default 10, 10)


def settle() -> None:
    """Call once, when the process has finished starting."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, *OLDER)
