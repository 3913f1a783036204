"""The bench guard: restores the bench when the harness process dies without doing it itself.

`Bench.open` starts `python -m harness.guard --rig RIG` in its own session, holding the write end
of the guard's stdin. A clean `Bench.close()` writes "disarm" and the guard exits. If the harness
is killed (even with SIGKILL) the kernel closes that pipe: the guard reads EOF without "disarm"
and restores the rig's clean state on its own: every PSU output back to its rig value and on,
every toxic removed, every printer fault cleared. A real bench is never left powered off or
jammed overnight because a test process crashed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

from harness.rig import Rig, load_rig

log = logging.getLogger("guard")


def restore(rig: Rig) -> list[str]:
    """Bring the bench to its clean state with fresh drivers; returns what could not be done."""
    from harness.bench import clean_steps

    drivers: dict[str, Any] = {"power": None, "network": None, "printer": None}
    closers: list[Any] = []
    problems: list[str] = []
    try:
        if rig.psu is not None:
            from harness.drivers.psu import ScpiPsu

            drivers["power"] = ScpiPsu(rig.psu)
            closers.append(drivers["power"].close)
        if rig.network is not None:
            from harness.drivers.network import Network

            drivers["network"] = Network(rig.network.toxiproxy, rig.network.allow_upstreams)
            closers.append(drivers["network"].close)
        if rig.printer is not None:
            from harness.drivers.printer import open_printer_faults

            state_dir = rig.sim.state_dir if rig.sim is not None else None
            drivers["printer"] = open_printer_faults(rig.printer, state_dir)
    except Exception as exc:
        problems.append(f"opening the drivers: {exc}")
    for name, step in clean_steps(
        rig, drivers["power"], drivers["network"], drivers["printer"], None
    ):
        try:
            step()
            log.info("done: %s", name)
        except Exception as exc:
            problems.append(f"{name}: {exc}")
    for close in closers:
        try:
            close()
        except Exception as exc:
            log.warning("closing a driver: %s", exc)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rig", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s guard[%(process)d] %(levelname)s %(message)s"
    )
    rig = load_rig(args.rig)
    log.info("guarding %s", rig.path)
    for line in sys.stdin:
        if line.strip() == "disarm":
            log.info("disarmed: the harness closed the bench itself")
            return 0
    started = time.monotonic()
    log.warning("the harness went away without closing the bench: restoring it")
    problems = restore(rig)
    for problem in problems:
        log.error("could not restore %s", problem)
    log.info("restored in %.3f s", time.monotonic() - started)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
