"""Django settings of the django-helpdesk peer the end-to-end tests run.

Everything a test varies comes from the environment, set by `serve.py`:
`HELPDESK_PEER_DATA` (the directory holding the sqlite database) and the
helpdesk's own `HELPDESK_NEW_TICKET_WEBHOOK_URLS` /
`HELPDESK_FOLLOWUP_WEBHOOK_URLS`, which helpdesk reads itself.
Nothing here reaches beyond loopback: e-mail goes nowhere, there is no
cache server, no static file host.
"""

import os
from pathlib import Path

DATA_DIR = Path(os.environ["HELPDESK_PEER_DATA"])

SECRET_KEY = "aviary-e2e-helpdesk-peer-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.sites",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "helpdesk",
]
SITE_ID = 1

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "urls"

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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(DATA_DIR / "helpdesk.sqlite3"),
        # The dev server is threaded: wait for the write lock rather than
        # failing a concurrent request with "database is locked".
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

# Token (`Authorization: Token <key>`) and Basic auth both work on the API.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.BasicAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
}

# Fast, test-only password hashing: users are created on every start.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
DEFAULT_FROM_EMAIL = "helpdesk@example.invalid"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
MEDIA_ROOT = str(DATA_DIR / "media")
LOGIN_URL = "helpdesk:login"

HELPDESK_TEAMS_MODE_ENABLED = False


def webhook_urls(variable):
    """The comma-separated URLs in `variable`, read on every webhook.

    Replaces helpdesk's own readers of the same two variables: its follow-up
    reader splits on a comma only when whitespace stands on both sides of
    it, so `http://a,http://b` would be taken for a single URL.
    """

    def urls():
        found = [url.strip() for url in os.environ.get(variable, "").split(",")]
        return [url for url in found if url] or None

    return urls


HELPDESK_GET_NEW_TICKET_WEBHOOK_URLS = webhook_urls("HELPDESK_NEW_TICKET_WEBHOOK_URLS")
HELPDESK_GET_FOLLOWUP_WEBHOOK_URLS = webhook_urls("HELPDESK_FOLLOWUP_WEBHOOK_URLS")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "INFO"},
}
