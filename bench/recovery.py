"""How long audio takes to come back after the SFU or the network returns.

Two `Bridge`s with production defaults (`PeerConfig()`) share a room on a standalone local
SFU (`python -m media.sfu`, its own process); one speaks a 1 kHz tone, the other's output is
read every 20 ms. Each fault is real:

  sigterm_restart   the SFU is terminated (it closes its connections) and started again
  sigkill_restart   the SFU is killed (nothing closed, nobody told) and started again
  blackout_3s       every packet the SFU sends is dropped by the kernel for 3 s
  blackout_35s      the same for 35 s, longer than ICE consent (~30 s): both sides rebuild
  session_gone_410  the SFU forgets the listener's session (embedded SFU; clock from the fault)

A fault is confirmed before it is timed (the listener falls silent, or its peer rebuilds), then
the clock runs from the SFU answering again / the blackout rule being removed until 100 ms of
the tone in a row reach the listener's output. The blackouts need root and iptables.

    .venv/bin/python bench/recovery.py                  # every fault, 3 runs each
    .venv/bin/python bench/recovery.py --runs 5 --fault sigkill_restart
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media.aiortc_compat import pin_host_addresses

pin_host_addresses(["127.0.0.1"])  # before anything can open a socket: media stays on loopback

import argparse
import asyncio
import logging
import statistics

from bench.harness import machine
from tests.support.recovery import FAULTS, measure_recovery
from tests.support.sfu_process import blackout_supported


async def run(faults: list[str], runs: int) -> int:
    print(f"machine: {machine()}")
    print(f"{'fault':<18} {'runs':>4} {'median s':>9} {'max s':>7} {'recoveries':>11}")
    worst = 0.0
    for fault in faults:
        if fault.startswith("blackout") and not blackout_supported():
            print(f"{fault:<18} skipped: needs root, iptables and setpriv")
            continue
        results = [await measure_recovery(fault, within_s=60) for _ in range(runs)]
        times = [r.back_after_s for r in results]
        worst = max(worst, *times)
        recoveries = "/".join(str(r.recoveries) for r in results)
        print(
            f"{fault:<18} {runs:>4} {statistics.median(times):>9.2f} {max(times):>7.2f} "
            f"{recoveries:>11}",
            flush=True,
        )
    print(f"worst: {worst:.2f} s (goal: <= 2 s)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fault", action="append", choices=sorted(FAULTS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    return asyncio.run(run(args.fault or list(FAULTS), args.runs))


if __name__ == "__main__":
    sys.exit(main())
