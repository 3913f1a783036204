"""The network-fault adapter against the embedded toxiproxy server: every scenario fault observed
on real bytes, healing, the upstream allowlist, several servers per process, timeouts and errors.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import toxiproxy.api

from harness.drivers.network import (
    Network,
    NetworkFaultError,
    ProxyInfo,
    UpstreamNotAllowedError,
)
from harness.sim.toxiproxy import ToxiproxyServer
from tests.test_toxiproxy_server import (
    Upstream,
    connect,
    free_port,
    read_to_end,
    round_trip,
)

TIMEOUT_S = 2.0


@pytest.fixture
def server() -> Iterator[ToxiproxyServer]:
    with ToxiproxyServer(seed=3) as srv:
        yield srv


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    host = Upstream()
    yield host
    host.close()


@pytest.fixture
def network(server: ToxiproxyServer, upstream: Upstream) -> Iterator[Network]:
    with Network(server.url, [upstream.address], timeout_s=TIMEOUT_S) as net:
        yield net


@pytest.fixture
def host_proxy(network: Network, upstream: Upstream) -> ProxyInfo:
    """The terminal -> host proxy, on a fixed port as in a rig."""
    return network.ensure_proxy("host", f"127.0.0.1:{free_port()}", upstream.address)


def test_upstream_outside_the_allowlist_is_refused_before_any_request() -> None:
    dead_api = f"http://127.0.0.1:{free_port()}"  # any request would fail as "unreachable"
    with (
        Network(dead_api, ["127.0.0.1:8583"], timeout_s=TIMEOUT_S) as net,
        pytest.raises(UpstreamNotAllowedError, match="not allowed"),
    ):
        net.ensure_proxy("host", "127.0.0.1:0", "10.1.2.3:8583")


def test_ensure_proxy_is_idempotent_and_keeps_toxics(
    network: Network, host_proxy: ProxyInfo, upstream: Upstream
) -> None:
    assert host_proxy.enabled and host_proxy.upstream == upstream.address
    toxic = network.add_toxic("host", "latency", "downstream", {"latency": 10})
    assert (toxic.name, toxic.attributes) == ("latency_downstream", {"latency": 10, "jitter": 0})
    again = network.ensure_proxy("host", host_proxy.listen, upstream.address)
    assert again.listen == host_proxy.listen
    assert [t.name for t in again.toxics] == ["latency_downstream"]
    assert set(network.proxies()) == {"host"}
    assert network.version() == "2.12.0"


def test_update_and_remove_toxic(network: Network, host_proxy: ProxyInfo) -> None:
    network.add_toxic("host", "latency", "downstream", {"latency": 10, "jitter": 5}, name="lat")
    updated = network.update_toxic("host", "lat", {"latency": 250})
    assert updated.attributes == {"latency": 250, "jitter": 5}
    with connect(host_proxy.listen) as sock:
        assert round_trip(sock, b"x") >= 0.24
        assert network.update_toxic("host", "lat", toxicity=0.0).toxicity == 0.0
        assert round_trip(sock, b"y") < 0.2
    network.remove_toxic("host", "lat")
    assert network.toxics("host") == []
    with pytest.raises(NetworkFaultError) as missing:
        network.remove_toxic("host", "lat")
    assert missing.value.status == 404
    assert missing.value.body == '{"error":"toxic not found","status":404}\n'


def test_request_lost_the_host_never_sees_the_request(
    network: Network, host_proxy: ProxyInfo, upstream: Upstream
) -> None:
    fault = network.request_lost("host")
    assert fault.name == "request_lost" and [t.stream for t in fault.toxics] == ["upstream"]
    with connect(host_proxy.listen) as sock:
        sock.sendall(b"0200 sale")
        assert read_to_end(sock, timeout=0.3) == (b"", "open")
        assert upstream.received == b""
        network.heal(fault)
        assert read_to_end(sock) == (b"", "eof")  # healing a timeout closes the connection
    with connect(host_proxy.listen) as sock:
        assert round_trip(sock, b"0200 again") < 0.5
    assert network.toxics("host") == []


def test_response_lost_the_host_decides_but_the_answer_never_arrives(
    network: Network, host_proxy: ProxyInfo, upstream: Upstream
) -> None:
    fault = network.response_lost("host")
    with connect(host_proxy.listen) as sock:
        sock.sendall(b"0200 sale")
        assert upstream.wait_for(lambda: bytes(upstream.received) == b"0200 sale")
        assert read_to_end(sock, timeout=0.3) == (b"", "open")
    network.heal(fault)
    with connect(host_proxy.listen) as sock:
        assert round_trip(sock, b"0420 reversal") < 0.5


def test_late_response(network: Network, host_proxy: ProxyInfo) -> None:
    fault = network.late_response("host", delay_ms=300)
    assert fault.params == {"delay_ms": 300}
    with connect(host_proxy.listen) as sock:
        assert 0.295 <= round_trip(sock, b"0200") < 0.8
        network.heal(fault)
        assert round_trip(sock, b"0200") < 0.2


def test_reset_mid_message_truncates_the_response(network: Network, host_proxy: ProxyInfo) -> None:
    fault = network.reset_mid_message("host", after_bytes=5)
    with connect(host_proxy.listen) as sock:
        sock.sendall(b"0210 approved")
        assert read_to_end(sock) == (b"0210 ", "eof")
    network.heal(fault)
    with connect(host_proxy.listen) as sock:
        assert round_trip(sock, b"0210 approved") < 0.5


def test_slow_link(network: Network, host_proxy: ProxyInfo) -> None:
    fault = network.slow_link("host", rate_kbps=100, latency_ms=50)
    assert len(fault.toxics) == 4
    with connect(host_proxy.listen) as sock:
        # each way: 50 ms, then 10 000 B at 100 KB/s (0.1 s)
        assert 0.28 <= round_trip(sock, b"s" * 10_000) < 1.0
    network.heal(fault)
    assert network.toxics("host") == []
    with pytest.raises(ValueError):
        network.slow_link("host", rate_kbps=0)


def test_partition_closes_and_refuses_until_healed(network: Network, host_proxy: ProxyInfo) -> None:
    sock = connect(host_proxy.listen)
    round_trip(sock, b"x")
    fault = network.partition("host")
    assert fault.disabled and network.proxies()["host"].enabled is False
    assert read_to_end(sock) == (b"", "eof")
    with pytest.raises(ConnectionRefusedError):
        connect(host_proxy.listen)
    network.heal(fault)
    with connect(host_proxy.listen) as again:
        round_trip(again, b"y")
    sock.close()


def test_flapping_toggles_then_ends_up(network: Network, host_proxy: ProxyInfo) -> None:
    sock = connect(host_proxy.listen)
    round_trip(sock, b"x")
    fault = network.flapping("host", period_ms=200, cycles=2)
    assert network.join(fault, timeout_s=5.0)
    states = [enabled for _, enabled in network.transitions(fault)]
    assert states == [False, True, False, True, True]
    times = [t for t, _ in network.transitions(fault)]
    assert all(0.09 <= later - earlier < 0.4 for earlier, later in itertools.pairwise(times[:4]))
    assert read_to_end(sock) == (b"", "eof")  # the first down edge closed it
    with connect(host_proxy.listen) as again:
        round_trip(again, b"y")
    network.heal(fault)
    sock.close()


def test_heal_stops_flapping_early(network: Network, host_proxy: ProxyInfo) -> None:
    fault = network.flapping("host", period_ms=20_000, cycles=3)
    started = time.monotonic()
    network.heal(fault)
    assert time.monotonic() - started < 2.0
    assert network.proxies()["host"].enabled is True
    with connect(host_proxy.listen) as sock:
        round_trip(sock, b"up")


def test_heal_all_and_reset(network: Network, host_proxy: ProxyInfo) -> None:
    network.late_response("host", 100)
    network.response_lost("host")
    network.partition("host")
    network.heal_all("host")
    assert network.toxics("host") == [] and network.proxies()["host"].enabled is True
    network.request_lost("host")
    network.set_enabled("host", False)
    network.reset()
    assert network.toxics("host") == [] and network.proxies()["host"].enabled is True


def test_two_servers_in_one_process_do_not_mix(upstream: Upstream) -> None:
    saved = (toxiproxy.api.APIConsumer.host, toxiproxy.api.APIConsumer.port)
    with ToxiproxyServer() as first, ToxiproxyServer() as second:
        net_a = Network(first.url, [upstream.address], timeout_s=TIMEOUT_S)
        net_b = Network(second.url, [upstream.address], timeout_s=TIMEOUT_S)
        try:
            net_a.ensure_proxy("a", "127.0.0.1:0", upstream.address)
            net_b.ensure_proxy("b", "127.0.0.1:0", upstream.address)
            errors: list[BaseException] = []

            def hammer(net: Network, proxy: str) -> None:
                try:
                    for index in range(10):
                        net.add_toxic(proxy, "noop", "upstream", {}, name=f"n{index}")
                        assert set(net.proxies()) == {proxy}
                except BaseException as exc:  # collected and re-raised in the test thread
                    errors.append(exc)

            threads = [
                threading.Thread(target=hammer, args=(net_a, "a")),
                threading.Thread(target=hammer, args=(net_b, "b")),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
            assert errors == []
            assert len(net_a.toxics("a")) == 10 and len(net_b.toxics("b")) == 10
        finally:
            net_a.close()
            net_b.close()
    assert (toxiproxy.api.APIConsumer.host, toxiproxy.api.APIConsumer.port) == saved


def test_unreachable_api_fails_fast_with_a_clear_error() -> None:
    with Network(f"http://127.0.0.1:{free_port()}", [], timeout_s=TIMEOUT_S) as net:
        started = time.monotonic()
        with pytest.raises(NetworkFaultError, match="unreachable"):
            net.proxies()
        assert time.monotonic() - started < 1.0


def test_silent_api_times_out() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts in the backlog, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with Network(url, [], timeout_s=0.3) as net:
            started = time.monotonic()
            with pytest.raises(NetworkFaultError, match=r"no answer within 0\.3 s"):
                net.version()
            assert time.monotonic() - started < 2.0


def test_a_500_is_a_network_fault_error_not_a_key_error(
    network: Network, upstream: Upstream
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(NetworkFaultError) as failed:
            network.ensure_proxy("host", f"127.0.0.1:{port}", upstream.address)
        assert failed.value.status == 500
        assert f"listen tcp 127.0.0.1:{port}: bind: address already in use" in failed.value.body
    proxy = network.ensure_proxy("other", f"127.0.0.1:{free_port()}", upstream.address)
    network.set_enabled("other", False)
    host, port_text = proxy.listen.rsplit(":", 1)
    with socket.create_server((host, int(port_text))):  # its port is taken meanwhile
        with pytest.raises(NetworkFaultError) as enabling:  # toxiproxy-python passes 500s
            network.set_enabled("other", True)
        assert enabling.value.status == 500
        with pytest.raises(NetworkFaultError) as reset:  # toxiproxy-python would return True
            network.reset()
        assert reset.value.status == 500 and "address already in use" in reset.value.body


def test_hil_toxiproxy_server_command_serves_the_api_and_stops_on_sigterm() -> None:
    import signal
    import subprocess
    import sys
    import time

    import requests

    from tests.simrig import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "toxiproxy-server", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                reply = requests.get(f"http://127.0.0.1:{port}/version", timeout=0.5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.05)
        assert reply.text == '{"version": "2.12.0"}\n'
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
