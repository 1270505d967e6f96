"""Bearer-token authentication of the HTTP API, with a scope per endpoint.

`Authorization: Bearer <token>`: an unknown, revoked or missing token is 401; a valid token
without the endpoint's scope is 403 (`ScopeMissing`, mapped with the other errors in
`rebalancer.api`).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from cachetools import TLRUCache
from django.http import HttpRequest
from ninja.security import HttpBearer

from inventory.models import ApiToken, ApiTokenScope
from inventory.selectors import api_token_authenticate

# A token row read from the database is reused for at most this long, so a revocation (made by
# any process: the console, `manage.py apitoken revoke`) is honoured within a second, while a
# client sending many requests costs one token query per second instead of one per request.
TOKEN_CACHE_TTL_S = 1.0
# Only valid tokens are cached (an unknown secret is never remembered, so a stream of
# guessed secrets cannot fill memory); at most this many, the least recently used go first.
TOKEN_CACHE_MAX = 1024


class TokenCache:
    """Active tokens by secret digest, each kept `ttl_s` (monotonic time) from the moment its
    read began, so a revocation committed before then is honoured within `ttl_s`."""

    def __init__(self, ttl_s: float = TOKEN_CACHE_TTL_S, max_entries: int = TOKEN_CACHE_MAX):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        # digest -> (token, when its read began); it expires `ttl_s` after that.
        self._entries: TLRUCache[str, tuple[ApiToken, float]] = TLRUCache(
            maxsize=max_entries, ttu=lambda _, entry, __: entry[1] + ttl_s, timer=time.monotonic
        )
        self._lock = threading.Lock()

    def authenticate(self, secret: str) -> ApiToken | None:
        from inventory.services import api_token_digest

        if not isinstance(secret, str) or not secret or len(secret) > 256:
            return None
        digest = api_token_digest(secret)
        read_at = time.monotonic()
        with self._lock:
            cached = self._entries.get(digest)
        if cached is not None:
            return cached[0]
        found = api_token_authenticate(secret=secret)
        with self._lock:
            if found is None:
                self._entries.pop(digest, None)
            else:
                self._entries[digest] = (found, read_at)
        return found

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


token_cache = TokenCache()


class ScopeMissing(Exception):
    def __init__(self, token: ApiToken, scope: str) -> None:
        self.token_name = token.name
        self.scope = scope
        super().__init__(f"token {token.name!r} lacks the {scope!r} scope")


class TokenAuth(HttpBearer):
    def __init__(self, scope: str) -> None:
        if scope not in ApiTokenScope.values:
            raise ValueError(f"unknown scope {scope!r}")
        self.scope = str(ApiTokenScope(scope).value)  # "ingest", never "ApiTokenScope.INGEST"
        super().__init__()

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        found = token_cache.authenticate(token)
        if found is None:
            return None
        if self.scope not in found.scope_list:
            raise ScopeMissing(found, self.scope)
        return found


ingest_auth = TokenAuth(ApiTokenScope.INGEST)
read_auth = TokenAuth(ApiTokenScope.READ)


class OperateTokenAuth(TokenAuth):
    """The `operate` scope (start and cancel operations); its own class so the OpenAPI
    schema (and docs/api.md) tells it apart from reads and ingestion."""


operate_auth = OperateTokenAuth(ApiTokenScope.OPERATE)
