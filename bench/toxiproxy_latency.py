"""What the embedded toxiproxy adds to a 200-byte request/response round trip, and its throughput.

Run: `.venv/bin/python bench/toxiproxy_latency.py [--rounds N] [--bulk-mb M]`. Starts an echo/sink
server and the toxiproxy server (`python -m harness.sim.toxiproxy`) as separate processes, so
neither shares the client's interpreter, then measures direct and proxied round trips in
interleaved blocks (so load drift hits both alike) and prints p50/p95/p99 side by side with the
difference, then bulk one-way throughput through a toxic-free proxy. DESIGN §8 target: the proxy
adds about 0.1 ms p50, never above 0.2 ms (the real Go server adds 60-75 µs on 2 cores).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import requests

from harness.sim.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = bytes(range(200))
BLOCK = 500

ECHO_SERVER = r"""
import socket, struct, sys, threading

def serve_echo(conn):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)

def serve_sink(conn):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn:
        header = b""
        while len(header) < 8:
            header += conn.recv(8 - len(header))
        remaining = struct.unpack("!Q", header)[0]
        while remaining:
            data = conn.recv(min(remaining, 1 << 20))
            if not data:
                return
            remaining -= len(data)
        conn.sendall(b"k")

def accept(listener, handler):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handler, args=(conn,), daemon=True).start()

echo = socket.create_server(("127.0.0.1", 0))
sink = socket.create_server(("127.0.0.1", 0))
threading.Thread(target=accept, args=(sink, serve_sink), daemon=True).start()
print(echo.getsockname()[1], sink.getsockname()[1], flush=True)
threading.Thread(target=accept, args=(echo, serve_echo), daemon=True).start()
sys.stdin.read()  # runs until the bench closes our stdin
"""


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def round_trips(sock: socket.socket, count: int) -> list[float]:
    """Microseconds per 200-byte request/response."""
    samples = []
    size = len(PAYLOAD)
    for _ in range(count):
        started = time.perf_counter_ns()
        sock.sendall(PAYLOAD)
        received = 0
        while received < size:
            received += len(sock.recv(4096))
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


def bulk_mb_per_s(port: int, megabytes: int) -> float:
    """One-way throughput to the sink: `megabytes` MB, then a 1-byte acknowledgement."""
    total = megabytes * 1_000_000
    block = b"\x00" * (1 << 20)
    with connect(port) as sock:
        started = time.perf_counter()
        sock.sendall(struct.pack("!Q", total))
        sent = 0
        while sent < total:
            chunk = block[: min(len(block), total - sent)]
            sock.sendall(chunk)
            sent += len(chunk)
        if sock.recv(1) != b"k":
            raise RuntimeError("the sink did not acknowledge the bulk transfer")
        return megabytes / (time.perf_counter() - started)


def start_toxiproxy(api_port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "harness.sim.toxiproxy", "--port", str(api_port)]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while True:
        try:
            requests.get(f"http://127.0.0.1:{api_port}/version", timeout=1).raise_for_status()
            return process
        except requests.RequestException:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the toxiproxy server did not start") from None
            time.sleep(0.05)  # a child process has no readiness signal but its port


def create_proxy(api_port: int, name: str, upstream_port: int) -> int:
    body = {"name": name, "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{upstream_port}"}
    response = requests.post(f"http://127.0.0.1:{api_port}/proxies", json=body, timeout=5)
    response.raise_for_status()
    return int(response.json()["listen"].rsplit(":", 1)[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5000, help="round trips per path")
    parser.add_argument("--bulk-mb", type=int, default=200, help="megabytes for throughput")
    args = parser.parse_args()

    echo = subprocess.Popen(
        [sys.executable, "-c", ECHO_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert echo.stdout is not None and echo.stdin is not None
    echo_port, sink_port = (int(p) for p in echo.stdout.readline().split())
    api_port = free_port()
    toxiproxy = start_toxiproxy(api_port)
    try:
        proxy_port = create_proxy(api_port, "echo", echo_port)
        sink_proxy_port = create_proxy(api_port, "sink", sink_port)
        direct_sock, proxy_sock = connect(echo_port), connect(proxy_port)
        with direct_sock, proxy_sock:
            round_trips(direct_sock, BLOCK)  # warm up both paths
            round_trips(proxy_sock, BLOCK)
            direct: list[float] = []
            proxied: list[float] = []
            for _ in range(max(1, args.rounds // BLOCK)):
                direct += round_trips(direct_sock, BLOCK)
                proxied += round_trips(proxy_sock, BLOCK)
        d50, d95, d99 = percentiles(direct)
        p50, p95, p99 = percentiles(proxied)
        print(f"200-byte round trips on loopback, {len(direct)} per path, in µs")
        print(f"{'':14}{'p50':>9}{'p95':>9}{'p99':>9}")
        print(f"{'direct':14}{d50:9.1f}{d95:9.1f}{d99:9.1f}")
        print(f"{'via toxiproxy':14}{p50:9.1f}{p95:9.1f}{p99:9.1f}")
        print(f"{'added':14}{p50 - d50:9.1f}{p95 - d95:9.1f}{p99 - d99:9.1f}")
        verdict = "within" if p50 - d50 <= 200 else "ABOVE"
        print(f"target (DESIGN §8): added p50 about 100 µs, never above 200 µs: {verdict}")
        direct_mb = bulk_mb_per_s(sink_port, args.bulk_mb)
        proxy_mb = bulk_mb_per_s(sink_proxy_port, args.bulk_mb)
        print(
            f"bulk one-way throughput ({args.bulk_mb} MB): direct {direct_mb:.0f} MB/s, "
            f"via toxiproxy {proxy_mb:.0f} MB/s"
        )
    finally:
        toxiproxy.terminate()
        toxiproxy.wait(10)
        echo.stdin.close()
        echo.wait(10)
        echo.stdout.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
