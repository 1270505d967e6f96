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


def test_the_admin_login_works_behind_a_tls_proxy_with_the_production_example(
    settings, operator, tmp_path
):
    """The docs/deploy.md example, as parsed at start: the proxy sets X-Forwarded-Proto and
    the browser sends its https Origin; the login passes CSRF (it failed with no trusted
    origins and no proxy SSL header)."""
    import secrets

    from conf.env import load_settings_env
    from tests.rebalancer.test_deploy import production_example

    example = production_example() | {"SECRET_KEY": secrets.token_urlsafe(50)}
    env = load_settings_env(base_dir=tmp_path, env=example)
    for name, value in env.security.items():
        setattr(settings, name, value)
    settings.ALLOWED_HOSTS = env.allowed_hosts
    browser = Client(
        enforce_csrf_checks=True,
        HTTP_HOST="rebalancer.example.com",
        HTTP_X_FORWARDED_PROTO="https",
    )
    page = browser.get(reverse("admin:login"))
    assert page.status_code == 200
    token = browser.cookies["csrftoken"].value
    assert browser.cookies["csrftoken"]["secure"]
    response = browser.post(
        reverse("admin:login"),
        {
            "username": "olivia",
            "password": "pw-olivia",
            "next": "/admin/",
            "csrfmiddlewaretoken": token,
        },
        HTTP_ORIGIN="https://rebalancer.example.com",
        HTTP_REFERER="https://rebalancer.example.com/admin/login/",
    )
    assert response.status_code == 302, response.content.decode()[:500]
    assert browser.cookies["sessionid"]["secure"]
    # a plain-http request is sent to https
    plain = Client(HTTP_HOST="rebalancer.example.com").get("/admin/login/")
    assert plain.status_code == 301 and plain["Location"].startswith("https://")
