"""Addresses as Go's `net` package sees them: parse, resolve, listen and dial, with Go's error text.

toxiproxy shows a proxy's `listen` as the bound address (`localhost:0` -> `127.0.0.1:41234`) and
returns Go's `net` errors verbatim in 500 bodies (`listen tcp 127.0.0.1:3310: bind: address
already in use`, `listen tcp: address local373: missing port in address`), so a client can see
these strings. The one thing to know: like Go, a wildcard listen address (`""`, `0.0.0.0`,
`[::]`) opens one dual-stack IPv6 socket and is shown as `[::]:PORT`; hostnames resolve to their
first IPv4 address when there is one.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from dataclasses import dataclass

LISTEN_BACKLOG = 128


class NetError(Exception):
    """A Go `net` error; `str()` is the text Go would print."""


@dataclass(frozen=True)
class TcpAddr:
    """Go's `net.TCPAddr`: an IP ("" = unspecified) and a port."""

    ip: str
    port: int

    def __str__(self) -> str:
        if not self.ip:
            return f":{self.port}"
        if ":" in self.ip:
            return f"[{self.ip}]:{self.port}"
        return f"{self.ip}:{self.port}"

    @property
    def wildcard(self) -> bool:
        return not self.ip or ipaddress.ip_address(self.ip.split("%")[0]).is_unspecified


def split_host_port(hostport: str) -> tuple[str, str]:
    """Go's `net.SplitHostPort`, error messages included."""

    def fail(why: str) -> NetError:
        return NetError(f"address {hostport}: {why}" if hostport else why)

    colon = hostport.rfind(":")
    if colon < 0:
        raise fail("missing port in address")
    low, high = 0, 0
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise fail("missing ']' in address")
        if end + 1 == len(hostport):
            raise fail("missing port in address")
        if end + 1 != colon:
            if hostport[end + 1] == ":":
                raise fail("too many colons in address")
            raise fail("missing port in address")
        host = hostport[1:end]
        low, high = 1, end + 1
    else:
        host = hostport[:colon]
        if ":" in host:
            raise fail("too many colons in address")
    if "[" in hostport[low:]:
        raise fail("unexpected '[' in address")
    if "]" in hostport[high:]:
        raise fail("unexpected ']' in address")
    return host, hostport[colon + 1 :]


def _port(service: str) -> int:
    if not service:
        return 0
    digits = service[1:] if service[0] in "+-" else service
    if digits.isdigit() and digits.isascii():
        value = int(service)
        if not 0 <= value <= 0xFFFF:
            raise NetError(f"address {service}: invalid port")
        return value
    try:
        return socket.getservbyname(service, "tcp")
    except OSError:
        raise NetError(f"lookup tcp/{service}: unknown port") from None


def _host_ip(host: str) -> str:
    if not host:
        return ""
    try:
        return str(ipaddress.ip_address(host.split("%")[0])) + (
            host[host.index("%") :] if "%" in host else ""
        )
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except OSError:
        raise NetError(f"lookup {host}: no such host") from None
    addresses = [str(info[4][0]) for info in infos]
    ipv4 = [a for a in addresses if ":" not in a]
    return (ipv4 or addresses)[0]


def resolve(hostport: str) -> TcpAddr:
    """Go's `net.ResolveTCPAddr("tcp", hostport)`; "" is the unspecified address, port 0."""
    if not hostport:
        return TcpAddr("", 0)
    host, service = split_host_port(hostport)
    return TcpAddr(_host_ip(host), _port(service))


def _errno_text(code: int) -> str:
    """Go prints errno texts in lower case ("address already in use")."""
    text = os.strerror(code)
    return text[:1].lower() + text[1:]


def format_sockaddr(sockname: tuple[object, ...], family: int) -> str:
    host, port = str(sockname[0]), int(str(sockname[1]))
    return str(TcpAddr(host, port)) if family == socket.AF_INET6 else f"{host}:{port}"


def listen(hostport: str) -> tuple[socket.socket, str]:
    """Go's `net.Listen("tcp", hostport)`: the listening socket and its address as Go shows it."""
    try:
        addr = resolve(hostport)
    except NetError as exc:
        raise NetError(f"listen tcp: {exc}") from None
    dual_stack = addr.wildcard and socket.has_ipv6
    if dual_stack:
        family, bind_to = socket.AF_INET6, "::"
    elif ":" in addr.ip:
        family, bind_to = socket.AF_INET6, addr.ip
    else:
        family, bind_to = socket.AF_INET, addr.ip or "0.0.0.0"
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
        try:
            sock.bind((bind_to, addr.port))
        except OSError as exc:
            code = exc.errno if exc.errno is not None else errno.EINVAL
            raise NetError(f"listen tcp {addr}: bind: {_errno_text(code)}") from None
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock, format_sockaddr(sock.getsockname(), family)


def dial(hostport: str, timeout_s: float) -> socket.socket:
    """Connect to an upstream given as `host:port` (resolved per call, like Go's `net.Dial`)."""
    try:
        host, service = split_host_port(hostport)
        port = _port(service)
    except NetError as exc:
        raise OSError(errno.EINVAL, str(exc)) from None
    sock = socket.create_connection((host or "localhost", port), timeout=timeout_s)
    sock.settimeout(None)
    return sock
