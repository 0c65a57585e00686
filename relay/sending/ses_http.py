"""A small pool of persistent HTTP/1.1 connections for one endpoint, failing as botocore fails.

The lean SendRawEmail client posts one small request at a time per thread. http.client
sends its headers and body in one write and costs less CPU than urllib3 under
botocore's session; what botocore's layer adds is kept here: keep-alive connections
shared by the worker's threads (at most `size` kept idle), a connection the server
closed while idle is noticed and replaced before use, TLS verified against the same
CA bundle, the connect and read timeouts, SO_KEEPALIVE, and every failure raised as
the botocore exception boto3 would raise (EndpointConnectionError, ConnectTimeoutError,
ReadTimeoutError, ConnectionClosedError, SSLError), so that `translate` names them
alike. A proxy is botocore's to speak: `transport_for` hands such endpoints to
botocore's URLLib3Session instead.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
    SSLError,
)

#: (status, headers, body) of an answer
Answer = tuple[int, Mapping[str, str], bytes]


class Transport(Protocol):
    def post(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST to the endpoint; raise a botocore exception when no answer came."""
        ...

    def close(self) -> None: ...


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle kept-alive connection was closed by the server (readable means EOF or junk)."""
    sock = conn.sock
    if sock is None:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class ConnectionPool:
    """Keep-alive connections to one http(s) endpoint, shared by threads; thread-safe."""

    def __init__(
        self, url: str, *, size: int, connect_timeout: float, read_timeout: float, verify: bool | str
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) endpoint: {url!r}")
        self.url = url
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._path = parts.path or "/"
        self._size = size
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._tls = _tls_context(verify) if self._https else None
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _new(self) -> http.client.HTTPConnection:
        if self._tls is not None:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self._connect_timeout, context=self._tls
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self._connect_timeout)

    def _get(self) -> http.client.HTTPConnection:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not _dropped(conn):
                    return conn
                conn.close()
        conn = self._new()
        try:
            conn.connect()
        except TimeoutError as exc:
            raise ConnectTimeoutError(endpoint_url=self.url, error=exc) from exc
        except ssl.SSLError as exc:
            raise SSLError(endpoint_url=self.url, error=exc) from exc
        except OSError as exc:  # refused, unreachable, no such host
            raise EndpointConnectionError(endpoint_url=self.url, error=exc) from exc
        sock: socket.socket = conn.sock  # type: ignore[assignment]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.settimeout(self._read_timeout)
        return conn

    def _put(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self._size:
                self._idle.append(conn)
                return
        conn.close()

    def post(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        conn = self._get()
        try:
            conn.request("POST", self._path, body=body, headers=dict(headers))
            response = conn.getresponse()
            content = response.read()
        except TimeoutError as exc:
            conn.close()
            raise ReadTimeoutError(endpoint_url=self.url, error=exc) from exc
        except ssl.SSLError as exc:
            conn.close()
            raise SSLError(endpoint_url=self.url, error=exc) from exc
        except (http.client.HTTPException, OSError) as exc:  # reset, closed, a broken answer
            conn.close()
            raise ConnectionClosedError(endpoint_url=self.url, error=exc) from exc
        if response.will_close:
            conn.close()
        else:
            self._put(conn)
        return response.status, response.headers, content  # type: ignore[return-value]

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _tls_context(verify: bool | str) -> ssl.SSLContext:
    """TLS as botocore verifies it: its CA bundle or the configured one; none when verify is False."""
    from botocore.httpsession import get_cert_path

    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=get_cert_path(verify))


class ViaBotocore:
    """The same POST through botocore's URLLib3Session: for endpoints reached through a proxy."""

    def __init__(self, url: str, *, size: int, connect_timeout: float, read_timeout: float,
                 verify: bool | str, proxies: Mapping[str, str]) -> None:  # fmt: skip
        from botocore.httpsession import URLLib3Session

        self.url = url
        self._http = URLLib3Session(
            verify=verify, proxies=dict(proxies), timeout=(connect_timeout, read_timeout),
            max_pool_connections=size,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
                            (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)],
        )  # fmt: skip

    def post(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        from botocore.awsrequest import AWSRequest

        response = self._http.send(AWSRequest("POST", self.url, data=body, headers=dict(headers)).prepare())
        return response.status_code, response.headers, response.content

    def close(self) -> None:
        self._http.close()


def transport_for(url: str, **options: Any) -> Transport:
    """A ConnectionPool, unless the environment sends `url` through a proxy (botocore's rules)."""
    from botocore.utils import get_environ_proxies

    proxies = get_environ_proxies(url)
    if proxies.get(urlsplit(url).scheme):
        return ViaBotocore(url, proxies=proxies, **options)
    return ConnectionPool(url, **options)
