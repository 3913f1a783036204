"""The `hil` command: run the simulated bench and the harness's jobs from a shell.

Errors a user can fix (a bad rig file, a busy port) are printed as one clear message with exit
code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from harness.rig import RigError, load_rig

DEFAULT_RIG = Path("rigs/sim.toml")


def _sim_up(args: argparse.Namespace) -> int:
    from harness.sim.launcher import SimBench

    rig = load_rig(args.rig)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    bench = SimBench(rig, fresh=args.fresh)
    try:
        endpoints = bench.start()
        print("ready", flush=True)
        for line in endpoints.lines():
            print(f"  {line}", flush=True)
        stop.wait()
        print("stopping", flush=True)
    finally:
        bench.stop()
    print("stopped", flush=True)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from harness.demo import run_demo

    return run_demo(load_rig(args.rig), amount=args.amount)


def _run(args: argparse.Namespace) -> int:
    from harness.run import run

    return run(args)


def _zoo(args: argparse.Namespace) -> int:
    from harness.zoo import run as zoo_run

    return zoo_run(args)


def _toxiproxy_server(args: argparse.Namespace) -> int:
    from harness.sim.toxiproxy import main as server_main

    return server_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hil", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("sim", help="the simulated bench")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    up = sim_sub.add_parser("up", help="start the simulated bench in the foreground")
    up.add_argument("--rig", type=Path, default=DEFAULT_RIG)
    up.add_argument("--fresh", action="store_true", help="wipe the bench's state dir first")
    up.set_defaults(func=_sim_up)

    demo = sub.add_parser("demo", help="start the sim bench and run one sale end to end")
    demo.add_argument("--rig", type=Path, default=DEFAULT_RIG)
    demo.add_argument("--amount", type=int, default=1234, help="minor units (default 1234)")
    demo.set_defaults(func=_demo)

    from harness.run import add_arguments as add_run_arguments

    run_cmd = sub.add_parser(
        "run",
        help="the nightly job: run the scenario suite, print the scenario x invariant summary, "
        "write JUnit XML and allure-results, build the HTML report",
    )
    add_run_arguments(run_cmd)
    run_cmd.set_defaults(func=_run)

    from harness.zoo import add_arguments as add_zoo_arguments

    zoo = sub.add_parser(
        "zoo", help="run the suite against every buggy firmware; print the detection matrix"
    )
    add_zoo_arguments(zoo)
    zoo.set_defaults(func=_zoo)

    toxi = sub.add_parser(
        "toxiproxy-server",
        help="the embedded toxiproxy-compatible server (--host, --port, --config, --seed)",
        add_help=False,
    )
    toxi.add_argument("rest", nargs=argparse.REMAINDER)
    toxi.set_defaults(func=_toxiproxy_server)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["toxiproxy-server"]:  # its own flags pass straight through
        from harness.sim.toxiproxy import main as server_main

        return server_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except RigError as exc:
        print(f"hil: {exc}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as exc:  # BenchStartError, busy ports, missing devices
        print(f"hil: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
