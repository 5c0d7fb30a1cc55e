"""Process entry of ``bart point run``: signals, paths, the asyncio loop."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from .device import PointDevice, load_bundle


def run_point(config: Path, data_dir: Path | None, *, gpio: str = "auto",
              control_port: int | None = None) -> int:
    """Run one point device until SIGINT/SIGTERM; exit 0 on a clean stop."""
    bundle = load_bundle(config)
    directory = data_dir or config.parent / f"point-{bundle['point']}-data"

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        device = PointDevice(bundle, directory, gpio=gpio, control_port=control_port)
        await device.run(stop)

    asyncio.run(main())
    return 0
