"""The Secrets the manifests refer to, generated once and kept in .cluster/secrets.json,
as an operator (JWT, Stripe) and CloudNativePG (each database's app credentials and
CA) would create them in a cluster."""

import json
import os
import re
import secrets as random
import subprocess

from . import topology
from .paths import state

STANDIN_PUBLISHABLE_KEY = "pk_test_local_standin"
# The NATS users (infra/k8s/base/nats-authorization.conf): the services on the bus and
# admin, whose password `scripts/cluster endpoints` hands the load generator.
NATS_USERS = ["auth", "tickets", "orders", "payments", "expiration", "admin"]
# NATS reads a password from its environment as an unquoted value, which must not look
# like a number (`1e5b...` is a bad exponent): a letter, then letters and digits.
NATS_PASSWORD = r"[A-Za-z][A-Za-z0-9]{16,}"


def nats_passwords():
    return {user: "n" + random.token_hex(24) for user in NATS_USERS}


def generated():
    """Random values made on the first `make cluster` and kept until `--purge`."""
    path = state("secrets.json")
    if os.path.exists(path):
        with open(path) as file:
            values = json.load(file)
        if not all(re.fullmatch(NATS_PASSWORD, values.get("nats", {}).get(u, "")) for u in NATS_USERS):
            values["nats"] = nats_passwords()  # made before the bus had users
            with open(path, "w") as file:
                json.dump(values, file, indent=2)
        return values
    values = {
        "jwt": random.token_urlsafe(32),
        "superuser": random.token_urlsafe(24),
        "replication": random.token_urlsafe(24),
        "apps": {app: random.token_urlsafe(24) for app in topology.DATABASES},
        "nats": nats_passwords(),
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as file:
        json.dump(values, file, indent=2)
    return values


def database(app):
    """What the bootstrap stanza of `<app>-db` names: its database and owner."""
    cluster = topology.find(topology.render("prod"), "Cluster", f"{app}-db")
    initdb = cluster["spec"]["bootstrap"]["initdb"]
    return initdb["database"], initdb["owner"]


def certificates(app):
    """A CA per database and a server certificate for every name the database answers
    on (its instances and its -rw name), in .cluster/tls/<app>-db."""
    names = [f"{app}-db-rw", f"{app}-db-r", f"{app}-db-ro",
             *[f"{app}-db-{n}" for n in topology.DB_INSTANCES]]
    return issue(f"{app}-db", names, owner=26)


def bus_certificates():
    """The bus CA and the NATS servers' certificate, as cert-manager issues them in
    prod (overlays/prod/nats-tls.yaml): for every name clients and routes use."""
    names = ["nats", "nats-headless", *[f"nats-{n}.nats-headless" for n in range(topology.NATS_NODES)]]
    return issue("nats", names, owner=None)


def issue(name, names, owner):
    """A CA and a certificate signed by it for `names` (server and client auth), in
    .cluster/tls/<name>, made once; files owned by `owner` if given."""
    directory = state("tls", name)
    if os.path.exists(os.path.join(directory, "server.crt")):
        return directory
    os.makedirs(directory, exist_ok=True)

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
            "-subj", f"/CN={name} CA")
    openssl("req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={names[0]}")
    with open(os.path.join(directory, "server.ext"), "w") as file:
        file.write("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n"
                   "extendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "3650", "-extfile", "server.ext")
    for file in os.listdir(directory):
        if owner is not None:
            os.chown(os.path.join(directory, file), owner, owner)
        os.chmod(os.path.join(directory, file), 0o600 if file.endswith(".key") else 0o644)
    os.chmod(directory, 0o755)
    return directory


def all_secrets(settings):
    """Every Secret by name, as the rendered manifests refer to them."""
    values = generated()
    found = {
        "jwt-secret": {"JWT_KEY": settings.get("JWT_KEY", values["jwt"])},
        "stripe-secret": {
            "STRIPE_KEY": settings.get("STRIPE_KEY", topology.STANDIN_KEY),
            "STRIPE_PUBLISHABLE_KEY": settings.get("STRIPE_PUBLISHABLE_KEY", STANDIN_PUBLISHABLE_KEY),
        },
        "nats-credentials": dict(values["nats"]),
    }
    bus = bus_certificates()
    found["nats-tls"] = {}
    for key, file in (("ca.crt", "ca.crt"), ("tls.crt", "server.crt"), ("tls.key", "server.key")):
        with open(os.path.join(bus, file)) as source:
            found["nats-tls"][key] = source.read()
    for app in topology.DATABASES:
        dbname, owner = database(app)
        password, host = values["apps"][app], f"{app}-db-rw"
        found[f"{app}-db-app"] = {
            "username": owner, "password": password, "host": host, "port": "5432",
            "dbname": dbname, "uri": f"postgresql://{owner}:{password}@{host}:5432/{dbname}",
        }
        with open(os.path.join(certificates(app), "ca.crt")) as file:
            found[f"{app}-db-ca"] = {"ca.crt": file.read()}
    return found
