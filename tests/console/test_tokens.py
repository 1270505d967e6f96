"""API tokens in the console: created by an operator (secret shown once), listed, revoked."""

from __future__ import annotations

import pytest
from django.urls import reverse

from inventory.models import ApiToken
from inventory.selectors import api_token_authenticate

pytestmark = pytest.mark.django_db


def test_operator_creates_a_token_shown_once_and_revokes_it(operator_client):
    response = operator_client.post(
        reverse("admin:api_token_create"), {"name": "desk-bot", "scopes": ["ingest"]}
    )
    assert response.status_code == 200
    body = response.content.decode()
    secret = body.split('<code id="token-value">')[1].split("</code>")[0]
    token = ApiToken.objects.get(name="desk-bot")
    assert token.created_by == "olivia"
    assert secret not in token.token_hash  # only the hash is stored
    assert api_token_authenticate(secret=secret) == token
    listing = operator_client.get(reverse("admin:inventory_apitoken_changelist")).content.decode()
    assert "desk-bot" in listing and secret not in listing
    operator_client.post(
        reverse("admin:inventory_apitoken_changelist"),
        {"action": "revoke_tokens", "_selected_action": [token.pk]},
    )
    token.refresh_from_db()
    assert token.revoked_by == "olivia"
    assert api_token_authenticate(secret=secret) is None


def test_a_bad_token_name_is_refused_with_the_rule(operator_client):
    response = operator_client.post(
        reverse("admin:api_token_create"), {"name": "bad name!", "scopes": ["read"]}
    )
    assert response.status_code == 200
    assert "must be 1-64 letters" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_viewer_can_list_but_not_create_or_revoke(viewer_client, operator_client):
    operator_client.post(reverse("admin:api_token_create"), {"name": "r1", "scopes": ["read"]})
    token = ApiToken.objects.get(name="r1")
    assert viewer_client.get(reverse("admin:inventory_apitoken_changelist")).status_code == 200
    assert (
        viewer_client.post(
            reverse("admin:api_token_create"), {"name": "x", "scopes": ["read"]}
        ).status_code
        == 403
    )
    viewer_client.post(
        reverse("admin:inventory_apitoken_changelist"),
        {"action": "revoke_tokens", "_selected_action": [token.pk]},
    )
    token.refresh_from_db()
    assert token.revoked_at is None
    assert list(ApiToken.objects.values_list("name", flat=True)) == ["r1"]
