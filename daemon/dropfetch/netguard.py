"""The SSRF guard: HTTP connections that never reach a blocked network.

The guard checks the address a name resolves to before connecting (a blocked address
is never contacted) and connects to the checked literal, then checks the address the
socket actually connected to, before a byte is sent. It runs on every connection and
so on every redirect hop: a name that resolves differently at check time and connect
time cannot slip through. :func:`guarded_session` is the one way dropfetch gets a
``requests`` session.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager
from urllib3.util.retry import Retry

from dropfetch.config import Network
from dropfetch.errors import BlockedAddressError

__all__ = ["AddressGuard", "blocked_network", "guarded_session", "tls_context"]


def blocked_network(address: str, networks: Iterable[Network]) -> Network | None:
    """The network of ``networks`` that holds ``address`` (IPv4-mapped as IPv4)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    for net in networks:
        for candidate in candidates:
            if candidate in net:
                return net
    return None


class AddressGuard:
    """Checks addresses against ``block_networks``: before and after connecting."""

    def __init__(self, networks: tuple[Network, ...]) -> None:
        self.networks = networks

    def pick(self, host: str, port: int) -> str:
        """The address to connect to: the first resolved one outside the blocked networks.

        Refusing before connecting means a blocked address is never contacted (not even a
        SYN to 169.254.169.254); connecting to the checked literal pins the name, so a
        second, different DNS answer (rebinding) cannot slip in between.
        """
        if not self.networks:
            return host
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            return host  # the connection reports the resolution failure itself
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            if blocked_network(address, self.networks) is None:
                return address
        net = blocked_network(addresses[0], self.networks) if addresses else None
        raise BlockedAddressError(
            f"{host} resolves to {', '.join(addresses)}, which is in a blocked network "
            f"({net}; see download.block_networks); the server is not contacted"
        )

    def check(self, sock: socket.socket, host: str) -> None:
        """Close ``sock`` and raise :class:`BlockedAddressError` if its peer is blocked."""
        if not self.networks:
            return
        try:
            peer = sock.getpeername()[0]
        except OSError:
            return  # not connected after all: the request fails on its own
        net = blocked_network(str(peer), self.networks)
        if net is not None:
            with contextlib.suppress(OSError):
                sock.close()
            raise BlockedAddressError(
                f"{host} resolves to {peer}, which is in a blocked network ({net}; see "
                "download.block_networks); the server is not contacted"
            )


class _GuardedConnection(HTTPConnection):
    """A connection that runs its class's ``address_guard`` around connecting."""

    address_guard: ClassVar[AddressGuard]

    def _new_conn(self) -> socket.socket:
        original = self._dns_host
        self._dns_host = self.address_guard.pick(original, self.port)
        try:
            sock = super()._new_conn()  # host header, SNI and certificate checks keep the name
        finally:
            self._dns_host = original
        self.address_guard.check(sock, self.host)
        return sock


def _guarded_pool_manager(guard: AddressGuard, **kwargs: Any) -> PoolManager:
    """A pool manager whose connections run ``guard`` around connecting."""

    class GuardedHTTPConnection(_GuardedConnection):
        address_guard = guard

    class GuardedHTTPSConnection(_GuardedConnection, HTTPSConnection):
        address_guard = guard

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    manager = PoolManager(**kwargs)
    manager.pool_classes_by_scheme = {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}
    return manager


class _Session(requests.Session):
    """A session that never looks at ``Location`` itself.

    Even with ``allow_redirects=False`` requests works out the next hop of every
    redirect (``Response.next``) and decodes ``Location`` as UTF-8 on the way, which
    raises on a header with other bytes; :class:`dropfetch.download.Downloader` follows
    redirects by hand and reads ``Location`` its own way
    (:func:`dropfetch.urlpolicy.location_text`).
    """

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        del resp  # never followed here
        return None


class _GuardedAdapter(HTTPAdapter):
    """requests adapter with the SSRF guard and without urllib3's own retries.

    Through a proxy the connection goes to the proxy (the operator's choice, never
    checked), so the target is checked before each request instead: its name is
    resolved here and a blocked answer is refused before the proxy is asked.
    """

    def __init__(
        self, guard: AddressGuard, *, proxied: bool, ssl_context: ssl.SSLContext | None
    ) -> None:
        self._guard = guard
        self._proxied = proxied
        self._tls_kwargs: dict[str, Any] = (
            {} if ssl_context is None else {"ssl_context": ssl_context}
        )
        super().__init__(max_retries=Retry(total=0, read=False, redirect=False))

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        if self._proxied:
            parts = urlsplit(request.url or "")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            self._guard.pick(parts.hostname or "", port)  # raises for a blocked target
        return super().send(request, *args, **kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        return super().proxy_manager_for(proxy, **self._tls_kwargs, **proxy_kwargs)

    def init_poolmanager(
        self,
        connections: int,
        maxsize: int,
        block: bool = False,
        **pool_kwargs: Any,
    ) -> None:
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        self.poolmanager = _guarded_pool_manager(
            self._guard,
            num_pools=connections,
            maxsize=maxsize,
            block=block,
            **self._tls_kwargs,
            **pool_kwargs,
        )


def tls_context(ca_bundle: Path | None) -> ssl.SSLContext | None:
    """The system's authorities plus those of ``ca_bundle`` (None: requests' default).

    Raises ssl.SSLError / OSError for a file that holds no usable certificate."""
    if ca_bundle is None:
        return None
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=str(ca_bundle))
    return context


def guarded_session(
    networks: Iterable[Network], *, proxy: str | None = None, ca_bundle: Path | None = None
) -> requests.Session:
    """A session (keep-alive, no proxies from the environment, no automatic redirects
    or retries) whose every connection, or through ``proxy`` every target, is checked
    against ``networks``; TLS trusts ``ca_bundle`` too."""
    session = _Session()
    session.trust_env = False
    if proxy is not None:
        session.proxies = {"http": proxy, "https": proxy}
    adapter = _GuardedAdapter(
        AddressGuard(tuple(networks)), proxied=proxy is not None, ssl_context=tls_context(ca_bundle)
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
