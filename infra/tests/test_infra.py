"""Offline checks of everything that deploys Ticketing to a cluster.

No cluster or Docker engine is needed: the kustomize overlays are rendered with
kubectl, core objects validated strictly against a current Kubernetes release's
schemas (kubernetes-validate), Gateway API and CloudNativePG objects against their
CRDs, skaffold.yaml against its schema, and the Dockerfiles linted with hadolint.
Consistency checks catch drift between the code, the manifests, the local stack and
the workflows. Run: make infra-tests.
"""

import functools
import glob
import json
import os
import re
import shutil
import subprocess
import unittest

import jsonschema
import kubernetes_validate
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
K8S = os.path.join(ROOT, "infra", "k8s")
SCHEMAS = os.path.join(ROOT, "infra", "schemas")
KUBERNETES_VERSION = "1.37.0"
OVERLAYS = ["dev", "prod", "prod-gateway"]
APPS = ["auth", "tickets", "orders", "payments", "expiration", "client"]
BIN = os.path.dirname(os.path.abspath(__import__("sys").executable))


def read(path):
    with open(path) as file:
        return file.read()


def tool(name):
    path = os.path.join(BIN, name)
    return path if os.path.exists(path) else shutil.which(name)


@functools.cache
def render(overlay):
    """The objects of an overlay, as `kubectl kustomize` renders them."""
    out = subprocess.run(
        [tool("kubectl"), "kustomize", os.path.join(K8S, "overlays", overlay)],
        check=True, capture_output=True, text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def workloads(objects):
    return [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]


def pod_labels(objects):
    """The labels of every pod an overlay makes (CloudNativePG labels its instances
    with cnpg.io/cluster)."""
    labels = [w["spec"]["template"]["metadata"]["labels"] for w in workloads(objects)]
    for cluster in of_kind(objects, "Cluster"):
        labels.append({"cnpg.io/cluster": cluster["metadata"]["name"], "cnpg.io/podRole": "instance"})
    return labels


def selects(selector, labels):
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        present = expression["key"] in labels
        value = labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


@functools.cache
def crd_schema(path, kind):
    crd = yaml.safe_load(read(os.path.join(SCHEMAS, path)))
    assert crd["spec"]["names"]["kind"] == kind
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    return crd["spec"]["group"] + "/" + version["name"], version["schema"]["openAPIV3Schema"]


def unknown_fields(value, schema, path="$"):
    """Fields a CRD schema does not know (the API server would prune them silently)."""
    problems = []
    if isinstance(value, dict) and schema.get("type") == "object":
        properties = schema.get("properties")
        if properties is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
            for key, item in value.items():
                if key in properties:
                    problems += unknown_fields(item, properties[key], f"{path}.{key}")
                elif not schema.get("additionalProperties") and path != "$":
                    problems.append(f"{path}.{key}")
                elif path == "$" and key not in ("apiVersion", "kind", "metadata"):
                    problems.append(f"{path}.{key}")
        elif isinstance(schema.get("additionalProperties"), dict):
            for key, item in value.items():
                problems += unknown_fields(item, schema["additionalProperties"], f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            problems += unknown_fields(item, schema["items"], f"{path}[{index}]")
    return problems


CRDS = {
    "Gateway": "gateway-api-v1.6.1/gateways.yaml",
    "HTTPRoute": "gateway-api-v1.6.1/httproutes.yaml",
    "Cluster": "cloudnative-pg-v1.30.0/clusters.yaml",
    "ScheduledBackup": "cloudnative-pg-v1.30.0/scheduledbackups.yaml",
}


class Manifests(unittest.TestCase):
    def test_every_overlay_renders(self):
        for overlay in OVERLAYS:
            with self.subTest(overlay=overlay):
                kinds = {o["kind"] for o in render(overlay)}
                self.assertTrue({"Deployment", "Service", "ConfigMap", "StatefulSet"} <= kinds, kinds)

    def test_core_objects_validate_strictly_against_kubernetes(self):
        for overlay in OVERLAYS:
            for obj in render(overlay):
                if obj["kind"] in CRDS:
                    continue
                with self.subTest(overlay=overlay, object=f'{obj["kind"]}/{obj["metadata"]["name"]}'):
                    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)

    def test_gateway_and_cloudnative_pg_objects_validate_against_their_crds(self):
        seen = set()
        for overlay in OVERLAYS:
            for obj in render(overlay):
                if obj["kind"] not in CRDS:
                    continue
                seen.add(obj["kind"])
                api_version, schema = crd_schema(CRDS[obj["kind"]], obj["kind"])
                with self.subTest(overlay=overlay, object=f'{obj["kind"]}/{obj["metadata"]["name"]}'):
                    self.assertEqual(obj["apiVersion"], api_version)
                    jsonschema.validate(obj, schema)
                    self.assertEqual(unknown_fields(obj, schema), [])
        self.assertEqual(seen, set(CRDS), "every CRD kind is used by some overlay")

    def test_every_container_has_probes_limits_and_a_restricted_security_context(self):
        for overlay in OVERLAYS:
            for workload in workloads(render(overlay)):
                pod = workload["spec"]["template"]["spec"]
                name = f'{workload["kind"]}/{workload["metadata"]["name"]}'
                with self.subTest(overlay=overlay, workload=name):
                    self.assertTrue(pod["securityContext"]["runAsNonRoot"])
                    self.assertEqual(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault")
                    for container in pod["containers"]:
                        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                            self.assertIn(probe, container, f"{container['name']} {probe}")
                        for bound in ("requests", "limits"):
                            self.assertEqual(set(container["resources"][bound]), {"cpu", "memory"})
                        security = container["securityContext"]
                        self.assertIs(security["allowPrivilegeEscalation"], False)
                        self.assertIs(security["readOnlyRootFilesystem"], True)
                        self.assertEqual(security["capabilities"]["drop"], ["ALL"])

    def test_services_probe_readyz_and_healthz_and_stop_gracefully(self):
        for overlay in OVERLAYS:
            for deployment in of_kind(render(overlay), "Deployment"):
                pod = deployment["spec"]["template"]["spec"]
                container = pod["containers"][0]
                with self.subTest(overlay=overlay, deployment=deployment["metadata"]["name"]):
                    self.assertEqual(container["readinessProbe"]["httpGet"]["path"], "/readyz")
                    self.assertEqual(container["startupProbe"]["httpGet"]["path"], "/readyz")
                    self.assertEqual(container["livenessProbe"]["httpGet"]["path"], "/healthz")
                    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
                    env = {e["name"]: e.get("value") for e in container.get("env", [])}
                    grace = int(env.get("SHUTDOWN_GRACE_SECONDS", 20))
                    self.assertGreater(pod["terminationGracePeriodSeconds"], grace + pause)

    def test_each_deployment_gives_its_binary_a_complete_configuration(self):
        """The binary's own loader (`<service> env --check`) judges the environment a
        Deployment gives it: nothing is checked against a hand-kept list."""
        for overlay in OVERLAYS:
            objects = render(overlay)
            config_maps = {c["metadata"]["name"]: c.get("data", {}) for c in of_kind(objects, "ConfigMap")}
            secrets = {s["metadata"]["name"]: s for s in of_kind(objects, "Secret")}
            for deployment in of_kind(objects, "Deployment"):
                container = deployment["spec"]["template"]["spec"]["containers"][0]
                name = container["name"]
                if name == "stripe-standin":
                    continue  # a dev tool with settings of its own (PORT, BIND_ADDRESS, STRIPE_KEY)
                env = {}
                for variable in container.get("env", []):
                    source = variable.get("valueFrom", {})
                    if "value" in variable:
                        env[variable["name"]] = variable["value"]
                    elif "configMapKeyRef" in source:
                        ref = source["configMapKeyRef"]
                        data = config_maps.get(ref["name"], {})
                        if ref["key"] in data:
                            env[variable["name"]] = data[ref["key"]]
                        else:
                            self.assertTrue(ref.get("optional"), f"{overlay} {name}: {ref} is missing")
                    elif "secretKeyRef" in source:
                        ref = source["secretKeyRef"]
                        if ref["name"] in secrets:
                            self.assertIn(ref["key"], secrets[ref["name"]]["data"], f"{overlay} {name}: {ref}")
                        else:
                            # Created outside the overlay: by kubectl or by CloudNativePG.
                            documented = {"jwt-secret", "stripe-secret", f"{name}-db-app"}
                            self.assertIn(ref["name"], documented, f"{overlay} {name}")
                        env[variable["name"]] = "postgres://user:password@db/name" if ref["key"] == "uri" else "secret"
                binary = os.path.join(ROOT, "target", "debug", name)
                with self.subTest(overlay=overlay, deployment=name):
                    result = subprocess.run([binary, "env", "--check"], env=env, capture_output=True, text=True)
                    self.assertEqual(result.returncode, 0, result.stderr)


class Routing(unittest.TestCase):
    def ingress_routes(self, overlay):
        (ingress,) = of_kind(render(overlay), "Ingress")
        self.assertEqual(ingress["spec"]["ingressClassName"], "nginx")
        (rule,) = ingress["spec"]["rules"]
        return rule["host"], {
            p["path"]: p["backend"]["service"]["name"] for p in rule["http"]["paths"] if p["pathType"] == "Prefix"
        }, ingress

    def test_the_ingress_the_httproute_and_the_local_nginx_route_alike(self):
        _, ingress, _ = self.ingress_routes("dev")
        (route,) = of_kind(render("prod-gateway"), "HTTPRoute")
        http_route = {}
        for rule in route["spec"]["rules"]:
            (match,) = rule["matches"]
            self.assertEqual(match["path"]["type"], "PathPrefix")
            (backend,) = rule["backendRefs"]
            http_route[match["path"]["value"]] = backend["name"]
        config = subprocess.run(
            [os.path.join(ROOT, "scripts", "stack.sh"), "nginx-config"],
            check=True, capture_output=True, text=True,
        ).stdout
        nginx = dict(re.findall(r"location (/\S*) \{ proxy_pass http://127\.0\.0\.1:\d+; \}  # (\S+)", config))
        self.assertEqual(ingress, http_route)
        self.assertEqual(ingress, nginx)
        self.assertEqual(ingress["/"], "client")
        services = {s["metadata"]["name"] for s in of_kind(render("dev"), "Service")}
        self.assertTrue(set(ingress.values()) <= services)

    def test_hosts_plain_in_dev_and_tls_in_prod(self):
        host, _, _ = self.ingress_routes("dev")
        self.assertEqual(host, "ticketing.dev")
        host, _, ingress = self.ingress_routes("prod")
        self.assertEqual(ingress["spec"]["tls"][0]["hosts"], [host])
        (gateway,) = of_kind(render("prod-gateway"), "Gateway")
        (listener,) = gateway["spec"]["listeners"]
        self.assertEqual((listener["protocol"], listener["hostname"]), ("HTTPS", host))
        self.assertEqual(of_kind(render("prod-gateway"), "Ingress"), [])


class Prod(unittest.TestCase):
    def test_replicas_budgets_autoscalers_and_spread(self):
        objects = render("prod")
        budgets = {p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for p in of_kind(objects, "PodDisruptionBudget")}
        scaled = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objects, "HorizontalPodAutoscaler")}
        for deployment in of_kind(objects, "Deployment"):
            name = deployment["metadata"]["name"]
            with self.subTest(deployment=name):
                self.assertGreaterEqual(deployment["spec"]["replicas"], 2)
                self.assertIn(name, budgets)
                if name != "expiration":
                    self.assertIn(name, scaled)
                keys = {c["topologyKey"] for c in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]}
                self.assertEqual(keys, {"topology.kubernetes.io/zone", "kubernetes.io/hostname"})

    def test_a_database_cluster_with_backups_per_service_and_a_nats_cluster(self):
        objects = render("prod")
        clusters = {c["metadata"]["name"]: c for c in of_kind(objects, "Cluster")}
        self.assertEqual(set(clusters), {f"{n}-db" for n in APPS if n != "client"})
        backed_up = {b["spec"]["cluster"]["name"] for b in of_kind(objects, "ScheduledBackup")}
        for name, cluster in clusters.items():
            self.assertEqual(cluster["spec"]["instances"], 3)
            self.assertIn("barmanObjectStore", cluster["spec"]["backup"])
            self.assertIn(name, backed_up)
        (nats,) = [s for s in of_kind(objects, "StatefulSet") if s["metadata"]["name"] == "nats"]
        self.assertEqual(nats["spec"]["replicas"], 3)
        (config,) = [c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"] == "ticketing-config"]
        self.assertEqual(config["data"]["STREAM_REPLICAS"], "3")
        (nats_config,) = [c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"] == "nats-config"]
        self.assertIn("sync_interval: always", nats_config["data"]["nats.conf"])
        self.assertIn("nats-2.nats:6222", nats_config["data"]["nats.conf"])

    def test_no_secret_values_in_git_for_prod_and_dev_only_ones_in_dev(self):
        self.assertEqual(of_kind(render("prod"), "Secret"), [])
        dev = {s["metadata"]["name"] for s in of_kind(render("dev"), "Secret")}
        self.assertTrue({"jwt-secret", "stripe-secret"} <= dev)

    def test_network_policies_select_pods_that_exist(self):
        for overlay in ("prod", "prod-gateway"):
            objects = render(overlay)
            pods = pod_labels(objects)
            for policy in of_kind(objects, "NetworkPolicy"):
                name = policy["metadata"]["name"]
                with self.subTest(overlay=overlay, policy=name):
                    self.assertTrue(any(selects(policy["spec"]["podSelector"], p) for p in pods), "podSelector")
                    rules = policy["spec"].get("ingress", []) + policy["spec"].get("egress", [])
                    for rule in rules:
                        for peer in rule.get("from", []) + rule.get("to", []):
                            if "podSelector" in peer and "namespaceSelector" not in peer:
                                self.assertTrue(any(selects(peer["podSelector"], p) for p in pods), peer)

    def test_each_service_reaches_only_its_database_and_nats(self):
        objects = render("prod")
        policies = {p["metadata"]["name"]: p for p in of_kind(objects, "NetworkPolicy")}
        for name in APPS:
            egress = policies[f"{name}-egress"]["spec"]["egress"]
            databases = [
                peer["podSelector"]["matchLabels"]["cnpg.io/cluster"]
                for rule in egress for peer in rule["to"]
                if "cnpg.io/cluster" in peer.get("podSelector", {}).get("matchLabels", {})
            ]
            self.assertEqual(databases, [] if name == "client" else [f"{name}-db"], name)


class Images(unittest.TestCase):
    def test_skaffold_yaml_validates_and_its_artifacts_exist(self):
        schema = json.loads(read(os.path.join(SCHEMAS, "skaffold-v4beta14.json")))
        config = yaml.safe_load(read(os.path.join(ROOT, "skaffold.yaml")))
        jsonschema.validate(config, schema)
        self.assertEqual(config["apiVersion"], "skaffold/v4beta14")
        builds = [("dev", config["build"]["artifacts"])]
        for profile in config["profiles"]:
            if "artifacts" in profile.get("build", {}):
                overlay = profile.get("manifests", {}).get("kustomize", {}).get("paths", [None])[0]
                builds.append((overlay.rsplit("/", 1)[-1] if overlay else "dev", profile["build"]["artifacts"]))
        for overlay, artifacts in builds:
            built = set()
            for artifact in artifacts:
                context = os.path.join(ROOT, artifact["context"])
                self.assertTrue(os.path.isdir(context))
                self.assertTrue(os.path.isfile(os.path.join(context, artifact["docker"]["dockerfile"])))
                built.add(artifact["image"])
            used = {
                c["image"].split(":")[0].rsplit("/", 1)[-1]
                for w in of_kind(render(overlay), "Deployment")
                for c in w["spec"]["template"]["spec"]["containers"]
            }
            with self.subTest(overlay=overlay):
                self.assertEqual(built, used, "every image built is deployed and every deployed one built")
        self.assertEqual(config["manifests"]["kustomize"]["paths"], ["infra/k8s/overlays/dev"])

    def test_every_dockerfile_passes_hadolint(self):
        dockerfiles = sorted(glob.glob(os.path.join(ROOT, "*", "Dockerfile")))
        self.assertEqual(len(dockerfiles), 7)
        for dockerfile in dockerfiles:
            with self.subTest(dockerfile=os.path.relpath(dockerfile, ROOT)):
                result = subprocess.run([tool("hadolint"), dockerfile], capture_output=True, text=True)
                self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
                text = read(dockerfile)
                self.assertIn("SQLX_OFFLINE=true", text)
                self.assertIn("cargo chef cook", text)
                self.assertRegex(text, r"USER 65532")

    def test_the_build_context_leaves_out_build_output_and_the_local_stack(self):
        ignored = read(os.path.join(ROOT, ".dockerignore")).split()
        self.assertIn("target", ignored)
        self.assertIn(".stack", ignored)


class Workflows(unittest.TestCase):
    def test_workflows_parse_and_reference_what_exists(self):
        makefile = read(os.path.join(ROOT, "Makefile"))
        targets = set(re.findall(r"^([A-Za-z][\w-]*):", makefile, re.M))
        workflows = glob.glob(os.path.join(ROOT, ".github", "workflows", "*.yml"))
        self.assertGreater(len(workflows), 3)
        services = set()
        for path in workflows:
            workflow = yaml.safe_load(read(path))
            name = os.path.basename(path)
            with self.subTest(workflow=name):
                self.assertIn("jobs", workflow)
                on = workflow.get(True) or workflow.get("on")  # YAML 1.1 reads `on` as true
                self.assertTrue(on)
                for filtered in (on.get("push") or {}).get("paths", []) if isinstance(on, dict) else []:
                    self.assertTrue(glob.glob(os.path.join(ROOT, filtered)), f"{name}: {filtered}")
                for job in workflow["jobs"].values():
                    uses = job.get("uses", "")
                    if uses.startswith("./"):
                        self.assertTrue(os.path.isfile(os.path.join(ROOT, uses)), uses)
                        services.add(job["with"]["service"])
                    for step in job.get("steps", []):
                        for target in re.findall(r"\bmake ([\w-]+)", step.get("run", "")):
                            self.assertIn(target, targets, f"{name}: make {target}")
                        for script in re.findall(r"(?:bash )?(\.ci/run|scripts/[\w.-]+)", step.get("run", "")):
                            self.assertTrue(os.path.isfile(os.path.join(ROOT, script)), script)
        self.assertEqual(services, set(APPS), "a deploy workflow per service")
        for service in services:
            self.assertTrue(os.path.isfile(os.path.join(ROOT, service, "Dockerfile")))


BUS_SERVICES = ["tickets", "orders", "payments", "expiration"]
BINARIES = APPS + ["stripe-standin", "loadgen"]


def run_binary(name, *args):
    binary = os.path.join(ROOT, "target", "debug", name)
    return subprocess.run([binary, *args], env={}, capture_output=True, text=True, timeout=30)


class Binaries(unittest.TestCase):
    """Every binary's command line: `--help` on it and its commands, and mistakes
    refused with exit code 2 and a message that names them."""

    def assert_refused(self, name, args, named):
        result = run_binary(name, *args)
        self.assertEqual(result.returncode, 2, f"{name} {' '.join(args)}: {result.stderr}")
        self.assertIn(named, result.stderr, f"{name} {' '.join(args)}")

    def test_every_binary_answers_help_and_refuses_unknown_options(self):
        for name in BINARIES:
            with self.subTest(binary=name):
                result = run_binary(name, "--help")
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertIn(f"Usage: {name}", result.stdout)
                self.assert_refused(name, ["--no-such-option"], "--no-such-option")

    def test_each_command_answers_help_and_only_what_the_binary_has_is_offered(self):
        for name in APPS:
            with self.subTest(binary=name):
                self.assertEqual(run_binary(name, "env", "--help").returncode, 0)
                self.assert_refused(name, ["env", "--jsno"], "--jsno")
                self.assert_refused(name, ["serve", "now"], "now")
                if name in BUS_SERVICES:
                    help = run_binary(name, "parked", "--help")
                    self.assertEqual(help.returncode, 0, help.stderr)
                    self.assertIn("redrive", help.stdout)
                    self.assert_refused(name, ["parked", "redrive"], "--all")
                    self.assert_refused(name, ["parked", "redrive", "forty-two"], "forty-two")
                else:
                    self.assert_refused(name, ["parked", "list"], "parked")
        self.assert_refused("loadgen", ["journeys", "--durtion", "5m"], "--durtion")
        self.assert_refused("loadgen", ["chaos", "--rate", "fast"], "--rate")
        self.assert_refused("loadgen", ["stampede"], "stampede")
        self.assert_refused("stripe-standin", ["--port", "eighty"], "--port")


if __name__ == "__main__":
    unittest.main()
