"""Bearer-token authentication of the HTTP API, with a scope per endpoint.

`Authorization: Bearer <token>`: an unknown, revoked or missing token is 401; a valid token
without the endpoint's scope is 403 (`ScopeMissing`, mapped with the other errors in
`rebalancer.api`).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.security import HttpBearer

from inventory.models import ApiToken, ApiTokenScope
from inventory.selectors import api_token_authenticate


class ScopeMissing(Exception):
    def __init__(self, token: ApiToken, scope: str) -> None:
        self.token_name = token.name
        self.scope = scope
        super().__init__(f"token {token.name!r} lacks the {scope!r} scope")


class TokenAuth(HttpBearer):
    def __init__(self, scope: str) -> None:
        if scope not in ApiTokenScope.values:
            raise ValueError(f"unknown scope {scope!r}")
        self.scope = scope
        super().__init__()

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        found = api_token_authenticate(secret=token)
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
