"""The kubelet's part, for the cluster's containers: probes as the manifests define
them, restarts, and the ingress's rotation.

Every running container's startup probe runs first; once it passes, its readiness
probe decides whether the ingress sends it traffic and its liveness probe whether it
is restarted (preStop, SIGTERM, grace, start), each with its path, period, timeout and
thresholds. A container that exited is started again (at once, then after 10 s,
doubling to 5 min while it keeps exiting), unless a fault holds it. What it sees goes
to .cluster/run/events.jsonl (one JSON object a line) and its current view to
.cluster/run/supervisor.json, which `make cluster-status` shows.

Runs as a daemon started by `make cluster` (`scripts/cluster supervise`).
"""

import concurrent.futures
import datetime
import json
import os
import signal
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

from . import containers, ingress, podman, topology
from .paths import state

RUN = state("run")
EVENTS = os.path.join(RUN, "events.jsonl")
VIEW = os.path.join(RUN, "supervisor.json")
PID = os.path.join(RUN, "supervisor.pid")
LOG = os.path.join(RUN, "supervisor.log")
TICK = 0.2
INSPECT_EVERY = 1.0
SLOW = 2.0  # a round slower than this is written to supervisor.log
BACKOFF_FIRST, BACKOFF_MAX, BACKOFF_RESET = 10, 300, 600


def event(name, what, **detail):
    os.makedirs(RUN, exist_ok=True)
    with open(EVENTS, "a") as file:
        file.write(json.dumps({"t": round(time.time(), 3), "name": name, "event": what, **detail}) + "\n")


def http_probe(address, probe):
    """(passed, what was seen). Anything that goes wrong is a failed probe, as for the
    kubelet: an exception escaping here would leave the probe counted as running, and
    the container would never be probed again (its readiness frozen)."""
    url = f"http://{address}:{probe.port}{probe.path}"
    try:
        with urllib.request.urlopen(url, timeout=probe.timeout) as answer:
            return 200 <= answer.status < 400, f"HTTP {answer.status}"
    except urllib.error.HTTPError as error:
        return False, f"HTTP {error.code}"
    except Exception as error:  # noqa: BLE001 - every failure is a failed probe
        return False, "timeout" if "timed out" in str(error) else type(error).__name__


class Watched:
    """What the supervisor knows of one container."""

    def __init__(self, spec):
        self.spec = spec
        self.incarnation = None  # the container's StartedAt: a restart resets the rest
        self.reset()
        self.restarts = 0
        self.crashes = 0
        self.exited_at = None
        self.busy = False  # being restarted

    def reset(self):
        self.started = "startup" not in self.spec.probes
        self.ready = False
        self.failures = {kind: 0 for kind in self.spec.probes}
        self.successes = {kind: 0 for kind in self.spec.probes}
        self.due = {kind: time.monotonic() + p.initial_delay for kind, p in self.spec.probes.items()}
        self.running_kinds = set()

    def probed(self):
        return bool(self.spec.probes)


class Supervisor:
    def __init__(self, specs):
        self.watched = {spec.name: Watched(spec) for spec in specs}
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=24)
        self.info = {}
        self.endpoints = None
        self.stopping = threading.Event()
        # Reentrant: a probe that finished before its callback was attached runs the
        # callback (which takes the lock) at once, in the scheduling thread holding it.
        self.lock = threading.RLock()

    # --- what podman says -------------------------------------------------------
    def refresh(self):
        found = podman.inspect(*self.watched)
        exited = []
        with self.lock:
            self.info = found
            for name, watched in self.watched.items():
                info = found.get(name)
                if not info:
                    continue
                started_at = info["State"].get("StartedAt")
                if podman.state(info) == "running" and started_at != watched.incarnation:
                    if watched.incarnation is not None:
                        event(name, "started")
                    watched.incarnation = started_at
                    watched.reset()
                    watched.exited_at = None
                if podman.state(info) in ("exited", "stopped") and not watched.busy:
                    exited.append((watched, info))
        # `podman start` outside the lock: the probes go on meanwhile.
        for watched, info in exited:
            self.restart_exited(watched, info)

    def restart_exited(self, watched, info):
        name = watched.spec.name
        if containers.held(name):
            return
        now = time.time()
        if watched.exited_at is None:
            watched.exited_at = now
            ran = _seconds_between(info["State"].get("StartedAt"), info["State"].get("FinishedAt"))
            if ran is not None and ran > BACKOFF_RESET:
                watched.crashes = 0
            event(name, "exited", code=info["State"].get("ExitCode"), oom=info["State"].get("OOMKilled"))
        delay = 0 if watched.crashes == 0 else min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (watched.crashes - 1))
        if now - watched.exited_at < delay:
            return
        watched.crashes += 1
        watched.restarts += 1
        watched.exited_at = None
        event(name, "restarting", reason="exited", backoff=delay)
        podman.run("podman", "start", name, check=False)

    # --- probes -----------------------------------------------------------------
    def address(self, name):
        return podman.address(self.info.get(name), topology.NETWORK)

    def schedule(self):
        now = time.monotonic()
        for name, watched in self.watched.items():
            if watched.busy or not watched.probed() or podman.state(self.info.get(name)) != "running":
                continue
            address = self.address(name)
            if not address:
                continue
            kinds = ["startup"] if not watched.started else [k for k in ("readiness", "liveness") if k in watched.spec.probes]
            for kind in kinds:
                if kind in watched.running_kinds or now < watched.due[kind]:
                    continue
                probe = watched.spec.probes[kind]
                watched.due[kind] = now + probe.period
                watched.running_kinds.add(kind)
                future = self.pool.submit(http_probe, address, probe)
                future.add_done_callback(
                    lambda f, w=watched, k=kind, i=watched.incarnation: self.probed(w, k, i, _outcome(f)))

    def probed(self, watched, kind, incarnation, result):
        with self.lock:
            watched.running_kinds.discard(kind)
            if incarnation != watched.incarnation or watched.busy:
                return
            if kind != "startup" and not watched.started:
                return  # readiness and liveness count only once startup has passed
            ok, detail = result
            probe = watched.spec.probes[kind]
            name = watched.spec.name
            if ok:
                watched.failures[kind] = 0
                watched.successes[kind] += 1
                if kind == "startup":
                    watched.started = True
                    event(name, "started-up")
                    now = time.monotonic()
                    for other in ("readiness", "liveness"):
                        if other in watched.due:
                            watched.due[other] = now
                elif kind == "readiness" and not watched.ready and \
                        watched.successes[kind] >= probe.success_threshold:
                    watched.ready = True
                    event(name, "ready")
                return
            watched.successes[kind] = 0
            watched.failures[kind] += 1
            if watched.failures[kind] < probe.failure_threshold:
                return
            if kind == "readiness":
                if watched.ready:
                    watched.ready = False
                    event(name, "not-ready", detail=detail)
                return
            # startup or liveness: the container is restarted.
            event(name, f"{kind}-failed", detail=detail)
            watched.busy = True
            watched.ready = False
            threading.Thread(target=self.restart, args=(watched, kind), daemon=True).start()

    def restart(self, watched, reason):
        name = watched.spec.name
        try:
            event(name, "restarting", reason=reason)
            containers.stop(watched.spec)
            if not containers.held(name):
                podman.run("podman", "start", name, check=False)
            watched.restarts += 1
        finally:
            watched.busy = False

    # --- the ingress --------------------------------------------------------------
    def ready_endpoints(self):
        endpoints = {service: [] for service in topology.HTTP_SERVICES}
        for name, watched in self.watched.items():
            if watched.spec.role != "service" or watched.spec.app not in endpoints:
                continue
            if watched.ready and not containers.held(name) and podman.state(self.info.get(name)) == "running":
                address = self.address(name)
                if address:
                    endpoints[watched.spec.app].append(address)
        return endpoints

    def update_ingress(self):
        """Rewrites and reloads the ingress when the rotation changed; the reload (a
        `podman exec`) runs outside the lock, so the probes' results are taken meanwhile."""
        with self.lock:
            endpoints = self.ready_endpoints()
        if endpoints == self.endpoints:
            return
        ingress.write(endpoints)
        if podman.state(self.info.get(ingress.NAME)) == "running":
            ingress.reload()
        event(ingress.NAME, "rotation", endpoints=endpoints)
        self.endpoints = endpoints

    # --- the view -------------------------------------------------------------------
    def write_view(self):
        view = {"t": time.time(), "pid": os.getpid(), "containers": {}, "endpoints": self.endpoints}
        for name, watched in self.watched.items():
            info = self.info.get(name)
            view["containers"][name] = {
                "role": watched.spec.role,
                "state": podman.state(info) or "missing",
                "address": self.address(name),
                "started": watched.started,
                "ready": watched.ready if watched.spec.probes else None,
                "restarts": watched.restarts,
                "since": watched.incarnation,
                "held": containers.held(name),
            }
        with open(VIEW + ".new", "w") as file:
            json.dump(view, file, indent=1)
        os.replace(VIEW + ".new", VIEW)

    def inspect_forever(self):
        """What podman says, every INSPECT_EVERY, in a thread of its own: `podman
        inspect` waits for a container's lock while another podman command holds it (a
        standby's rejoin holds one for seconds), and the probes must not wait with it,
        as a kubelet's probes do not wait for the container runtime."""
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self.refresh()
            except Exception as error:  # noqa: BLE001 - the next round tries again
                print(f"supervisor: inspecting the containers failed: {error}", file=sys.stderr, flush=True)
            took = time.monotonic() - started
            if took > SLOW:
                print(f"supervisor: podman inspect took {took:.1f} s", file=sys.stderr, flush=True)
            self.stopping.wait(max(0.0, INSPECT_EVERY - took))

    def run(self):
        os.makedirs(RUN, exist_ok=True)
        event("supervisor", "started", pid=os.getpid())
        self.refresh()
        threading.Thread(target=self.inspect_forever, daemon=True).start()
        last_view = 0.0
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                with self.lock:
                    self.schedule()
                self.update_ingress()
                if time.monotonic() - last_view >= 0.5:
                    self.write_view()
                    last_view = time.monotonic()
            except Exception:  # noqa: BLE001 - a kubelet outlives an odd container
                # What podman said of one container (caught between states) must not
                # stop the probes of every other: logged, and the next round goes on.
                print(f"supervisor: a round failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            took = time.monotonic() - started
            if took > SLOW:
                print(f"supervisor: one round of probes and rotation took {took:.1f} s", file=sys.stderr, flush=True)
            self.stopping.wait(TICK)
        event("supervisor", "stopped")


def _outcome(future):
    """A finished probe's result; a probe that raised anyway is a failed one."""
    try:
        return future.result()
    except Exception as error:  # noqa: BLE001
        return False, type(error).__name__


def _seconds_between(start, end):
    """Seconds between two of podman's timestamps (UTC, to the second)."""
    try:
        parse = lambda s: datetime.datetime.fromisoformat(s[:19])  # noqa: E731
        return (parse(end) - parse(start)).total_seconds()
    except (TypeError, ValueError):
        return None


def main(specs):
    supervisor = Supervisor(specs)
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: supervisor.stopping.set())
    with open(PID, "w") as file:
        file.write(str(os.getpid()))
    try:
        supervisor.run()
    finally:
        supervisor.pool.shutdown(wait=False, cancel_futures=True)
        if os.path.exists(PID) and open(PID).read().strip() == str(os.getpid()):
            os.remove(PID)


def running_pid():
    try:
        pid = int(open(PID).read().strip())
        os.kill(pid, 0)
        with open(f"/proc/{pid}/cmdline") as file:
            if "supervise" in file.read():
                return pid
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        pass
    return None
