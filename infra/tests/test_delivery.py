"""Checks of the kinds of defect that break or degrade a first real deployment.

Each test asks a question the older checks did not, of every overlay or file it
applies to: what namespace every object lands in, which images skaffold really
deploys, who owns a Deployment's replicas, which flows the NetworkPolicies let
through, whether NATS can drain within its grace and fits its volume, whether a
configuration change rolls the pods that read it, whether anything deploys before
the tests pass, and whether every binary stops cleanly on SIGTERM.
"""

import glob
import json
import os
import re
import signal
import subprocess
import time
import unittest

import yaml

from rendered import APPS, OVERLAYS, ROOT, of_kind, read, render, workloads
from traffic import Cluster

# Kinds that live outside any namespace; everything else an overlay makes must carry
# the overlay's namespace, or it lands in `default`.
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PriorityClass", "StorageClass", "IngressClass", "GatewayClass", "ClusterIssuer",
    "ClusterImageCatalog", "PersistentVolume", "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}
RELEASE = "release"  # the prod overlay with the published images: what CI applies
ALL_OVERLAYS = OVERLAYS + [RELEASE]
BUS = ["auth", "tickets", "orders", "payments", "expiration"]
HTTP = ["auth", "tickets", "orders", "payments", "client"]
DATABASES = [a for a in APPS if a != "client"]


def image_name(image):
    """An image reference without its tag or digest."""
    name = image.split("@")[0]
    last = name.rsplit("/", 1)[-1]
    return name[: len(name) - len(last)] + last.split(":")[0]


def duration_seconds(text):
    """A NATS duration (`30s`, `2m`, `1h`) in seconds."""
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)", text.strip().strip('"')).groups()
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def size_bytes(text):
    """A Kubernetes quantity or a NATS size (`2Gi`, `1536M`, `1G`) in bytes."""
    number, unit = re.fullmatch(r"(\d+)([KMGT]i?|[kmgt]i?b?|)", text.strip().strip('"')).groups()
    unit = unit.rstrip("bB")
    powers = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
              "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    return int(number) * powers[unit[:1].upper() + unit[1:]]


def nats_size(text):
    """A NATS size (`1600M`, `2GB`): NATS counts in powers of 1024."""
    number, unit = re.fullmatch(r"(\d+)([KMGT]?)B?", text.strip().strip('"').upper()).groups()
    return int(number) * 1024 ** " KMGT".index(unit or " ")


def nats_setting(conf, name):
    match = re.search(rf"^\s*{name}\s*:\s*(\S+)", conf, re.M)
    return match and match.group(1)


class Namespaces(unittest.TestCase):
    def test_every_namespaced_object_carries_its_overlays_namespace(self):
        for overlay in ALL_OVERLAYS:
            for obj in render(overlay):
                if obj["kind"] in CLUSTER_SCOPED:
                    continue
                with self.subTest(overlay=overlay, object=f'{obj["kind"]}/{obj["metadata"]["name"]}'):
                    self.assertEqual(obj["metadata"].get("namespace"), "ticketing")


class Images(unittest.TestCase):
    def skaffold(self):
        return yaml.safe_load(read(os.path.join(ROOT, "skaffold.yaml")))

    def test_skaffold_deploys_images_named_exactly_as_its_artifacts(self):
        """skaffold replaces a manifest's image only where its name (without tag) is an
        artifact's name: a renamed image would deploy whatever the name points at."""
        config = self.skaffold()
        deployments = [("dev", config["build"]["artifacts"], config["manifests"])]
        for profile in config["profiles"]:
            build = profile.get("build", {})
            deployments.append((profile["name"], build.get("artifacts", config["build"]["artifacts"]),
                                profile.get("manifests", config["manifests"])))
        for profile, artifacts, manifests in deployments:
            (path,) = manifests["kustomize"]["paths"]
            overlay = path.rsplit("/", 1)[-1]
            built = {a["image"] for a in artifacts}
            deployed = {
                image_name(c["image"])
                for w in workloads(render(overlay))
                for c in w["spec"]["template"]["spec"]["containers"]
                if "ticketing-" in c["image"]
            }
            with self.subTest(profile=profile, overlay=overlay):
                self.assertEqual(deployed, built)

    def test_the_release_overlay_runs_the_published_images(self):
        for workload in workloads(render(RELEASE)):
            for container in workload["spec"]["template"]["spec"]["containers"]:
                if "ticketing-" not in container["image"]:
                    continue
                with self.subTest(container=container["name"]):
                    self.assertRegex(container["image"], r"^ghcr\.io/[a-z0-9-]+/ticketing-[a-z-]+:main$")
                    self.assertEqual(container["imagePullPolicy"], "Always")

    def test_each_artifact_rebuilds_on_what_its_binary_is_built_from_and_nothing_else(self):
        metadata = json.loads(subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout)
        members = {p["id"]: p for p in metadata["packages"] if p["id"] in metadata["workspace_members"]}
        by_name = {p["name"]: p for p in members.values()}
        nodes = {n["id"]: n for n in metadata["resolve"]["nodes"]}

        def crates_of(name):
            seen, todo = set(), [by_name[name]["id"]]
            while todo:
                package = todo.pop()
                if package in seen:
                    continue
                seen.add(package)
                for dependency in nodes[package]["deps"]:
                    normal = any(kind["kind"] is None for kind in dependency["dep_kinds"])
                    if normal and dependency["pkg"] in members:
                        todo.append(dependency["pkg"])
            return {os.path.relpath(os.path.dirname(members[p]["manifest_path"]), ROOT) for p in seen}

        shared = {"Cargo.toml", "Cargo.lock", ".sqlx", "Dockerfile", "scripts/image.sh", "vendor"}
        config = self.skaffold()
        local = [("dev", config["build"])] + [(p["name"], p["build"]) for p in config["profiles"]
                                               if "local" in p.get("build", {})]
        for profile, build in local:
            for artifact in build["artifacts"]:
                binary = artifact["image"].removeprefix("ticketing-")
                with self.subTest(profile=profile, artifact=artifact["image"]):
                    custom = artifact["custom"]
                    self.assertEqual(set(custom["dependencies"]["paths"]), shared | crates_of(binary))
                    self.assertRegex(custom["buildCommand"], rf"^scripts/image\.sh {binary} (dev|release)$")

    def test_one_dockerfile_builds_every_image_in_one_shared_stage(self):
        dockerfile = read(os.path.join(ROOT, "Dockerfile"))
        self.assertEqual(glob.glob(os.path.join(ROOT, "*", "Dockerfile")), [], "no Dockerfile per crate")
        self.assertEqual(dockerfile.count("cargo chef cook"), 1)
        self.assertEqual(len(re.findall(r"^RUN cargo build", dockerfile, re.M)), 1)
        targets = set(re.findall(r"^FROM runtime AS (\S+)", dockerfile, re.M))
        self.assertEqual(targets, set(APPS) | {"stripe-standin"})


class Scaling(unittest.TestCase):
    def test_no_autoscaled_deployment_sets_its_replicas(self):
        """An HPA owns `.spec.replicas`: a manifest that sets it conflicts with the
        controller at the next server-side apply (and resets the scale on a plain one)."""
        for overlay in ALL_OVERLAYS:
            objects = render(overlay)
            scaled = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objects, "HorizontalPodAutoscaler")}
            for deployment in of_kind(objects, "Deployment"):
                if deployment["metadata"]["name"] in scaled:
                    with self.subTest(overlay=overlay, deployment=deployment["metadata"]["name"]):
                        self.assertNotIn("replicas", deployment["spec"])

    def test_autoscalers_scale_on_a_meaningful_amount_of_cpu(self):
        """Utilisation is relative to the request: 70 % of 50m scales out at 35m of CPU,
        an idle pod's noise."""
        for overlay in ALL_OVERLAYS:
            objects = render(overlay)
            deployments = {d["metadata"]["name"]: d for d in of_kind(objects, "Deployment")}
            for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
                (metric,) = hpa["spec"]["metrics"]
                target = metric["resource"]["target"]["averageUtilization"]
                container = deployments[hpa["spec"]["scaleTargetRef"]["name"]]["spec"]["template"]["spec"]["containers"][0]
                request = container["resources"]["requests"]["cpu"]
                millicores = int(request[:-1]) if request.endswith("m") else int(float(request) * 1000)
                with self.subTest(overlay=overlay, hpa=hpa["metadata"]["name"]):
                    self.assertGreaterEqual(millicores * target / 100, 100)


class Network(unittest.TestCase):
    def flows(self, overlay):
        gateway = overlay == "prod-gateway"
        front = "gateway" if gateway else "ingress-nginx"
        allowed = []
        for service in HTTP:
            allowed.append((front, service, 3000, "TCP"))
        allowed.append((front, "acme-solver", 8089, "TCP"))
        if gateway:
            allowed += [("internet", "gateway", 80, "TCP"), ("internet", "gateway", 443, "TCP")]
        for app in APPS:
            for dns in ("coredns", "nodelocal-dns"):
                allowed += [(app, dns, 53, "UDP"), (app, dns, 53, "TCP")]
            allowed.append(("prometheus", app, 9000, "TCP"))
            allowed.append((app, "otel-collector", 4318, "TCP"))  # traces
        for app in DATABASES:
            allowed.append((app, f"{app}-db-1", 5432, "TCP"))
            allowed += [("cnpg-operator", f"{app}-db-1", port, "TCP") for port in (5432, 8000)]
            allowed.append((f"{app}-db-2", f"{app}-db-1", 5432, "TCP"))
        for app in BUS:
            allowed.append((app, "nats", 4222, "TCP"))
        allowed += [("client", api, 3000, "TCP") for api in ("auth", "tickets", "orders", "payments")]
        allowed += [("payments", "stripe", 443, "TCP"), ("nats", "nats", 6222, "TCP"), ("prometheus", "nats", 8222, "TCP")]

        denied = [(front, "expiration", 3000, "TCP")]
        denied += [(front, app, 9000, "TCP") for app in APPS]
        denied += [("internet", app, 3000, "TCP") for app in APPS]
        denied += [("another-namespace", app, 3000, "TCP") for app in APPS]
        for app in APPS:
            denied += [(app, f"{other}-db-1", 5432, "TCP") for other in DATABASES if other != app]
            denied.append((app, "internet", 443, "TCP") if app != "payments" else ("payments", "internet", 80, "TCP"))
            if app not in BUS:
                denied.append((app, "nats", 4222, "TCP"))
        denied += [("internet", f"{db}-db-1", 5432, "TCP") for db in DATABASES]
        denied += [("ingress-nginx", "nats", 4222, "TCP"), ("tickets", "stripe", 443, "TCP")]
        # Traces go to the collector, nowhere else.
        denied += [("orders", "internet", 4318, "TCP"), ("orders", "prometheus", 4318, "TCP")]
        return allowed, denied

    def test_the_policies_allow_every_flow_the_system_needs_and_deny_the_rest(self):
        for overlay in ("prod", "prod-gateway", RELEASE):
            cluster = Cluster(render(overlay), gateway=overlay == "prod-gateway")
            allowed, denied = self.flows(overlay)
            for source, destination, port, protocol in allowed:
                with self.subTest(overlay=overlay, flow=f"{source} -> {destination}:{port}/{protocol}"):
                    self.assertTrue(cluster.allows(source, destination, port, protocol), "must be allowed")
            for source, destination, port, protocol in denied:
                with self.subTest(overlay=overlay, flow=f"{source} -> {destination}:{port}/{protocol}"):
                    self.assertFalse(cluster.allows(source, destination, port, protocol), "must be denied")


    PORTS = [(53, "UDP"), (53, "TCP"), (80, "TCP"), (443, "TCP"), (3000, "TCP"), (4222, "TCP"),
             (4317, "TCP"), (4318, "TCP"), (5432, "TCP"), (6222, "TCP"), (8000, "TCP"), (8089, "TCP"),
             (8222, "TCP"), (9000, "TCP")]

    def needs(self, app):
        """Exactly where `app` must be able to go: DNS, its database, NATS if it is on
        the bus, the APIs (the client), Stripe (payments), the trace collector."""
        needed = {(dns, 53, protocol) for dns in ("coredns", "nodelocal-dns") for protocol in ("UDP", "TCP")}
        needed |= {("otel-collector", 4317, "TCP"), ("otel-collector", 4318, "TCP")}
        if app in DATABASES:
            needed |= {(f"{app}-db-{n}", 5432, "TCP") for n in (1, 2)}
        if app in BUS:
            needed.add(("nats", 4222, "TCP"))
        if app == "client":
            needed |= {(api, 3000, "TCP") for api in ("auth", "tickets", "orders", "payments")}
        if app == "payments":
            needed |= {("stripe", 443, "TCP"), ("internet", 443, "TCP")}
        return needed

    def test_each_service_may_leave_only_for_exactly_what_it_needs(self):
        """Each service's own egress policy, on its own: a peer broader than needed is
        a defect even where the destination's ingress policy happens to refuse it."""
        for overlay in ("prod", "prod-gateway", RELEASE):
            cluster = Cluster(render(overlay), gateway=overlay == "prod-gateway")
            for app in APPS:
                allowed = {
                    (name, port, protocol)
                    for name in cluster.endpoints if name != app
                    for port, protocol in self.PORTS
                    if cluster.egress_allows(app, name, port, protocol)
                }
                with self.subTest(overlay=overlay, service=app):
                    self.assertEqual(allowed, self.needs(app))


class Nats(unittest.TestCase):
    def parts(self, overlay):
        objects = render(overlay)
        (statefulset,) = [s for s in of_kind(objects, "StatefulSet") if s["metadata"]["name"] == "nats"]
        pod = statefulset["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        volume = next(v for v in pod["volumes"] if v["name"] == "config")
        config_maps = {c["metadata"]["name"]: c for c in of_kind(objects, "ConfigMap")}
        conf = config_maps[volume["configMap"]["name"]]["data"]["nats.conf"]
        (ticketing_config,) = [c for n, c in config_maps.items() if n.startswith("ticketing-config")]
        return objects, statefulset, pod, container, conf, ticketing_config["data"]

    def test_nats_drains_within_its_termination_grace(self):
        for overlay in ALL_OVERLAYS:
            _, _, pod, container, conf, _ = self.parts(overlay)
            lame_duck = nats_setting(conf, "lame_duck_duration")
            grace_period = nats_setting(conf, "lame_duck_grace_period")
            with self.subTest(overlay=overlay):
                self.assertIsNotNone(lame_duck, "lame_duck_duration (2 min by default)")
                self.assertIsNotNone(grace_period, "lame_duck_grace_period")
                drain = duration_seconds(lame_duck) + duration_seconds(grace_period)
                self.assertIn("-sl=ldm=", " ".join(container["lifecycle"]["preStop"]["exec"]["command"]))
                self.assertLessEqual(drain + 10, pod["terminationGracePeriodSeconds"], "drain and a margin fit the grace")

    def test_the_stream_and_the_store_fit_the_volume_and_the_memory_limit(self):
        for overlay in ALL_OVERLAYS:
            _, statefulset, _, container, conf, config = self.parts(overlay)
            (claim,) = statefulset["spec"]["volumeClaimTemplates"]
            volume = size_bytes(claim["spec"]["resources"]["requests"]["storage"])
            with self.subTest(overlay=overlay):
                store = nats_setting(conf, "max_file_store")
                self.assertIsNotNone(store, "max_file_store bounds the server's file store")
                self.assertLessEqual(nats_size(store), volume * 0.9)
                self.assertLessEqual(int(config["STREAM_MAX_BYTES"]), nats_size(store) * 0.9)
                self.assertGreater(int(config["STREAM_MAX_AGE_DAYS"]), 0)
                env = {e["name"]: e.get("value") for e in container.get("env", [])}
                self.assertIn("GOMEMLIMIT", env, "the Go runtime knows its memory limit")
                limit = size_bytes(container["resources"]["limits"]["memory"])
                self.assertLess(size_bytes(env["GOMEMLIMIT"].removesuffix("B")), limit)

    def test_probes_and_services_follow_the_charts_practice(self):
        for overlay in ALL_OVERLAYS:
            objects, statefulset, _, container, _, config = self.parts(overlay)
            services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
            with self.subTest(overlay=overlay):
                self.assertEqual(container["readinessProbe"]["httpGet"]["path"], "/healthz?js-server-only=true")
                self.assertEqual(container["livenessProbe"]["httpGet"]["path"], "/healthz?js-enabled-only=true")
                self.assertEqual(container["startupProbe"]["httpGet"]["path"], "/healthz")
                headless = services[statefulset["spec"]["serviceName"]]
                self.assertEqual(headless["spec"]["clusterIP"], "None")
                self.assertTrue(headless["spec"]["publishNotReadyAddresses"])
                client_host = re.fullmatch(r"(?:nats|tls)://([\w-]+):4222", config["NATS_URL"]).group(1)
                client = services[client_host]
                self.assertNotEqual(client["spec"].get("clusterIP"), "None", "clients reach ready nodes only")
                self.assertFalse(client["spec"].get("publishNotReadyAddresses", False))


class DatabaseTls(unittest.TestCase):
    def test_every_prod_connection_to_a_database_is_tls_verified_against_its_ca(self):
        for overlay in ("prod", "prod-gateway", RELEASE):
            for deployment in of_kind(render(overlay), "Deployment"):
                pod = deployment["spec"]["template"]["spec"]
                (container,) = pod["containers"]
                env = {e["name"]: e for e in container.get("env", [])}
                if "DATABASE_URL" not in env:
                    continue
                name = deployment["metadata"]["name"]
                with self.subTest(overlay=overlay, deployment=name):
                    self.assertEqual(env["PGSSLMODE"]["value"], "verify-full")
                    ca = env["PGSSLROOTCERT"]["value"]
                    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
                    volumes = {v["name"]: v for v in pod["volumes"]}
                    volume = volumes[mounts[os.path.dirname(ca)]]
                    # CloudNativePG's CA of this service's cluster; its private key stays out.
                    self.assertEqual(volume["secret"]["secretName"], f"{name}-db-ca")
                    self.assertEqual(volume["secret"]["items"], [{"key": "ca.crt", "path": os.path.basename(ca)}])


class Rollouts(unittest.TestCase):
    HASHED = re.compile(r"-[a-z0-9]{10}$")

    def test_a_change_to_any_config_map_or_secret_a_pod_reads_rolls_the_pod(self):
        """Generated names carry a hash of their content, so a change renames the object
        and the pods that read it roll. Objects created outside the overlay (by kubectl
        or an operator) are named in docs/deploy.md with how to roll after a change."""
        for overlay in ALL_OVERLAYS:
            objects = render(overlay)
            rendered = {(o["kind"], o["metadata"]["name"]) for o in objects if o["kind"] in ("ConfigMap", "Secret")}
            for workload in workloads(objects):
                pod = workload["spec"]["template"]["spec"]
                refs = set()
                for container in pod["containers"] + pod.get("initContainers", []):
                    for variable in container.get("env", []):
                        source = variable.get("valueFrom", {})
                        if "configMapKeyRef" in source:
                            refs.add(("ConfigMap", source["configMapKeyRef"]["name"]))
                        if "secretKeyRef" in source:
                            refs.add(("Secret", source["secretKeyRef"]["name"]))
                    for source in container.get("envFrom", []):
                        if "configMapRef" in source:
                            refs.add(("ConfigMap", source["configMapRef"]["name"]))
                        if "secretRef" in source:
                            refs.add(("Secret", source["secretRef"]["name"]))
                for volume in pod.get("volumes", []):
                    if "configMap" in volume:
                        refs.add(("ConfigMap", volume["configMap"]["name"]))
                    if "secret" in volume:
                        refs.add(("Secret", volume["secret"]["secretName"]))
                for kind, name in refs & rendered:
                    with self.subTest(overlay=overlay, workload=workload["metadata"]["name"], reads=f"{kind}/{name}"):
                        self.assertRegex(name, self.HASHED)


class Workflows(unittest.TestCase):
    def workflows(self):
        for path in sorted(glob.glob(os.path.join(ROOT, ".github", "workflows", "*.yml"))):
            yield os.path.basename(path), yaml.safe_load(read(path))

    @staticmethod
    def deploys(job):
        if job.get("uses", "").endswith("deploy-service.yml"):
            return True
        text = json.dumps(job.get("steps", []))
        return any(word in text for word in ("kubectl apply", "kubectl set image", "rollout restart", "build-push-action"))

    def test_every_deploy_job_runs_only_after_the_tests_passed(self):
        seen = 0
        for name, workflow in self.workflows():
            on = workflow.get(True) or workflow.get("on")
            for job_name, job in workflow["jobs"].items():
                if not self.deploys(job) or on == {"workflow_call": on.get("workflow_call")}:
                    continue  # a reusable workflow is judged where it is called
                seen += 1
                with self.subTest(workflow=name, job=job_name):
                    # Triggered by the test workflow's completion on main, and only
                    # when it succeeded.
                    self.assertEqual(set(on), {"workflow_run"})
                    self.assertEqual(on["workflow_run"]["workflows"], ["test"])
                    self.assertEqual(on["workflow_run"]["types"], ["completed"])
                    self.assertEqual(on["workflow_run"]["branches"], ["main"])
                    conditions = " ".join(
                        str(workflow["jobs"][needed].get("if", ""))
                        for needed in [job_name] + list(job.get("needs", []) if isinstance(job.get("needs"), list) else [job.get("needs")])
                        if needed
                    )
                    self.assertIn("github.event.workflow_run.conclusion == 'success'", conditions)
        self.assertGreater(seen, 0)

    def test_every_workflow_states_its_permissions_and_lowercases_the_registry_owner(self):
        for name, workflow in self.workflows():
            with self.subTest(workflow=name):
                self.assertIn("permissions", workflow)
                text = read(os.path.join(ROOT, ".github", "workflows", name))
                self.assertNotIn("ghcr.io/${{ github.repository_owner }}", text, "owners may have capitals")


class Binaries(unittest.TestCase):
    GRACE = 5

    def start(self, name, env):
        binary = os.path.join(ROOT, "target", "debug", name)
        env = {"SHUTDOWN_GRACE_SECONDS": str(self.GRACE), "BIND_ADDRESS": "127.0.0.1", "PORT": "0", "OPS_PORT": "0", **env}
        return subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def test_every_binary_exits_zero_within_its_grace_on_sigterm(self):
        """SIGTERM as a kubelet sends it, one second after the start: the client and the
        stand-in are serving by then, the services still waiting for their database."""
        unreachable = {"DATABASE_URL": "postgres://nobody@127.0.0.1:9/none", "NATS_URL": "nats://127.0.0.1:9",
                       "JWT_KEY": "k" * 32, "STRIPE_KEY": "sk_test_x", "STRIPE_API_BASE": "http://127.0.0.1:9"}
        environments = {name: unreachable for name in DATABASES}
        environments["client"] = {"API_BASE_URL": "http://127.0.0.1:9", "STRIPE_API_BASE": "http://127.0.0.1:9"}
        environments["stripe-standin"] = {}
        for name, env in environments.items():
            with self.subTest(binary=name):
                process = self.start(name, env)
                time.sleep(1)
                if process.poll() is not None:
                    self.fail(f"{name} exited early: {process.stderr.read()}")
                started = time.monotonic()
                process.send_signal(signal.SIGTERM)
                try:
                    code = process.wait(timeout=self.GRACE + 2)
                except subprocess.TimeoutExpired:
                    process.kill()
                    self.fail(f"{name} still running {self.GRACE + 2} s after SIGTERM")
                self.assertEqual(code, 0, process.stderr.read())
                self.assertLess(time.monotonic() - started, self.GRACE)


if __name__ == "__main__":
    unittest.main()
