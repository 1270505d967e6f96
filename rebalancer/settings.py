"""Django settings, read from the environment.

Every variable is parsed in `conf.env.load_settings_env`; a missing or invalid one
stops the process at start with one message that names every bad variable.
"""

from datetime import timedelta
from pathlib import Path

from conf.env import load_settings_env
from inventory.domain.candidates import parse_candidate

BASE_DIR = Path(__file__).resolve().parent.parent

# REBALANCING_CHALLENGERS is checked with the domain's candidate parser (issue 25).
ENV = load_settings_env(base_dir=BASE_DIR, parse_candidate=parse_candidate)

SECRET_KEY = ENV.secret_key
DEBUG = ENV.debug
ALLOWED_HOSTS = ENV.allowed_hosts

# Django's security settings, from the environment under their own names (defaults: Django's;
# production values in docs/deploy.md, "Production settings").
SECURE_SSL_REDIRECT = ENV.security["SECURE_SSL_REDIRECT"]
SECURE_HSTS_SECONDS = ENV.security["SECURE_HSTS_SECONDS"]
SECURE_HSTS_INCLUDE_SUBDOMAINS = ENV.security["SECURE_HSTS_INCLUDE_SUBDOMAINS"]
SECURE_HSTS_PRELOAD = ENV.security["SECURE_HSTS_PRELOAD"]
SESSION_COOKIE_SECURE = ENV.security["SESSION_COOKIE_SECURE"]
CSRF_COOKIE_SECURE = ENV.security["CSRF_COOKIE_SECURE"]
CSRF_TRUSTED_ORIGINS = ENV.security["CSRF_TRUSTED_ORIGINS"]
SECURE_PROXY_SSL_HEADER = ENV.security["SECURE_PROXY_SSL_HEADER"]
# The largest request body (the API's JSON); waitress refuses a larger one before reading it.
DATA_UPLOAD_MAX_MEMORY_SIZE = ENV.security["DATA_UPLOAD_MAX_MEMORY_SIZE"]
# /metrics without a token from loopback only when configured (a reverse proxy on the same
# host makes every caller loopback).
METRICS_TRUST_LOOPBACK = ENV.metrics_trust_loopback

INSTALLED_APPS = [
    "console.apps.ConsoleAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "ninja",
    "axes",
    # Lowest first: conf (no app) < venues < inventory < operations < service < console, the
    # project package on top (tests/test_architecture.py keeps every import pointing down).
    "inventory",
    "operations",
    "service",
    "console",
    # The project package: its migration history (the tables service and console took over)
    # and the project-wide commands.
    "rebalancer",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's) served by the WSGI app itself under `runrebalancer --http`.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Console login throttling; last, as django-axes asks.
    "axes.middleware.AxesMiddleware",
]

# django-axes first: it refuses a locked-out login before the password is checked. It needs
# the request: authenticate(request=..., ...) (the login form does; the test client's
# force_login bypasses authentication altogether).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# LOGIN_FAILURE_LIMIT failed logins of one username from one address lock that pair out for
# LOGIN_COOLOFF_S (behind a proxy every address may be the proxy's: by username and address,
# so one user's typos never lock out the others).
AXES_FAILURE_LIMIT = ENV.login_failure_limit
AXES_COOLOFF_TIME = timedelta(seconds=ENV.login_cooloff_s)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False  # no banner on every manage.py command

ROOT_URLCONF = "rebalancer.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "rebalancer.wsgi.application"

DATABASES = {"default": ENV.database}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
# WhiteNoise warns on every request when this is missing; `collectstatic` fills it.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Serve from the apps' static directories too, so no collectstatic step is needed to start.
WHITENOISE_USE_FINDERS = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# django-q2: at-least-once delivery. `timeout` < `retry` so a slow task is not handed to a
# second worker while the first still runs; our workflows are resumable either way.
Q_CLUSTER = ENV.q_cluster

# Typed rebalancing configuration (conf.env.RebalancingConfig).
REBALANCING = ENV.rebalancing

# Observations (fills, balance polls) stamped further ahead of now than this are refused.
OBSERVATION_MAX_SKEW_S = ENV.observation_max_skew_s
# A hedge placement may be at most |net position| + this many shares (inventory.services).
HEDGE_PLACEMENT_TOLERANCE_SHARES = ENV.hedge_placement_tolerance_shares
# A fill's block may be at most this many blocks above the chain head last seen
# (inventory.chain_head; 300 Base blocks are 10 minutes).
FILL_BLOCK_MARGIN = ENV.fill_block_margin
# Alert conditions and the optional webhook (conf.env.AlertConfig).
ALERTS = ENV.alerts

# How runrebalancer polls venues, beats and judges health (conf.env.ServiceConfig).
SERVICE = ENV.service

# The debug page and error reports never show a secret (settings, environment, exceptions).
DEFAULT_EXCEPTION_REPORTER_FILTER = "rebalancer.redaction.SecretsExceptionReporterFilter"
DEFAULT_EXCEPTION_REPORTER = "rebalancer.redaction.SecretsExceptionReporter"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    # No secret in any log line (rebalancer.redaction).
    "filters": {"redact": {"()": "rebalancer.redaction.RedactSecretsFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact"],
        }
    },
    "root": {"handlers": ["console"], "level": ENV.log_level},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "web3": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}
