"""Who may call the worker's HTTP endpoints: bearer tokens, pure and tested.

Two kinds of token (docs/security.md):

- ``worker.token`` (``LLMPULSE_WORKER_TOKEN``) opens every endpoint with full access;
- ``worker.tenant_tokens`` maps a tenant to a token that opens only ``/sql``, and
  there only that tenant's rows (``run_readonly(..., tenant=...)``).

With no token configured every request is allowed, which is safe only on a
loopback address: ``check_web_exposure`` refuses to start otherwise. ``/health``
never needs a token (a liveness probe must not depend on a secret); ``/ready``
does, like every other endpoint (a readiness probe sends the header).

A browser navigation cannot send an ``Authorization`` header, so the status page
and its two assets (``PAGE_PATHS``) also take the token as ``?token=``; nothing
else does, so data and SQL never travel in a URL.

>>> a = Authorizer.from_settings(WorkerSettings(token="t0ken", tenant_tokens={"acme": "acme-t"}))
>>> a.authorize("/sql", {"Authorization": "Bearer t0ken"})
Access(status=200, tenant=None, problem='')
>>> a.authorize("/sql", {"authorization": "Bearer acme-t"})
Access(status=200, tenant='acme', problem='')
>>> a.authorize("/metrics", {}).status, a.authorize("/health", {}).status
(401, 200)
>>> a.authorize("/?token=t0ken", {}).status, a.authorize("/sql?token=t0ken", {}).status
(200, 401)
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs

from llmpulse.errors import ConfigError
from llmpulse.settings import WorkerSettings

PUBLIC_PATHS: Final = frozenset({"/health"})
TENANT_PATHS: Final = frozenset({"/sql"})
# The status page and its assets: the only paths that accept ``?token=``.
PAGE_PATHS: Final = frozenset({"/", "/status.css", "/status.js"})
# RFC 6750: the challenge a 401 answer carries.
CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="llmpulse"'}


@dataclass(frozen=True, slots=True)
class Access:
    """The answer to one request: 200 (go on, ``tenant`` None for full access),
    401 (no or unknown token) or 403 (a tenant token outside ``/sql``)."""

    status: int
    tenant: str | None = None
    problem: str = ""

    @property
    def allowed(self) -> bool:
        return self.status == 200

    @property
    def headers(self) -> dict[str, str]:
        """Headers the error answer must carry."""
        return dict(CHALLENGE) if self.status == 401 else {}


def _digest(token: str) -> bytes:
    # Compare digests, so the comparison time says nothing about token lengths.
    return hashlib.sha256(token.encode()).digest()


def _bearer(headers: Mapping[str, str]) -> str | None:
    value = None
    for k, v in headers.items():
        if k.lower() == "authorization":
            value = v
            break
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ""
    return token.strip()


def _query_token(query: str) -> str | None:
    """The ``token`` parameter of a query string (the last one wins, as in a form)."""
    values = parse_qs(query, keep_blank_values=True).get("token")
    if not values:
        return None
    return values[-1].strip()


class Authorizer:
    """Decides requests from their path and headers; holds only token digests."""

    def __init__(
        self,
        token: str | None,
        tenant_tokens: Mapping[str, str],
        *,
        public_paths: Iterable[str] = PUBLIC_PATHS,
        tenant_paths: Iterable[str] = TENANT_PATHS,
        page_paths: Iterable[str] = PAGE_PATHS,
    ) -> None:
        self._full = _digest(token) if token else None
        self._tenants = [(_digest(t), tenant) for tenant, t in tenant_tokens.items() if t]
        if token and any(hmac.compare_digest(d, self._full or b"") for d, _ in self._tenants):
            raise ConfigError("worker.tenant_tokens", "a tenant token equals worker.token")
        digests = [d for d, _ in self._tenants]
        if len(set(digests)) != len(digests):
            raise ConfigError("worker.tenant_tokens", "two tenants share one token")
        self.public_paths = frozenset(public_paths)
        self.tenant_paths = frozenset(tenant_paths)
        self.page_paths = frozenset(page_paths)

    @classmethod
    def from_settings(cls, worker: WorkerSettings, **kwargs: Iterable[str]) -> Authorizer:
        return cls(
            worker.token.get_secret_value() if worker.token else None,
            {k: v.get_secret_value() for k, v in worker.tenant_tokens.items()},
            **kwargs,
        )

    @property
    def enabled(self) -> bool:
        return self._full is not None or bool(self._tenants)

    def authorize(self, path: str, headers: Mapping[str, str]) -> Access:
        """Decide one request; ``path`` may carry its query string (``request.path_qs``)."""
        path, _, query = path.partition("?")
        path = "/" + path.strip("/")
        if path in self.public_paths or not self.enabled:
            return Access(200)
        token = _bearer(headers)
        if token is None and path in self.page_paths:
            token = _query_token(query)
            if token == "":
                return Access(401, problem="empty ?token=")
        if token is None:
            hint = " (or ?token=<token> for the page)" if path in self.page_paths else ""
            return Access(401, problem=f"missing Authorization: Bearer <token>{hint}")
        if not token:
            return Access(401, problem="the Authorization header must be 'Bearer <token>'")
        presented = _digest(token)
        full = self._full is not None and hmac.compare_digest(presented, self._full)
        tenant = None
        for digest, name in self._tenants:  # every one compared: no early exit
            if hmac.compare_digest(presented, digest):
                tenant = name
        if full:
            return Access(200)
        if tenant is None:
            return Access(401, problem="invalid token")
        if path not in self.tenant_paths:
            return Access(
                403, tenant, f"a tenant token opens only {', '.join(sorted(self.tenant_paths))}"
            )
        return Access(200, tenant)


def authorize(path: str, headers: Mapping[str, str], worker: WorkerSettings) -> Access:
    """One-off form of ``Authorizer.authorize`` (build an ``Authorizer`` once per app)."""
    return Authorizer.from_settings(worker).authorize(path, headers)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine.

    >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "", "10.0.0.5")]
    [True, True, True, False, False, False]
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # another host name: it may resolve anywhere


def check_web_exposure(worker: WorkerSettings) -> None:
    """Refuse a worker that would serve its endpoints beyond this machine without
    a token (call before the web server starts)."""
    if is_loopback(worker.web_host) or worker.token is not None:
        return
    raise ConfigError(
        "worker.web_host",
        f"{worker.web_host!r} is not a loopback address, so /sql, /metrics and the status"
        " page would be open to the network: set a token (LLMPULSE_WORKER_TOKEN) or bind"
        " 127.0.0.1",
    )
