"""Checks of the cluster harness (infra/cluster): that what `make cluster` runs is
what the rendered prod overlay says, and that the images `make images` builds are
what the Dockerfile's runtime stages say.

The first group is offline (make infra-tests). `Images` needs the images: it runs
after `make images` in make test (scripts/cluster-chaos.sh), where REQUIRE_IMAGES=1
makes a missing image a failure instead of a skip.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from unittest import mock

from rendered import APPS, ROOT, of_kind, read, render, workloads

# The harness writes what it generates (secrets, certificates, volumes) under
# CLUSTER_DIR: a scratch one for the tests.
os.environ.setdefault("CLUSTER_DIR", tempfile.mkdtemp(prefix="cluster-test-"))
sys.path.insert(0, os.path.join(ROOT, "infra"))

from cluster import control, ingress, postgres, supervisor, topology  # noqa: E402


def specs():
    if not hasattr(specs, "cached"):
        specs.cached = {s.name: s for s in control.specs({})}
    return specs.cached


def env_names(container, config_maps=None):
    """The variables a container gets: an optional ConfigMap key that the overlay does
    not set gives none (as Kubernetes does)."""
    def given(variable):
        ref = variable.get("valueFrom", {}).get("configMapKeyRef")
        if config_maps is None or ref is None or not ref.get("optional"):
            return True
        return ref["key"] in config_maps.get(ref["name"], {})
    return {e["name"] for e in container.get("env", []) if given(e)}


class FromTheRenderedOverlay(unittest.TestCase):
    """Every container takes what its rendered workload says, not a second copy."""

    def test_every_service_replica_runs_its_deployment(self):
        prod = render("prod")
        for app in APPS:
            (deployment,) = [d for d in of_kind(prod, "Deployment") if d["metadata"]["name"] == app]
            pod = deployment["spec"]["template"]["spec"]
            (container,) = pod["containers"]
            for replica in range(topology.REPLICAS):
                spec = specs()[f"{app}-{replica}"]
                with self.subTest(container=spec.name):
                    self.assertEqual(spec.image, f"localhost/ticketing-{app}:latest")
                    config_maps = {c["metadata"]["name"]: c.get("data", {}) for c in of_kind(prod, "ConfigMap")}
                    # The collector's address is left out (TRANSLATIONS: traces).
                    given = env_names(container, config_maps) - {"OTEL_EXPORTER_OTLP_ENDPOINT"}
                    self.assertTrue(given <= set(spec.env), given - set(spec.env))
                    security = {**pod["securityContext"], **container["securityContext"]}
                    self.assertEqual(spec.user, f"{security['runAsUser']}:{security['runAsGroup']}")
                    self.assertTrue(spec.read_only)
                    self.assertEqual(spec.cap_drop, container["securityContext"]["capabilities"]["drop"])
                    self.assertTrue(spec.no_new_privileges)
                    limit = container["resources"]["limits"]["memory"]
                    self.assertEqual(spec.memory, limit.replace("Mi", "m").replace("Gi", "g"))
                    self.assertEqual(spec.grace, pod["terminationGracePeriodSeconds"])
                    self.assertEqual(spec.pre_stop, {"sleep": container["lifecycle"]["preStop"]["sleep"]["seconds"]})
                    for kind in ("startup", "readiness", "liveness"):
                        rendered = container[f"{kind}Probe"]
                        probe = spec.probes[kind]
                        self.assertEqual(probe.path, rendered["httpGet"]["path"])
                        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
                        self.assertEqual(probe.port, ports[rendered["httpGet"]["port"]])
                        self.assertEqual(probe.period, rendered.get("periodSeconds", 10))
                        self.assertEqual(probe.failure_threshold, rendered.get("failureThreshold", 3))
                        self.assertEqual(probe.timeout, rendered.get("timeoutSeconds", 1))
                    # Values from the ConfigMap arrive as the ConfigMap says, but for
                    # the translations the harness lists.
                    config = next(c for c in of_kind(prod, "ConfigMap")
                                  if c["metadata"]["name"].startswith("ticketing-config"))["data"]
                    for variable in container["env"]:
                        ref = variable.get("valueFrom", {}).get("configMapKeyRef")
                        if ref and variable["name"] not in ("COOKIE_SECURE", "STRIPE_API_BASE",
                                                            "OTEL_EXPORTER_OTLP_ENDPOINT"):
                            if ref.get("optional") and ref["key"] not in config:
                                self.assertNotIn(variable["name"], spec.env)
                                continue
                            self.assertEqual(spec.env[variable["name"]], config[ref["key"]], variable["name"])
                    self.assertEqual(spec.env.get("COOKIE_SECURE", "false"), "false")
                    self.assertNotIn("OTEL_EXPORTER_OTLP_ENDPOINT", spec.env, "no collector here")

    def test_the_nats_nodes_run_the_prod_configuration_as_a_cluster(self):
        (nats,) = [s for s in of_kind(render("prod"), "StatefulSet") if s["metadata"]["name"] == "nats"]
        conf = next(c for c in of_kind(render("prod"), "ConfigMap")
                    if c["metadata"]["name"].startswith("nats-config"))["data"]["nats.conf"]
        routes = re.findall(r"(?:nats|tls)://([\w.-]+):6222", conf)
        self.assertEqual(len(routes), nats["spec"]["replicas"])
        aliases = set()
        for node in range(topology.NATS_NODES):
            spec = specs()[f"nats-{node}"]
            aliases |= set(spec.aliases)
            self.assertEqual(spec.env["POD_NAME"], spec.name, "server_name is the container's name")
            self.assertEqual(spec.args, ["--config", "/etc/nats/nats.conf"])
            (config,) = [host for host, inside, _ in spec.mounts if inside == "/etc/nats"]
            self.assertEqual(read(os.path.join(config, "nats.conf")), conf + topology.NATS_HOST_TOOLS)
            self.assertIn("/data", [inside for _, inside, _ in spec.mounts])
            self.assertEqual(spec.pre_stop["exec"][0], "nats-server")
        self.assertTrue(set(routes) <= aliases, "every route resolves to a node")
        self.assertIn("sync_interval: always", conf)

    def test_the_services_make_a_three_replica_stream(self):
        for app in ("auth", "tickets", "orders", "payments", "expiration"):
            self.assertEqual(specs()[f"{app}-0"].env["STREAM_REPLICAS"], "3")

    def test_each_database_is_a_primary_and_a_synchronous_standby_as_its_stanza_says(self):
        for app in [a for a in APPS if a != "client"]:
            (cluster,) = [c for c in of_kind(render("prod"), "Cluster") if c["metadata"]["name"] == f"{app}-db"]
            synchronous = cluster["spec"]["postgresql"]["synchronous"]
            for name in postgres.instances(app):
                args = specs()[name].args
                settings = dict(a.split("=", 1) for a in args[args.index("-c"):] if a != "-c")
                self.assertEqual(
                    settings["synchronous_standby_names"],
                    f'ANY {synchronous["number"]} ("{app}-db-1","{app}-db-2")')
                self.assertEqual(synchronous["dataDurability"], "required")
                for key, value in cluster["spec"]["postgresql"]["parameters"].items():
                    self.assertEqual(settings[key], str(value))
                self.assertEqual(settings["ssl"], "on")
                self.assertEqual(specs()[name].memory,
                                 cluster["spec"]["resources"]["limits"]["memory"].replace("Gi", "g"))
            # The app's secret points at the -rw name, which verify-full checks against
            # the database's CA.
            uri = control.secrets.all_secrets({})[f"{app}-db-app"]["uri"]
            self.assertIn(f"@{app}-db-rw:5432/", uri)
            self.assertEqual(specs()[f"{app}-0"].env["DATABASE_URL"], uri)
            self.assertEqual(specs()[f"{app}-0"].env["PGSSLMODE"], "verify-full")

    def test_settings_passed_to_make_cluster_reach_every_service(self):
        settings = {"JWT_KEY": "a-key-of-mine", "EXPIRATION_WINDOW_SECONDS": "42", "RATE_LIMITS": "x"}
        found = {s.name: s for s in control.specs(settings)}
        for app in APPS:
            self.assertEqual(found[f"{app}-0"].env["EXPIRATION_WINDOW_SECONDS"], "42")
            self.assertEqual(found[f"{app}-1"].env["RATE_LIMITS"], "x")
        self.assertEqual(found["orders-0"].env["JWT_KEY"], "a-key-of-mine")
        self.assertNotEqual(found["orders-0"].digest(), specs()["orders-0"].digest(),
                            "a changed setting replaces the container")

    def test_the_ingress_routes_as_the_ingress_to_ready_replicas_only(self):
        (rendered,) = [i for i in of_kind(render("prod"), "Ingress") if i["metadata"]["name"] == "ticketing"]
        config = ingress.config({"auth": ["10.0.0.1", "10.0.0.2"], "tickets": ["10.0.0.3"],
                                 "orders": [], "payments": ["10.0.0.4"], "expiration": [],
                                 "client": ["10.0.0.5"]})
        for path in rendered["spec"]["rules"][0]["http"]["paths"]:
            service = path["backend"]["service"]["name"]
            expected = (f"location {path['path']} {{ return 503; }}" if service == "orders"
                        else f"location {path['path']} {{ proxy_pass http://{service}; }}")
            self.assertIn(expected, config)
        self.assertIn("server 10.0.0.1:3000", config)
        self.assertIn("server 10.0.0.2:3000", config)
        self.assertNotIn("upstream orders", config)
        size = rendered["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
        self.assertIn(f"client_max_body_size {size};", config)
        # Services by name on port 3000, as the manifests' URLs call them.
        for app in ("auth", "tickets", "orders", "payments"):
            self.assertIn(f"server_name {app};", config)
        self.assertIn("http://auth:3000", specs()["client-0"].env["AUTH_API_URL"])

    def test_what_cannot_be_expressed_is_listed(self):
        topics = [topic for topic, _ in topology.TRANSLATIONS]
        for topic in ("images", "Services", "secrets", "TLS", "traces", "probes", "left out"):
            self.assertIn(topic, topics)


class Probes(unittest.TestCase):
    """The supervisor's probes behave as the kubelet's."""

    def setUp(self):
        spec = specs()["orders-0"]
        self.supervisor = supervisor.Supervisor([spec])
        self.watched = self.supervisor.watched["orders-0"]
        self.watched.incarnation = "now"
        patcher = mock.patch.object(supervisor, "event")
        self.events = patcher.start()
        self.addCleanup(patcher.stop)

    def result(self, kind, ok):
        self.supervisor.probed(self.watched, kind, "now", (ok, "HTTP 200" if ok else "HTTP 503"))

    def test_nothing_is_ready_before_the_startup_probe_passes(self):
        self.assertFalse(self.watched.started)
        self.result("readiness", True)
        self.assertFalse(self.watched.ready, "no readiness before startup")

    def test_readiness_flips_after_its_failure_threshold(self):
        self.result("startup", True)
        self.result("readiness", True)
        self.assertTrue(self.watched.ready)
        threshold = self.watched.spec.probes["readiness"].failure_threshold
        for _ in range(threshold - 1):
            self.result("readiness", False)
        self.assertTrue(self.watched.ready, "one failure short of the threshold")
        self.result("readiness", False)
        self.assertFalse(self.watched.ready)

    def test_a_failing_liveness_probe_restarts_the_container(self):
        self.result("startup", True)
        with mock.patch.object(supervisor.threading, "Thread") as thread:
            for _ in range(self.watched.spec.probes["liveness"].failure_threshold):
                self.result("liveness", False)
            thread.assert_called_once()
            self.assertEqual(thread.call_args.kwargs["args"], (self.watched, "liveness"))
        self.assertFalse(self.watched.ready)

    def test_a_probe_that_finishes_at_once_does_not_hang_the_loop(self):
        """A probe done before its callback is attached runs the callback in the
        scheduling thread, which holds the lock: with a plain Lock the supervisor hung
        there for good (seen once: nothing became ready)."""
        class Done:
            def __init__(self, value):
                self.value = value

            def result(self):
                return self.value

            def add_done_callback(self, callback):
                callback(self)

        self.supervisor.pool = mock.Mock()
        self.supervisor.pool.submit.side_effect = lambda fn, *args: Done((True, "HTTP 200"))
        self.supervisor.info = {"orders-0": {"State": {"Status": "running"}}}
        with mock.patch.object(supervisor.podman, "state", return_value="running"), \
                mock.patch.object(self.supervisor, "address", return_value="10.0.0.1"):
            finished = threading.Event()

            def schedule():
                with self.supervisor.lock:
                    self.supervisor.schedule()
                finished.set()

            threading.Thread(target=schedule, daemon=True).start()
            self.assertTrue(finished.wait(5), "the scheduling loop hung on its own lock")
        self.assertTrue(self.watched.started)

    def test_a_probe_that_raises_counts_as_failed_and_is_run_again(self):
        """An exception from a probe (one the probe did not expect) once left the
        readiness probe counted as running for good: the replica was never probed
        again and stayed in the rotation while partitioned from its database."""
        class Raised:
            def result(self):
                raise RuntimeError("unexpected")

            def add_done_callback(self, callback):
                callback(self)

        self.result("startup", True)
        self.result("readiness", True)
        self.supervisor.pool = mock.Mock()
        self.supervisor.pool.submit.side_effect = lambda fn, *args: Raised()
        self.supervisor.info = {"orders-0": {"State": {"Status": "running"}}}
        threshold = self.watched.spec.probes["readiness"].failure_threshold
        with mock.patch.object(supervisor.podman, "state", return_value="running"), \
                mock.patch.object(self.supervisor, "address", return_value="10.0.0.1"):
            for _ in range(threshold):
                self.watched.due = {kind: 0 for kind in self.watched.due}
                with self.supervisor.lock:
                    self.supervisor.schedule()
        self.assertNotIn("readiness", self.watched.running_kinds)
        self.assertFalse(self.watched.ready, "each raised probe counted as a failure")

    def test_the_probes_go_on_while_podman_inspect_hangs(self):
        """`podman inspect` waits while another podman command holds a container's
        lock; the probes run in the meantime on what it said last."""
        self.result("startup", True)
        self.result("readiness", True)
        released = threading.Event()
        self.addCleanup(released.set)
        running = {"orders-0": {"State": {"Status": "running", "StartedAt": "now"}}}

        def inspect(*names):
            if released.is_set() or not hasattr(inspect, "called"):
                inspect.called = True
                return running
            released.wait(30)
            return running

        probed = threading.Event()
        self.supervisor.pool = mock.Mock()

        class Passed:
            def result(self):
                return True, "HTTP 200"

            def add_done_callback(self, callback):
                callback(self)

        def submit(fn, *args):
            probed.set()
            return Passed()

        self.supervisor.pool.submit.side_effect = submit
        self.watched.due = {kind: 0 for kind in self.watched.due}
        with mock.patch.object(supervisor.podman, "inspect", side_effect=inspect), \
                mock.patch.object(self.supervisor, "address", return_value="10.0.0.1"), \
                mock.patch.object(self.supervisor, "update_ingress"), \
                mock.patch.object(self.supervisor, "write_view"), \
                mock.patch.object(supervisor, "INSPECT_EVERY", 0.01):
            loop = threading.Thread(target=self.supervisor.run, daemon=True)
            loop.start()
            self.addCleanup(self.supervisor.stopping.set)
            time.sleep(0.2)  # the inspecting thread is now blocked in its second round
            self.assertTrue(hasattr(inspect, "called"))
            with self.supervisor.lock:
                probed.clear()
                self.watched.due = {kind: 0 for kind in self.watched.due}
            self.assertTrue(probed.wait(5), "no probe ran while podman inspect hung")
            self.supervisor.stopping.set()
            released.set()
            loop.join(5)

    def test_a_container_between_networks_has_no_address_and_the_view_is_written(self):
        """A failover moves a database's -rw name with `podman network disconnect` and
        `connect`: in between, podman lists the container as running with no networks.
        The view's address lookup raised KeyError on it and the supervisor died (seen
        on CI: nothing left the rotation after that)."""
        between = {"State": {"Status": "running", "StartedAt": "now"}, "NetworkSettings": {}}
        self.assertIsNone(supervisor.podman.address(between, topology.NETWORK))
        self.assertEqual(supervisor.podman.networks({"State": {"Status": "exited"}}), {})
        self.supervisor.info = {"orders-0": between}
        with tempfile.TemporaryDirectory() as run, \
                mock.patch.object(supervisor, "VIEW", os.path.join(run, "view.json")), \
                mock.patch.object(supervisor.containers, "held", return_value=False):
            self.supervisor.write_view()
            with open(supervisor.VIEW) as file:
                self.assertIsNone(json.load(file)["containers"]["orders-0"]["address"])

    def test_a_round_that_raises_is_logged_and_the_loop_goes_on(self):
        rounds = threading.Semaphore(0)

        def schedule():
            rounds.release()
            raise KeyError("Networks")

        with mock.patch.object(self.supervisor, "refresh"), \
                mock.patch.object(self.supervisor, "inspect_forever"), \
                mock.patch.object(self.supervisor, "schedule", side_effect=schedule), \
                mock.patch.object(supervisor.sys, "stderr") as stderr, \
                mock.patch.object(supervisor, "TICK", 0.01):
            loop = threading.Thread(target=self.supervisor.run, daemon=True)
            loop.start()
            self.addCleanup(self.supervisor.stopping.set)
            for _ in range(3):
                self.assertTrue(rounds.acquire(timeout=5), "the loop stopped after a failed round")
            self.supervisor.stopping.set()
            loop.join(5)
        self.assertIn("KeyError", "".join(str(c) for c in stderr.write.call_args_list))

    def test_waiting_for_readiness_fails_at_once_when_the_supervisor_stopped(self):
        stale = {"t": time.time() - 60, "containers": {"orders-0": {"ready": True}}}
        with mock.patch.object(control, "view", return_value=stale):
            with self.assertRaisesRegex(supervisor.podman.Failed, "supervisor"):
                control.wait_ready(["orders-0"], within=1)

    def test_a_probe_of_an_earlier_container_is_ignored(self):
        self.result("startup", True)
        self.supervisor.probed(self.watched, "readiness", "before", (True, "HTTP 200"))
        self.assertFalse(self.watched.ready)

    def test_an_exited_container_is_started_again_with_a_backoff(self):
        info = {"State": {"StartedAt": "2026-01-01T00:00:00", "FinishedAt": "2026-01-01T00:00:05",
                          "ExitCode": 1, "OOMKilled": False}}
        with mock.patch.object(supervisor.podman, "run") as run:
            self.supervisor.restart_exited(self.watched, info)
            run.assert_called_once_with("podman", "start", "orders-0", check=False)
            run.reset_mock()
            self.supervisor.restart_exited(self.watched, info)
            run.assert_not_called()  # the second exit waits BACKOFF_FIRST seconds


DOCKERFILE_STAGE = re.compile(r"^FROM\s+(\S+)\s+AS\s+(\S+)", re.IGNORECASE | re.MULTILINE)


def dockerfile_runtime():
    """Per target of the Dockerfile: (user, entrypoint, binary path, ports), read
    here on its own rather than through the harness's reader."""
    text = read(os.path.join(ROOT, "Dockerfile"))
    stages = {}
    for match in DOCKERFILE_STAGE.finditer(text):
        body = text[match.end():].split("\nFROM ", 1)[0]
        stages[match.group(2)] = (match.group(1), body)
    user = re.search(r"^USER\s+(\S+)", stages["runtime"][1], re.MULTILINE).group(1)
    found = {}
    for name, (base, body) in stages.items():
        if base != "runtime":
            continue
        entrypoint = json.loads(re.search(r"^ENTRYPOINT\s+(.+)$", body, re.MULTILINE).group(1))
        path = re.search(r"^COPY\s+--from=builder\s+\S+\s+(\S+)", body, re.MULTILINE).group(1)
        ports = sorted(int(p) for p in re.search(r"^EXPOSE\s+(.+)$", body, re.MULTILINE).group(1).split())
        found[name] = (user, entrypoint, path, ports)
    return found


class Images(unittest.TestCase):
    """Each image of `make images` is its Dockerfile target's runtime stage."""

    def test_each_image_is_its_dockerfile_stage(self):
        targets = dockerfile_runtime()
        self.assertEqual(sorted(targets), sorted(APPS + ["stripe-standin"]))
        for target, (user, entrypoint, path, ports) in targets.items():
            image = f"localhost/ticketing-{target}:latest"
            with self.subTest(image=image):
                present = shutil.which("podman") is not None and \
                    subprocess.run(["podman", "image", "exists", image]).returncode == 0
                if not present:
                    if os.environ.get("REQUIRE_IMAGES") == "1":
                        self.fail(f"{image} was not built")
                    self.skipTest("no images here: make images builds them")
                config = json.loads(subprocess.run(
                    ["podman", "image", "inspect", image], check=True, capture_output=True,
                    text=True).stdout)[0]["Config"]
                self.assertEqual(config["User"], user)
                self.assertEqual(config["Entrypoint"], entrypoint)
                self.assertEqual(entrypoint, [path])
                self.assertEqual(sorted(int(p.split("/")[0]) for p in config["ExposedPorts"]), ports)
                # The binary at that path runs there, as that user, read-only, with no
                # capabilities: what the Deployment asks of it.
                answered = subprocess.run(
                    ["podman", "run", "--rm", "--read-only", "--cap-drop", "ALL", "--network", "none",
                     image, "--help"], capture_output=True, text=True, timeout=60)
                self.assertEqual(answered.returncode, 0, answered.stderr)
                self.assertIn("Usage", answered.stdout)


if __name__ == "__main__":
    unittest.main()
