"""Starts the django-helpdesk peer of the end-to-end tests on loopback.

usage: python serve.py --data DIR --port PORT
           [--user NAME --password PW --token KEY]
           [--operator NAME --operator-password PW --operator-token KEY]
           [--template FILE]

Each option also comes from the environment (`HELPDESK_PEER_DATA`,
`HELPDESK_PEER_PORT`, `HELPDESK_PEER_USER`, ...). On every start it migrates
the sqlite database in DIR (created on first start, kept afterwards), makes
sure of two staff superusers, each with a REST framework token when one is
given (the API user an integration talks as, and an operator who answers
tickets), and of one queue (`support`), then serves with Django's threaded
server on 127.0.0.1:PORT.

A fresh database starts as a copy of FILE when that exists, and a freshly
migrated one is saved there otherwise: migrating from nothing takes
seconds, copying well under one.

Webhooks are the helpdesk's own: set `HELPDESK_NEW_TICKET_WEBHOOK_URLS` /
`HELPDESK_FOLLOWUP_WEBHOOK_URLS` (comma-separated URLs).

The first line it prints once it is set up is `helpdesk peer ready ...`,
naming the queue's and the users' ids.
"""

import argparse
import os
import shutil
import sys
import time
from pathlib import Path


def arguments():
    env = os.environ.get
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=env("HELPDESK_PEER_DATA"))
    parser.add_argument("--port", type=int, default=env("HELPDESK_PEER_PORT"))
    parser.add_argument("--user", default=env("HELPDESK_PEER_USER", "aviary"))
    parser.add_argument(
        "--password", default=env("HELPDESK_PEER_PASSWORD", "aviary-password")
    )
    parser.add_argument("--token", default=env("HELPDESK_PEER_TOKEN"))
    parser.add_argument(
        "--operator", default=env("HELPDESK_PEER_OPERATOR", "operator")
    )
    parser.add_argument(
        "--operator-password",
        default=env("HELPDESK_PEER_OPERATOR_PASSWORD", "operator-password"),
    )
    parser.add_argument("--operator-token", default=env("HELPDESK_PEER_OPERATOR_TOKEN"))
    parser.add_argument("--template", default=env("HELPDESK_PEER_TEMPLATE"))
    args = parser.parse_args()
    if not args.data or not args.port:
        parser.error("--data and --port are required")
    return args


def staff(name, password, token):
    """A staff superuser `name` with `password` and, when given, the token
    `token` (40 characters at most); returns the user."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user, _ = get_user_model().objects.get_or_create(
        username=name, defaults={"email": f"{name}@example.invalid"}
    )
    user.is_staff = True
    user.is_superuser = True
    user.is_active = True
    user.set_password(password)
    user.save()
    if token:
        Token.objects.filter(user=user).exclude(key=token).delete()
        Token.objects.get_or_create(user=user, key=token)
    return user


def main():
    started = time.monotonic()
    args = arguments()
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    data = Path(args.data).resolve()
    data.mkdir(parents=True, exist_ok=True)
    os.environ["HELPDESK_PEER_DATA"] = str(data)
    os.environ["DJANGO_SETTINGS_MODULE"] = "settings"

    import django
    from django.core.management import call_command

    django.setup()
    database = data / "helpdesk.sqlite3"
    template = Path(args.template) if args.template else None
    fresh = not database.exists()
    if fresh and template and template.exists():
        shutil.copyfile(template, database)
        fresh = False
    call_command("migrate", interactive=False, verbosity=0)
    if fresh and template and not template.exists():
        # Migrating an empty database takes seconds; later fresh starts copy
        # this one. Written aside and renamed: starts may run side by side.
        from django.db import connections

        connections.close_all()
        aside = template.with_name(f"{template.name}.{os.getpid()}")
        shutil.copyfile(database, aside)
        os.replace(aside, template)

    from helpdesk.models import Queue

    api = staff(args.user, args.password, args.token)
    operator = staff(args.operator, args.operator_password, args.operator_token)
    queue, _ = Queue.objects.get_or_create(
        slug="support", defaults={"title": "Support"}
    )
    print(
        f"helpdesk peer ready in {time.monotonic() - started:.2f}s:"
        f" data {data}, queue {queue.slug} id {queue.id},"
        f" api user {api.username} id {api.id},"
        f" operator {operator.username} id {operator.id}",
        flush=True,
    )
    call_command(
        "runserver",
        f"127.0.0.1:{args.port}",
        use_reloader=False,
        use_threading=True,
        skip_checks=True,
    )


if __name__ == "__main__":
    main()
