"""Experimental node runner for A/B runs: ``bart`` with monkeypatches, no product edits.

Use with any benchmark::

    BART_BENCH_RUNNER=bench/ab_patches.py BENCH_PATCH=nopublish \\
        .venv/bin/python bench/ingest.py

``BENCH_PATCH`` is a comma-separated list of the patches below; empty runs the
node unchanged (the "A" of an A/B). They bound what a part of the path costs;
they are not fixes. (The earlier sketches ``nonce``, ``receipt``, ``asciifast``,
``nolocal``, ``aiopaho`` and ``timeout311`` are in the product now and were
removed here: patched twice they would break it.)

- ``nopublish``: no MQTT publish of local events (what the fan-out costs).
- ``fakesubmit``: reports are not stored nor published (HTTP + app cost only).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

PATCHES = frozenset(filter(None, os.environ.get("BENCH_PATCH", "").split(",")))


def _nopublish() -> None:
    from node.runtime import NodeRuntime

    async def publisher(self: Any) -> None:
        while True:  # drain the outbox, publish nothing
            await self._outbox.get()

    NodeRuntime._publisher = publisher  # type: ignore[method-assign]


def _fakesubmit() -> None:
    from node.reports import Submitted
    from node.runtime import NodeRuntime
    from sync import KeyPair
    from sync.event import make_event

    fake = make_event(KeyPair.generate(), origin="x", stream="private", seq=1, kind="report",
                      ts=1_800_000_000_000,
                      body={"category": "nuisance", "text": "x", "audience": "authorities",
                            "place": {"point": None, "text": ""}, "receipt": "AAA-AAA"})

    async def submit_report(self: Any, clean: Any) -> Submitted:
        await asyncio.sleep(0)
        return Submitted(fake, None)

    NodeRuntime.submit_report = submit_report  # type: ignore[method-assign]


ALL = {"nopublish": _nopublish, "fakesubmit": _fakesubmit}

if __name__ == "__main__":
    if unknown := PATCHES - set(ALL):
        sys.exit(f"unknown BENCH_PATCH entries: {', '.join(sorted(unknown))}")
    for name in sorted(PATCHES):
        ALL[name]()
    from bart.cli import main

    sys.exit(main())
