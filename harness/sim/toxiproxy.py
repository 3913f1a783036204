"""The embedded toxiproxy server: a drop-in for Shopify's toxiproxy v2.12.0 on the sim bench.

Run as `python -m harness.sim.toxiproxy [--host H] [--port P] [--config FILE] [--seed N]`, or
in-process with `ToxiproxyServer(host, port).start()` (port 0 picks a free one; `.port`, `.url`,
`.stop()`, usable as a context manager). Clients written for the real server (toxiproxy-python,
the Go client and CLI, our `harness.drivers.network`) work unchanged: the HTTP API answers byte
for byte like 2.12.0 (`toxiproxy_api`, `toxiproxy_json`), and the data plane follows the real
connection model: accept then dial, two links per connection, per-chunk toxics in insertion
order, close propagation without half-close, live toxic changes on open connections
(`toxiproxy_link`, `toxics`).

The one thing to know: a direction without toxics is forwarded by its reader thread directly
(blocking sockets, TCP_NODELAY), so a toxic-free proxy adds about 70-80 µs p50 to a 200-byte
loopback round trip (bench/toxiproxy_latency.py; the Go server adds 60-75 µs); once a toxic is
attached, a pump thread drives the toxics with the monotonic clock (timer precision ~0.1 ms).

Deviations from the real server, all deliberate:
- Values the real server accepts and then hangs or crashes on are accepted the same way (200) but
  are safe here: bandwidth `rate <= 0` holds that direction's data without spinning until the
  toxic is updated or removed (Go: stalls forever for 0, crashes the process for < 0); slicer
  `average_size <= 0` cuts 1-byte pieces, and a `size_variation` that would make empty or
  negative pieces is clamped (Go: infinite recursion or a crash); `size_variation <= 0` means
  no variation (Go: a panic in `rand.Intn(0)` on some versions).
- Toxicity is drawn per connection x direction x toxic when the toxic is attached (at accept or
  when added) and again when it is updated. The real server also re-draws, as an artefact, when
  a neighbouring toxic is added or removed, and it forwards a latency toxic's pending chunk early
  in that case; here neighbours do not disturb each other.
- reset_peer is faithful: the connection gets SO_LINGER 0 (a real RST) only if a reset_peer toxic
  (any stream, any toxicity) exists when the connection is accepted; added later it closes with
  FIN, and with toxicity 0 it still turns ordinary closes into RSTs (#603). An armed reset_peer
  fires as planned even if it is updated or removed meanwhile, like Go's uninterruptible wait,
  but the API call returns at once instead of blocking until then (no 503s).
- The upstream dial has a 10 s timeout (Go: none, OS default).
- /reset visits proxies in name order (Go: random map order) and, like Go, stops at the first
  proxy that cannot be restarted.
- A toxic PATCH that fails with 400 changes nothing (Go may already have applied the valid
  attributes of that body to the live toxic).
- JSON nested deeper than about 900 levels is refused with "exceeded max depth" (Go: 10000).
- Host name lookup failures read `lookup HOST: no such host` (Go adds the resolver address).
- No `http.TimeoutHandler` (our handlers never block), no `/metrics`, no `-proxy-metrics` /
  `-runtime-metrics`; `--seed` really seeds toxicity, jitter and slicer draws (Go's has no
  effect). Logs are Python logging lines on stderr, not zerolog JSON.
- A `--config` file that cannot be read or populated makes the process exit with status 2
  (Go logs the error and serves without those proxies).
- Unusual HTTP methods other than GET/HEAD/POST/PUT/PATCH/DELETE/OPTIONS/TRACE get Python's 501,
  and malformed HTTP gets Python's error page (Go: 404/405, and Go's 400 text).
- Eager reading is bounded: a link holds at most 1024 unprocessed chunks in its first toxic
  before its reader waits (Go: 1024 for latency, no buffer for the others).
- When one side closes while the proxy is blocked writing to a peer that does not read, the
  FIN to the other side may be delayed by up to 0.1 s (the send-timeout poll); Go closes at once.
"""

from __future__ import annotations

import argparse
import logging
import random
import threading
from pathlib import Path
from types import TracebackType

from harness.sim.process import die_with_parent, stop_event
from harness.sim.toxiproxy_api import VERSION, ApiHttpServer, ToxiproxyApi
from harness.sim.toxiproxy_proxy import ProxyCollection

log = logging.getLogger("harness.sim.toxiproxy")

POLL_S = 0.05  # how fast serve_forever notices stop()


class ToxiproxyServer:
    """One toxiproxy-compatible server: its HTTP API and every proxy it runs."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, seed: int | None = None) -> None:
        self.host = host
        self._requested_port = port
        self.collection = ProxyCollection(random.Random(seed))
        self.api = ToxiproxyApi(self.collection)
        self._http: ApiHttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._http is None:
            raise RuntimeError("the toxiproxy server is not started")
        return int(self._http.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ToxiproxyServer:
        """Bind the API port and serve in a background thread; raises OSError if it is taken."""
        self._http = ApiHttpServer((self.host, self._requested_port), self.api)
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": POLL_S},
            name="toxiproxy-api",
            daemon=True,
        )
        self._thread.start()
        log.info("toxiproxy API (%s) on %s", VERSION, self.url)
        return self

    def populate(self, config: bytes) -> int:
        """Load a JSON array of proxies like POST /populate; raises ValueError on failure."""
        proxies, error = self.api.run_populate(config)
        if error is not None:
            raise ValueError(f"{error.message} (status {error.status})")
        return len(proxies)

    def stop(self) -> None:
        """Stop the API, close its connections, then stop every proxy and close its clients."""
        http, self._http = self._http, None
        if http is not None:
            http.shutdown()
            http.close_connections()
            http.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.collection.stop_all()
        log.info("toxiproxy stopped")

    def __enter__(self) -> ToxiproxyServer:
        return self.start() if self._http is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="toxiproxy-server", description="toxiproxy v2.12.0-compatible server"
    )
    parser.add_argument("--host", default="127.0.0.1", help="API address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8474, help="API port (default 8474)")
    parser.add_argument("--config", type=Path, help="JSON array of proxies, as for /populate")
    parser.add_argument("--seed", type=int, help="seed for toxicity, jitter and slicer draws")
    parser.add_argument(
        "--version", action="version", version=f"toxiproxy-server version {VERSION}"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    die_with_parent()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s toxiproxy[%(process)d] %(levelname)s %(message)s"
    )
    stop = stop_event()
    server = ToxiproxyServer(args.host, args.port, seed=args.seed)
    try:
        server.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, exc)
        return 2
    try:
        if args.config is not None:
            try:
                count = server.populate(args.config.read_bytes())
            except (OSError, ValueError) as exc:
                log.error("config %s: %s", args.config, exc)
                return 2
            log.info("populated %d proxies from %s", count, args.config)
        stop.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
