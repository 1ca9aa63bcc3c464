"""Faults, for the chaos runner and for a person (`scripts/cluster fault KIND ...`).

Each one prints, and returns, what it did and when (seconds since the epoch), so that
its effects can be measured against it:

  kill NAME [--down S]            SIGKILL, then start it again after S seconds (1)
  stop NAME [--down S]            preStop, SIGTERM, grace; start again after S (10)
  nats-leader [--down S] [--graceful]
                                  SIGKILL (or stop, lame duck first) the node leading
                                  the stream; back after S (10); reports when every
                                  group it led has a leader again (`elected`)
  nats-follower [--down S]        stop (lame duck) a node following it; back after S (10)
  partition NAME [--from PEER...] [--seconds S]
                                  drop every packet between NAME and the peers (all other
                                  containers when none is named), both ways; healed
                                  after S seconds (or by `heal`)
  lossy NAME --probability P [--from PEER...] [--seconds S]
                                  drop packets at random, both ways
  heal [NAME...]                  remove every partition and lossy link (of NAME)
  stall NAME [--seconds S]        SIGSTOP, SIGCONT after S seconds (40: longer than the
                                  services' database and NATS timeouts)
  failover APP                    SIGKILL APP's primary database, promote the standby,
                                  move APP-db-rw to it, bring the old primary back as
                                  the new standby (pg_rewind)
  rolling-restart APP             each replica in turn: out of the ingress's rotation,
                                  preStop, SIGTERM, a new container, ready, the next

A PEER may be a container or an app: `orders-db` means both of its instances, `nats`
every NATS node.
"""

import json
import subprocess
import threading
import time
import urllib.request

from . import containers, control, podman, postgres, topology

CHAIN = "TICKETING-FAULT"


def now():
    return round(time.time(), 3)


def report(fault, **what):
    result = {"fault": fault, **what}
    print(json.dumps(result), flush=True)
    return result


def _info(name):
    info = podman.inspect(name).get(name)
    if not info:
        raise podman.Failed(f"no container {name}")
    return info


def wait_state(name, states, within=60):
    deadline = time.monotonic() + within
    while podman.state(podman.inspect(name).get(name)) not in states:
        if time.monotonic() > deadline:
            raise podman.Failed(f"{name} is not {'/'.join(states)} after {within} s")
        time.sleep(0.1)


def kill(name, down=1.0):
    with containers.Held(name, "killed"):
        killed = now()
        podman.podman("kill", "--signal", "KILL", name)
        wait_state(name, ("exited", "stopped"))
        time.sleep(down)
        podman.podman("start", name)
    return report("kill", name=name, at=killed, started=now())


def stop(name, down=10.0):
    spec = control.spec_of(name)
    with containers.Held(name, "stopped"):
        stopped = now()
        containers.stop(spec)
        time.sleep(down)
        podman.podman("start", name)
    return report("stop", name=name, at=stopped, started=now())


def stream_leader():
    for node in control.stream_nodes().values():
        if node.get("leader"):
            return node["leader"]
    raise podman.Failed("the stream has no leader")


def leaders(node):
    """What `node` knows of the leaders of the stream and of each of its consumers: a
    group's name to its leader (None while it has none), or None if it does not answer."""
    monitor = control.endpoints()["nats_monitors"][node]
    try:
        with urllib.request.urlopen(f"{monitor}/jsz?streams=true&consumers=true",
                                    timeout=1) as answer:
            jsz = json.load(answer)
    except (OSError, ValueError):
        return None
    streams = [s for a in jsz.get("account_details", []) for s in a.get("stream_detail", [])]
    groups = {}
    for stream in streams:
        groups[stream["name"]] = (stream.get("cluster") or {}).get("leader")
        for consumer in stream.get("consumer_detail") or []:
            groups[f"{stream['name']}/{consumer['name']}"] = \
                (consumer.get("cluster") or {}).get("leader")
    return groups


def wait_elected(lost, survivors, within=30):
    """When a survivor first sees every group that `lost` led with a leader again."""
    deadline = time.monotonic() + within
    led = None
    while time.monotonic() < deadline:
        for node in survivors:
            groups = leaders(node)
            if groups is None:
                continue
            if led is None:
                led = sorted(g for g, leader in groups.items() if leader in (lost, None))
            if all(groups.get(g) not in (lost, None) for g in led):
                return now(), led
        time.sleep(0.05)
    return None, led or []


def nats_leader(down=10.0, graceful=False):
    """The node leading the stream lost: SIGKILLed, as in a node's crash (its followers
    must wait out Raft's election timeout, 4-9 s in nats-server), or, `graceful`, stopped
    as a StatefulSet rollout stops it (lame duck first: it hands its leaderships over)."""
    leader = stream_leader()
    survivors = [f"nats-{n}" for n in range(topology.NATS_NODES) if f"nats-{n}" != leader]
    before = leaders(survivors[0]) or {}
    led = sorted(g for g, node in before.items() if node == leader)
    with containers.Held(leader, "stopped" if graceful else "killed"):
        spec = control.spec_of(leader)
        at = now()
        if graceful:
            # The stop (lame duck, then SIGTERM and its grace) runs while the survivors
            # are watched: leaderships move at its start.
            stopping = threading.Thread(target=containers.stop, args=(spec,))
            stopping.start()
        else:
            podman.podman("kill", "--signal", "KILL", leader)
        elected, _ = wait_elected(leader, survivors)
        if graceful:
            stopping.join()
        wait_state(leader, ("exited", "stopped"))
        time.sleep(max(0.0, down - (now() - at)))
        podman.podman("start", leader)
    return report("nats-leader", name=leader, graceful=graceful, at=at, led=led,
                  elected=elected, started=now())


def nats_follower(down=10.0):
    leader = stream_leader()
    follower = next(f"nats-{n}" for n in range(topology.NATS_NODES) if f"nats-{n}" != leader)
    result = stop(follower, down)
    return report("nats-follower", name=follower, leader=leader, at=result["at"],
                  started=result["started"])


# --- the network --------------------------------------------------------------------

def peers_of(name, peers):
    """Addresses of the named peers (containers or apps), or of every other container."""
    found = podman.inspect(*podman.ours())
    chosen = []
    for other, info in found.items():
        if other == name or info["Config"]["Labels"].get(podman.LABEL) == "tool":
            continue
        app = info["Config"]["Labels"].get("io.ticketing.app")
        role = info["Config"]["Labels"].get(podman.LABEL)
        if not peers or other in peers or app in peers or role in peers:
            address = podman.address(info, topology.NETWORK)
            if address:
                chosen.append(address)
    if peers and not chosen:
        raise podman.Failed(f"no running peer among {', '.join(peers)}")
    return chosen


def iptables(name, *args, check=True, pid=None):
    """iptables in a container's network namespace; `pid` (its process) saves the
    `podman inspect` that finds it, which waits while another podman command holds the
    container's lock: seconds on a busy machine, between a fault's rules."""
    pid = pid or _info(name)["State"]["Pid"]
    result = subprocess.run(["nsenter", "-t", str(pid), "-n", "iptables", "-w", *args],
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise podman.Failed(f"iptables {' '.join(args)} in {name}: {result.stderr.strip()}")
    return result


def chain(name, pid):
    """The fault chain of a container's namespace, hooked into INPUT and OUTPUT."""
    if iptables(name, "-n", "-L", CHAIN, check=False, pid=pid).returncode != 0:
        iptables(name, "-N", CHAIN, pid=pid)
        iptables(name, "-I", "INPUT", "-j", CHAIN, pid=pid)
        iptables(name, "-I", "OUTPUT", "-j", CHAIN, pid=pid)


def drop(name, addresses, match=()):
    """Drops the container's traffic with `addresses`; returns when every rule is in
    place, the moment the fault begins."""
    pid = _info(name)["State"]["Pid"]
    chain(name, pid)
    for address in addresses:
        iptables(name, "-A", CHAIN, "-s", address, *match, "-j", "DROP", pid=pid)
        iptables(name, "-A", CHAIN, "-d", address, *match, "-j", "DROP", pid=pid)
    return now()


def heal(*names):
    healed = []
    for name in names or podman.ours():
        info = podman.inspect(name).get(name)
        if podman.state(info) != "running":
            continue
        if iptables(name, "-F", CHAIN, check=False, pid=info["State"]["Pid"]).returncode == 0:
            healed.append(name)
    return report("heal", names=healed, at=now())


def readiness_of(name):
    """A container's readiness probe, for measuring when it should leave the rotation."""
    probe = control.spec_of(name).probes.get("readiness")
    if not probe:
        return None
    return {"period": probe.period, "failure_threshold": probe.failure_threshold,
            "timeout": probe.timeout}


def partition(name, peers=(), seconds=None):
    addresses = peers_of(name, peers)
    # From when the rules are in place: what the readiness budget is measured against.
    at = drop(name, addresses)
    result = {"name": name, "peers": list(peers) or "all", "addresses": addresses, "at": at,
              "readiness": readiness_of(name)}
    if seconds:
        time.sleep(seconds)
        heal(name)
        result["healed"] = now()
    return report("partition", **result)


def lossy(name, probability, peers=(), seconds=None):
    addresses = peers_of(name, peers)
    at = drop(name, addresses,
              ("-m", "statistic", "--mode", "random", "--probability", str(probability)))
    result = {"name": name, "peers": list(peers) or "all", "probability": probability, "at": at}
    if seconds:
        time.sleep(seconds)
        heal(name)
        result["healed"] = now()
    return report("lossy", **result)


def stall(name, seconds=40.0):
    at = now()
    podman.podman("kill", "--signal", "STOP", name)
    time.sleep(seconds)
    # The supervisor may have restarted it meanwhile (its liveness probe failed, as a
    # kubelet would): then this reaches the new process, which runs anyway.
    podman.podman("kill", "--signal", "CONT", name, check=False)
    return report("stall", name=name, at=at, resumed=now())


# --- the database -------------------------------------------------------------------

def failover(app):
    old, new = postgres.primary(app), postgres.standby_of(app)
    with containers.Held(old, "failover"), containers.Held(new, "failover"):
        killed = now()
        podman.podman("kill", "--signal", "KILL", old)
        wait_state(old, ("exited", "stopped"))
        podman.podman("exec", new, "pg_ctl", "promote", "-w", "-D", postgres.PGDATA, timeout=60)
        promoted = now()
        postgres.move_rw(app, new)
        postgres.set_primary(app, new)
        moved = now()
        how = postgres.rejoin(app, old)
        rejoined = now()
    return report("failover", app=app, old=old, new=new, at=killed, promoted=promoted,
                  rw_moved=moved, rejoined=rejoined, rejoined_by=how)


# --- a rollout ------------------------------------------------------------------------

def out_of_rotation(address, within=10):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        current = control.view() or {}
        rotation = [a for addresses in (current.get("endpoints") or {}).values() for a in addresses]
        if address not in rotation:
            return True
        time.sleep(0.1)
    return False


def ready_again(name, before, within=120):
    """The supervisor has seen a new container `name` (not the one started at `before`)
    pass its readiness probe."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        mine = ((control.view() or {}).get("containers") or {}).get(name) or {}
        if mine.get("ready") and mine.get("since") != before:
            return
        time.sleep(0.1)
    raise podman.Failed(f"{name} is not ready {within} s after its restart")


def rolling_restart(app):
    steps = []
    for name in [f"{app}-{n}" for n in range(topology.REPLICAS)]:
        spec = control.spec_of(name)
        address = podman.address(_info(name), topology.NETWORK)
        before = (((control.view() or {}).get("containers") or {}).get(name) or {}).get("since")
        started = now()
        with containers.Held(name, "draining"):
            out_of_rotation(address)
            left = now()
            containers.stop(spec)
            stopped = now()
            containers.replace(spec)
        ready_again(name, before)
        steps.append({"name": name, "at": started, "out_of_rotation": left, "stopped": stopped,
                      "ready": now()})
    return report("rolling-restart", app=app, at=steps[0]["at"], steps=steps)
