"""Each service's PostgreSQL as CloudNativePG runs it: a primary and a synchronous
standby streaming from it, and a name, `<app>-db-rw`, on whichever is the primary.

The harness does what the operator's instance manager does: initdb for the first
primary, a base backup for a standby, and on a failover the promotion of the standby,
the move of the -rw name, and pg_rewind to bring the old primary back as the new
standby. Settings come from the rendered Cluster: its PostgreSQL parameters, its
synchronous stanza (ANY n, dataDurability required: a commit waits for a standby's
flush), its memory and CPU limits.
"""

import json
import os
import shutil
import sys
import time

from . import images, podman, secrets, topology
from .paths import state

DATA = "/var/lib/postgresql/data"
PGDATA = f"{DATA}/pgdata"
SOCKET = "/run/postgresql"
TLS = "/tls"
REPLICATION_USER = "streaming_replica"

HBA = """\
# Written by the cluster harness, as CloudNativePG writes it: TLS for every
# connection over the network, passwords (SCRAM), the superuser only over the socket
# and from the operator's own tools.
local all all peer
hostssl replication streaming_replica all scram-sha-256
hostssl all all all scram-sha-256
host all all all reject
"""


def instances(app):
    return [f"{app}-db-{n}" for n in topology.DB_INSTANCES]


def rw(app):
    return f"{app}-db-rw"


def role_file(app):
    return state("databases", f"{app}.json")


def primary(app):
    """The instance that is the primary (the first one until a failover)."""
    try:
        with open(role_file(app)) as file:
            return json.load(file)["primary"]
    except FileNotFoundError:
        return instances(app)[0]


def standby_of(app):
    return next(name for name in instances(app) if name != primary(app))


def set_primary(app, name):
    os.makedirs(os.path.dirname(role_file(app)), exist_ok=True)
    with open(role_file(app), "w") as file:
        json.dump({"primary": name, "since": time.time()}, file)


def data_dir(name):
    return state("volumes", name, "pgdata")


def cluster_object(app):
    return topology.find(topology.render("prod"), "Cluster", f"{app}-db")


def synchronous_standby_names(app):
    """The synchronous stanza as PostgreSQL's setting: every instance is named (an
    instance never waits for itself), so it holds whichever is the primary."""
    synchronous = cluster_object(app)["spec"]["postgresql"]["synchronous"]
    assert synchronous["method"] == "any", synchronous
    assert synchronous.get("dataDurability", "required") == "required", synchronous
    names = ",".join(f'"{n}"' for n in instances(app))
    return f"ANY {synchronous['number']} ({names})"


def spec(app, name):
    cluster = cluster_object(app)
    limits = cluster["spec"]["resources"]["limits"]
    parameters = {
        "listen_addresses": "*",
        "port": "5432",
        "unix_socket_directories": SOCKET,
        "ssl": "on",
        "ssl_cert_file": f"{TLS}/server.crt",
        "ssl_key_file": f"{TLS}/server.key",
        "wal_level": "replica",
        "hot_standby": "on",
        "max_wal_senders": "10",
        # pg_rewind needs it; the data checksums of initdb would do as well.
        "wal_log_hints": "on",
        # Enough WAL kept for an instance that was away for a while to catch up.
        "wal_keep_size": "512MB",
        "synchronous_standby_names": synchronous_standby_names(app),
        "jit": "off",
        "log_line_prefix": "%m [%p] %u@%d ",
        **{k: str(v) for k, v in cluster["spec"]["postgresql"].get("parameters", {}).items()},
    }
    args = ["postgres", "-D", PGDATA]
    for key, value in parameters.items():
        args += ["-c", f"{key}={value}"]
    return topology.Spec(
        name=name,
        app=f"{app}-db",
        role="database",
        image=f"localhost/{images.POSTGRES_IMAGE}:latest",
        args=args,
        user=f"{images.POSTGRES_UID}:{images.POSTGRES_UID}",
        read_only=True,
        cap_drop=["ALL"],
        no_new_privileges=True,
        memory=topology.quantity_memory(limits["memory"]),
        cpus=topology.quantity_cpu(limits["cpu"]),
        mounts=[(state("volumes", name), DATA, False), (secrets.certificates(app), TLS, True)],
        tmpfs=[(SOCKET, "rw,size=1m,mode=1777,notmpcopyup"),
               ("/tmp", "rw,size=16m,mode=1777,notmpcopyup")],
        # A fast shutdown, as the operator asks for within the pod's grace.
        grace=30,
    )


def tool(app, *args, network=True, extra_mounts=()):
    """Runs one of PostgreSQL's programs in a container of its own on an instance's
    volumes (what the instance manager does inside the pod)."""
    mounts = []
    for host, inside in extra_mounts:
        mounts += ["--volume", f"{host}:{inside}"]
    return podman.podman(
        "run", "--rm", "--label", f"{podman.LABEL}=tool",
        *(["--network", topology.NETWORK] if network else ["--network", "none"]),
        "--user", f"{images.POSTGRES_UID}:{images.POSTGRES_UID}",
        "--volume", f"{secrets.certificates(app)}:{TLS}:ro",
        *mounts,
        f"localhost/{images.POSTGRES_IMAGE}:latest", *args,
        timeout=300,
    )


def conninfo(app, user, password, application_name=None, dbname=None):
    parts = {
        "host": rw(app), "port": "5432", "user": user, "password": password,
        "sslmode": "verify-full", "sslrootcert": f"{TLS}/ca.crt",
    }
    if application_name:
        parts["application_name"] = application_name
    if dbname:
        parts["dbname"] = dbname
    return " ".join(f"{k}={v}" for k, v in parts.items())


def fresh_volume(name):
    volume = state("volumes", name)
    shutil.rmtree(volume, ignore_errors=True)
    os.makedirs(volume)
    os.chown(volume, images.POSTGRES_UID, images.POSTGRES_UID)
    os.chmod(volume, 0o700)
    return volume


def initdb(app, name):
    """A new primary's data directory, with the superuser's password."""
    volume = fresh_volume(name)
    password_file = os.path.join(volume, ".superuser")
    with open(password_file, "w") as file:
        file.write(secrets.generated()["superuser"])
    os.chown(password_file, images.POSTGRES_UID, images.POSTGRES_UID)
    tool(app, "initdb", "-D", PGDATA, "-U", "postgres", "--auth-local=peer",
         "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale", "--data-checksums",
         f"--pwfile={DATA}/.superuser", network=False, extra_mounts=[(volume, DATA)])
    os.remove(password_file)
    write_hba(name)


def write_hba(name):
    path = os.path.join(data_dir(name), "pg_hba.conf")
    with open(path, "w") as file:
        file.write(HBA)
    os.chown(path, images.POSTGRES_UID, images.POSTGRES_UID)
    os.chmod(path, 0o600)


def psql(name, sql, dbname="postgres"):
    """SQL as the superuser, over the instance's socket."""
    return podman.podman("exec", "-i", name, "psql", "-h", SOCKET, "-U", "postgres",
                         "-d", dbname, "-v", "ON_ERROR_STOP=1", "-qAt", input=sql)


def wait_accepting(name, within=60):
    deadline = time.monotonic() + within
    while not podman.ok("exec", name, "pg_isready", "-q", "-h", SOCKET):
        if time.monotonic() > deadline:
            raise podman.Failed(f"{name} does not accept connections after {within} s")
        time.sleep(0.3)


def bootstrap(app):
    """The app's role and database and the replication role, on a new primary. The
    session commits locally: no standby exists yet to wait for."""
    dbname, owner = secrets.database(app)
    values = secrets.generated()
    name = primary(app)
    exists = psql(name, f"SELECT 1 FROM pg_database WHERE datname = '{dbname}'")
    if exists == "1":
        return
    psql(name, f"""
        SET synchronous_commit = local;
        CREATE ROLE {REPLICATION_USER} WITH REPLICATION LOGIN PASSWORD '{values["replication"]}';
        CREATE ROLE "{owner}" LOGIN PASSWORD '{values["apps"][app]}';
        CREATE DATABASE "{dbname}" OWNER "{owner}";
    """)


def base_backup(app, name):
    """A standby's data directory, copied from the primary with its WAL, set to stream
    from `<app>-db-rw`."""
    volume = fresh_volume(name)
    tool(app, "pg_basebackup", "-D", PGDATA, "-X", "stream", "-c", "fast", "-R",
         "-d", conninfo(app, REPLICATION_USER, secrets.generated()["replication"], name),
         extra_mounts=[(volume, DATA)])


def follow(app, name):
    """Makes an instance's data directory a standby of the -rw name."""
    directory = data_dir(name)
    auto = os.path.join(directory, "postgresql.auto.conf")
    line = "primary_conninfo = '{}'\n".format(
        conninfo(app, REPLICATION_USER, secrets.generated()["replication"], name).replace("'", "''"))
    kept = []
    if os.path.exists(auto):
        kept = [l for l in open(auto) if not l.startswith("primary_conninfo")]
    with open(auto, "w") as file:
        file.writelines(kept + [line])
    open(os.path.join(directory, "standby.signal"), "w").close()
    for path in (auto, os.path.join(directory, "standby.signal")):
        os.chown(path, images.POSTGRES_UID, images.POSTGRES_UID)


def streaming(app, name):
    """Whether `name` streams from the primary (as a standby the primary counts)."""
    try:
        state = psql(primary(app), "SELECT state FROM pg_stat_replication "
                     f"WHERE application_name = '{name}'")
    except podman.Failed:
        return False
    return "streaming" in state.split()


def wait_streaming(app, name, within):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if streaming(app, name):
            return True
        time.sleep(0.3)
    return False


def rejoin(app, name):
    """Brings an old primary (killed, its container stopped) back as the standby of
    the new one, as the operator does, and says how:

    - "followed": started as a standby as it is. With synchronous replication the new
      primary usually has all the old one wrote, and then recovery just continues on
      the new timeline;
    - "pg_rewind": when it wrote what the new primary never received (never
      acknowledged: a commit waits for the standby), it cannot follow, and pg_rewind
      undoes that (from a clean stop as a standby: after a crash pg_rewind would add a
      checkpoint of its own that forks it off again);
    - "base backup": when even that does not stream (the WAL pg_rewind needs is gone).
    """
    # Its postmaster.pid names a process of a container that is gone.
    stale = os.path.join(data_dir(name), "postmaster.pid")
    if os.path.exists(stale):
        os.remove(stale)
    follow(app, name)
    podman.podman("start", name)
    if wait_streaming(app, name, 3):
        return "followed"
    podman.podman("stop", "-t", "10", name, check=False)
    try:
        tool(app, "pg_rewind", f"--target-pgdata={PGDATA}",
             f"--source-server={conninfo(app, 'postgres', secrets.generated()['superuser'], dbname='postgres')}",
             extra_mounts=[(state("volumes", name), DATA)])
        write_hba(name)
        follow(app, name)
        podman.podman("start", name)
        if wait_streaming(app, name, 5):
            return "pg_rewind"
        podman.podman("stop", "-t", "10", name, check=False)
    except podman.Failed as failure:
        print(f"pg_rewind of {name} failed: {str(failure)[-300:]}", file=sys.stderr)
    base_backup(app, name)
    podman.podman("start", name)
    if not wait_streaming(app, name, 60):
        raise podman.Failed(f"{name} does not stream from {primary(app)} after a base backup")
    return "base backup"


def move_rw(app, to):
    """Moves the -rw name to instance `to` (the Service's endpoints, as the operator
    relabels the pods): it is reconnected with its own name and -rw, the other
    instance with its own name only."""
    found = podman.inspect(*instances(app))
    for name in found:
        network = podman.networks(found[name]).get(topology.NETWORK) or {}
        if (rw(app) in (network.get("Aliases") or [])) == (name == to):
            continue
        aliases = [name, rw(app)] if name == to else [name]
        podman.podman("network", "disconnect", "-f", topology.NETWORK, name, check=False)
        podman.podman("network", "connect", *[arg for alias in aliases for arg in ("--alias", alias)],
                      topology.NETWORK, name)
