"""An HTTP request under the egress policy.

``requests`` would resolve the host itself (a second lookup, which a rebinding DNS
server can answer with 127.0.0.1 after the check saw a public address) and follow
redirects to anywhere. Here each hop's host is resolved once by the policy, the
connection goes to a checked address, and TLS still verifies the certificate against
the host name (SNI included). Redirects are followed here, each hop checked the same
way. Proxy environment variables are not used: the policy judges the address connected
to, which a proxy would hide.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urljoin, urlsplit

from capability.egress.policy import EgressPolicy, EgressRefused

if TYPE_CHECKING:
    import requests

__all__ = ["MAX_REDIRECTS", "request"]

MAX_REDIRECTS = 30  # as requests
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_BODY_HEADERS = ("Content-Length", "Content-Type", "Transfer-Encoding")


def _ca_bundle() -> str:
    import requests.certs

    # The variables requests itself honours for its trust store.
    return (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            or requests.certs.where())


def request(policy: EgressPolicy, method: str, url: str, *, timeout: float,
            **fields: Any) -> requests.Response:
    """``requests.request(method, url, timeout=..., **fields)`` (headers, params, json,
    data, auth) under ``policy``. Raises ``EgressRefused`` for a refused scheme or
    address (at any hop) and ``requests`` exceptions for the rest."""
    import requests

    headers = {**requests.utils.default_headers(), **(fields.pop("headers", None) or {})}
    prepared = requests.Request(method, url, headers=headers, **fields).prepare()
    for _ in range(MAX_REDIRECTS + 1):
        response = _send(policy, prepared, timeout)
        if response.status_code not in _REDIRECTS or "location" not in response.headers:
            return response
        response.close()
        prepared = _next_hop(prepared, response)
    raise requests.TooManyRedirects(f"more than {MAX_REDIRECTS} redirects", request=prepared)


def _send(policy: EgressPolicy, prepared: requests.PreparedRequest,
          timeout: float) -> requests.Response:
    import requests
    import urllib3
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
    from urllib3.exceptions import SSLError as Urllib3SSLError

    url = urllib3.util.parse_url(prepared.url or "")
    scheme = (url.scheme or "").lower()
    if scheme not in ("http", "https") or not url.host:
        raise EgressRefused(f"egress to {scheme or 'a URL without a scheme'}:// refused:"
                            " only http and https")
    host = url.host.strip("[]")
    port = url.port or (443 if scheme == "https" else 80)
    headers = cast(dict[str, str], {**prepared.headers, "Host": url.netloc or host})
    adapter = requests.adapters.HTTPAdapter()
    last: Exception | None = None
    for address in policy.addresses(host, port):
        pool = _pool(scheme, str(address), port, host)
        try:
            raw = pool.urlopen(prepared.method or "GET", url.request_uri,
                               body=cast(Any, prepared.body), headers=headers,
                               redirect=False, assert_same_host=False,
                               preload_content=False, decode_content=False,
                               timeout=urllib3.Timeout(connect=timeout, read=timeout))
            response = adapter.build_response(prepared, raw)
            _ = response.content  # read it all: the connection goes back to its pool
            return response
        except NewConnectionError as exc:
            last = exc  # the next checked address, as a resolver's caller would
        except ConnectTimeoutError as exc:
            raise requests.ConnectTimeout(exc, request=prepared) from exc
        except ReadTimeoutError as exc:
            raise requests.ReadTimeout(exc, request=prepared) from exc
        except Urllib3SSLError as exc:
            raise requests.exceptions.SSLError(exc, request=prepared) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise requests.ConnectionError(exc, request=prepared) from exc
    raise requests.ConnectionError(last, request=prepared)


# Connection pools by (scheme, checked address, port, host name, trust store), kept per
# process: a task's call reuses the keep-alive connection of the call before it to the
# same server (no new TCP connection and TLS handshake per task). A pool is bound to the
# address the policy checked, so reusing it never bypasses the policy; HTTP keeps no
# state between requests on a connection (no cookies here), so tasks of different teams
# may share it. The least recently used beyond POOLS are closed.
_POOLS: OrderedDict[tuple[str, ...], Any] = OrderedDict()
_POOLS_LOCK = threading.Lock()
POOLS = 64


def _pool(scheme: str, address: str, port: int, host: str) -> Any:
    import urllib3

    ca = _ca_bundle() if scheme == "https" else ""
    key = (scheme, address, str(port), host, ca)
    with _POOLS_LOCK:
        found = _POOLS.get(key)
        if found is not None:
            _POOLS.move_to_end(key)
            return found
        options: dict[str, Any] = {"host": address, "port": port, "maxsize": 4,
                                   "block": False, "retries": False}
        if scheme == "https":
            made: Any = urllib3.HTTPSConnectionPool(
                **options, server_hostname=host, assert_hostname=host,
                cert_reqs="CERT_REQUIRED", ca_certs=ca)
        else:
            made = urllib3.HTTPConnectionPool(**options)
        _POOLS[key] = made
        while len(_POOLS) > POOLS:
            _POOLS.popitem(last=False)[1].close()
        return made


def _next_hop(prepared: requests.PreparedRequest,
              response: requests.Response) -> requests.PreparedRequest:
    """The request the redirect asks for, as ``requests`` would make it."""
    old = urlsplit(prepared.url or "")
    location = response.headers["location"]
    target = urljoin(prepared.url or "", location)
    following = prepared.copy()
    following.prepare_url(target, None)
    method = prepared.method or "GET"
    status = response.status_code
    if (status in (302, 303) and method != "HEAD") or (status == 301 and method == "POST"):
        following.method = "GET"
        following.body = None
        for name in _BODY_HEADERS:
            following.headers.pop(name, None)
    new = urlsplit(following.url or "")
    # Credentials go only where they were meant for.
    if new.hostname != old.hostname or (old.scheme == "https" and new.scheme != "https"):
        following.headers.pop("Authorization", None)
    return following
