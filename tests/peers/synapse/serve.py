"""Starts the Synapse (Matrix homeserver) peer of the end-to-end tests on
loopback.

usage: python serve.py --data DIR --port PORT [--server-name NAME]
           [--shared-secret SECRET] [--extra-config FILE] [--template FILE]

Each option also comes from the environment (`SYNAPSE_PEER_DATA`,
`SYNAPSE_PEER_PORT`, ...). On every start it writes DIR/homeserver.yaml
for a homeserver named NAME (`localhost` unless told) that listens for the
client API (the admin API and the media repository included) on
127.0.0.1:PORT only, and then replaces itself with Synapse
(`python -m synapse.app.homeserver`), so that killing this process kills
the server.

Everything lives in DIR and is kept from one start to the next: the sqlite
database (`homeserver.db`), the signing key (generated locally on the first
start), the media store and the log config. Nothing leaves the machine:
no federation listener, no trusted key servers, no URL previews, no stats
reports, no presence, an empty federation whitelist.

Accounts are made through the shared-secret registration admin API
(`/_synapse/admin/v1/register`, with SECRET); open registration is off.
Rate limits are set so high that tests sending bursts of hundreds of
messages are never answered 429; a test that wants a limit sets it in
FILE, a YAML (or JSON) file read after homeserver.yaml whose top-level
keys replace the generated ones (Synapse merges config files shallowly).

A fresh database starts as a copy of FILE given by --template when that
exists; otherwise the schema is created before Synapse starts and the new
database is saved there: creating the schema takes seconds, copying well
under one.

The first line it prints is `synapse peer starting ...`; Synapse itself
then logs `Synapse now listening on TCP port PORT` once it serves.
"""

import argparse
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

# Well above any burst a test sends, so that nothing is answered 429.
UNLIMITED = {"per_second": 100000, "burst_count": 1000000}


def arguments():
    env = os.environ.get
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=env("SYNAPSE_PEER_DATA"))
    parser.add_argument("--port", type=int, default=env("SYNAPSE_PEER_PORT"))
    parser.add_argument(
        "--server-name", default=env("SYNAPSE_PEER_SERVER_NAME", "localhost")
    )
    parser.add_argument(
        "--shared-secret",
        default=env("SYNAPSE_PEER_SHARED_SECRET", "aviary-synapse-shared-secret"),
    )
    parser.add_argument("--extra-config", default=env("SYNAPSE_PEER_EXTRA_CONFIG"))
    parser.add_argument("--template", default=env("SYNAPSE_PEER_TEMPLATE"))
    args = parser.parse_args()
    if not args.data or not args.port:
        parser.error("--data and --port are required")
    return args


def homeserver_config(data, port, server_name, shared_secret):
    """The homeserver config (a dict) for a server in `data` on
    127.0.0.1:`port`."""
    return {
        "server_name": server_name,
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                # `client` serves the client API, `/_synapse/admin` and the
                # media repository; no `federation` or `keys`.
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": {
            "name": "sqlite3",
            "args": {"database": str(data / "homeserver.db")},
        },
        "log_config": str(data / "log.config"),
        "media_store_path": str(data / "media_store"),
        "max_upload_size": "50M",
        "signing_key_path": str(data / "signing.key"),
        "registration_shared_secret": shared_secret,
        "enable_registration": False,
        # Fixed secrets: tokens and forms stay valid across restarts.
        "macaroon_secret_key": f"{shared_secret}-macaroon",
        "form_secret": f"{shared_secret}-form",
        # No outbound traffic.
        "report_stats": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_domain_whitelist": [],
        # No process sends federation traffic.
        "federation_sender_instances": [],
        "allow_public_rooms_over_federation": False,
        "url_preview_enabled": False,
        "enable_metrics": False,
        "presence": {"enabled": False},
        "serve_server_wellknown": False,
        "update_profile_information": False,
        # Rate limits no test burst reaches.
        "rc_message": UNLIMITED,
        "rc_registration": UNLIMITED,
        "rc_registration_token_validity": UNLIMITED,
        "rc_login": {
            "address": UNLIMITED,
            "account": UNLIMITED,
            "failed_attempts": UNLIMITED,
        },
        "rc_admin_redaction": UNLIMITED,
        "rc_joins": {"local": UNLIMITED, "remote": UNLIMITED},
        "rc_joins_per_room": UNLIMITED,
        "rc_3pid_validation": UNLIMITED,
        "rc_invites": {
            "per_room": UNLIMITED,
            "per_user": UNLIMITED,
            "per_issuer": UNLIMITED,
        },
        "rc_third_party_invite": UNLIMITED,
        "rc_media_create": UNLIMITED,
        "rc_room_creation": UNLIMITED,
        "rc_presence": {"per_user": UNLIMITED},
        "rc_delayed_event_mgmt": UNLIMITED,
        "rc_reports": UNLIMITED,
        "rc_user_directory": UNLIMITED,
        "rc_profile": UNLIMITED,
    }


def log_config(data):
    """A Python logging config: Synapse's log lines on stderr (the peer's
    log file), the per-request access lines included."""
    return {
        "version": 1,
        "formatters": {
            "precise": {
                "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s"
                " - %(request)s - %(message)s"
            }
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "precise",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "synapse.storage.SQL": {"level": "WARNING"},
            "twisted": {"level": "WARNING"},
        },
        "root": {"level": "INFO", "handlers": ["console"]},
        "disable_existing_loggers": False,
    }


def write_atomically(path, text):
    aside = path.with_name(f"{path.name}.{os.getpid()}")
    aside.write_text(text)
    os.replace(aside, path)


def ensure_signing_key(path):
    """Generates the server's ed25519 signing key on the first start; later
    starts keep it (remote servers, were there any, would pin it)."""
    if path.exists():
        return
    from signedjson.key import generate_signing_key, write_signing_keys

    key = generate_signing_key("a_peer")
    aside = path.with_name(f"{path.name}.{os.getpid()}")
    with open(aside, "w") as file:
        write_signing_keys(file, [key])
    os.replace(aside, path)


def create_schema(config_paths, database):
    """Creates Synapse's schema in the empty sqlite `database`, the way the
    homeserver does on its first start, without starting one."""
    from synapse.config.homeserver import HomeServerConfig
    from synapse.storage.database import make_conn
    from synapse.storage.engines import create_engine
    from synapse.storage.prepare_database import prepare_database

    config = HomeServerConfig.load_config(
        "synapse peer", [arg for path in config_paths for arg in ("-c", str(path))]
    )
    (database_config,) = config.database.databases
    assert Path(database_config.config["args"]["database"]) == database
    engine = create_engine(database_config.config)
    connection = make_conn(
        db_config=database_config,
        engine=engine,
        default_txn_name="schema",
        server_name=config.server.server_name,
    )
    try:
        engine.check_database(connection)
        prepare_database(
            connection, engine, config, databases=database_config.databases
        )
        connection.commit()
    finally:
        connection.conn.close()


def save_template(database, template):
    """Copies `database` (closed, consistent) to `template`, aside first and
    renamed: starts may run side by side."""
    template.parent.mkdir(parents=True, exist_ok=True)
    aside = template.with_name(f"{template.name}.{os.getpid()}")
    source = sqlite3.connect(database)
    target = sqlite3.connect(aside)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    os.replace(aside, template)


def main():
    started = time.monotonic()
    args = arguments()
    data = Path(args.data).resolve()
    data.mkdir(parents=True, exist_ok=True)
    (data / "media_store").mkdir(exist_ok=True)

    config_path = data / "homeserver.yaml"
    # YAML is a superset of JSON: no quoting to get wrong.
    write_atomically(
        config_path,
        json.dumps(
            homeserver_config(data, args.port, args.server_name, args.shared_secret),
            indent=2,
        ),
    )
    write_atomically(data / "log.config", json.dumps(log_config(data), indent=2))
    ensure_signing_key(data / "signing.key")
    config_paths = [config_path]
    if args.extra_config:
        config_paths.append(Path(args.extra_config).resolve())

    database = data / "homeserver.db"
    template = Path(args.template).resolve() if args.template else None
    how = "kept database"
    if not database.exists():
        if template and template.exists():
            shutil.copyfile(template, database)
            how = "database copied from the template"
        else:
            create_schema(config_paths, database)
            how = "schema created"
            if template:
                save_template(database, template)
                how += " and saved as the template"

    print(
        f"synapse peer starting after {time.monotonic() - started:.2f}s:"
        f" server name {args.server_name}, port {args.port}, data {data}, {how}",
        flush=True,
    )
    command = [sys.executable, "-m", "synapse.app.homeserver"]
    for path in config_paths:
        command += ["-c", str(path)]
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main()
