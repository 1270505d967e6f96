"""Console logins are throttled (django-axes, issue 19): failed logins of one username from
one address lock it out; the form logs in normally otherwise."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from tests.console.conftest import _user

pytestmark = pytest.mark.django_db


def _login(client: Client, username: str, password: str):
    return client.post(
        reverse("admin:login"),
        {"username": username, "password": password, "next": "/admin/"},
    )


def test_the_login_form_logs_an_operator_in(operator):
    client = Client()
    response = _login(client, "olivia", "pw-olivia")
    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200


def test_repeated_failures_lock_the_username_out_even_with_the_right_password(settings, operator):
    assert settings.AXES_FAILURE_LIMIT == 5
    client = Client()
    for _ in range(5):
        failed = _login(client, "olivia", "wrong")
        assert failed.status_code in (200, 429)
    locked = _login(client, "olivia", "pw-olivia")
    assert locked.status_code == 429
    assert client.get("/admin/").status_code == 302  # still not logged in
    # another operator at the same address is not locked out
    _user("oscar", "operators")
    other = Client()
    assert _login(other, "oscar", "pw-oscar").status_code == 302
