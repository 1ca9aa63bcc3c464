"""Offline checks of everything that deploys Ticketing to a cluster.

No cluster or Docker engine is needed: the kustomize overlays are rendered with
kubectl, core objects validated strictly against a current Kubernetes release's
schemas (kubernetes-validate), Gateway API and CloudNativePG objects against their
CRDs, skaffold.yaml against its schema, and the Dockerfiles linted with hadolint.
Consistency checks catch drift between the code, the manifests, the local stack and
the workflows. Run: make infra-tests.
"""

import base64
import glob
import json
import os
import re
import subprocess
import unittest

import jsonschema
import kubernetes_validate
import yaml

from traffic import Cluster, selects
from rendered import (
    APPS, CRDS, KUBERNETES_VERSION, OVERLAYS, ROOT, SCHEMAS, crd_schema, of_kind,
    read, render, tool, unknown_fields, workloads,
)

# Kinds no schema here describes; checked by hand below.
WITHOUT_SCHEMA = {"ObjectStore", "Certificate", "Issuer"}


class Manifests(unittest.TestCase):
    def test_every_overlay_renders(self):
        for overlay in OVERLAYS:
            with self.subTest(overlay=overlay):
                kinds = {o["kind"] for o in render(overlay)}
                self.assertTrue({"Deployment", "Service", "ConfigMap", "StatefulSet"} <= kinds, kinds)

    def test_core_objects_validate_strictly_against_kubernetes(self):
        for overlay in OVERLAYS:
            for obj in render(overlay):
                if obj["kind"] in CRDS or obj["kind"] in WITHOUT_SCHEMA:
                    continue
                with self.subTest(overlay=overlay, object=f'{obj["kind"]}/{obj["metadata"]["name"]}'):
                    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)

    def test_gateway_cloudnative_pg_and_prometheus_operator_objects_validate_against_their_crds(self):
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

    def test_objects_without_a_schema_here_have_the_shape_their_docs_give(self):
        """The Barman Cloud plugin's ObjectStore has no CRD in infra/schemas: its shape is
        checked against the plugin's documentation by hand."""
        stores = of_kind(render("prod"), "ObjectStore")
        self.assertEqual(len(stores), len(APPS) - 1)
        for store in stores:
            with self.subTest(store=store["metadata"]["name"]):
                self.assertEqual(store["apiVersion"], "barmancloud.cnpg.io/v1")
                self.assertEqual(set(store["spec"]), {"retentionPolicy", "configuration"})
                self.assertRegex(store["spec"]["retentionPolicy"], r"^\d+[dwm]$")
                configuration = store["spec"]["configuration"]
                self.assertTrue(configuration["destinationPath"].startswith("s3://"))
                self.assertEqual(set(configuration["s3Credentials"]), {"accessKeyId", "secretAccessKey"})

    def test_the_bus_is_tls_in_prod_with_a_certificate_cert_manager_issues(self):
        """cert-manager's Certificate and Issuer have no CRD in infra/schemas: their shape
        is checked here by hand. The NATS servers' certificate covers every name clients
        and routes use; every service on the bus connects with tls:// and checks the
        server against the bus CA; the servers require TLS of clients and of routes."""
        for overlay in ("prod", "prod-gateway", "release"):
            objects = render(overlay)
            certificates = {c["metadata"]["name"]: c for c in of_kind(objects, "Certificate")}
            issuers = {i["metadata"]["name"]: i for i in of_kind(objects, "Issuer")}
            for obj in list(certificates.values()) + list(issuers.values()):
                self.assertEqual(obj["apiVersion"], "cert-manager.io/v1")
            nats = certificates["nats-tls"]["spec"]
            self.assertEqual(nats["secretName"], "nats-tls")
            self.assertIn(nats["issuerRef"]["name"], issuers)
            self.assertTrue(certificates["ticketing-bus-ca"]["spec"]["isCA"])
            self.assertEqual(issuers["ticketing-bus-ca"]["spec"]["ca"]["secretName"], "ticketing-bus-ca")
            for name in ["nats", "nats-headless", "*.nats-headless"]:
                self.assertIn(name, nats["dnsNames"])
            (config,) = [c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"].startswith("ticketing-config")]
            self.assertTrue(config["data"]["NATS_URL"].startswith("tls://"))
            (nats_config,) = [c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"].startswith("nats-config")]
            conf = nats_config["data"]["nats.conf"]
            self.assertIn("cert_file: /etc/nats-tls/tls.crt", conf)
            self.assertIn("tls://nats-0.nats-headless:6222", conf)
            self.assertIn("include ./nats-authorization.conf", conf)
            self.assertIn("authorization {", nats_config["data"]["nats-authorization.conf"])
            for deployment in of_kind(objects, "Deployment"):
                name = deployment["metadata"]["name"]
                if name not in ("auth", "tickets", "orders", "payments", "expiration"):
                    continue
                (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
                env = {e["name"]: e for e in container["env"]}
                self.assertEqual(env["NATS_CA_FILE"]["value"], "/etc/ticketing/bus-ca/ca.crt", name)
                self.assertEqual(env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"],
                                 {"name": "nats-credentials", "key": name}, name)
                volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
                self.assertEqual(volumes["bus-ca"]["secret"]["secretName"], "nats-tls", name)

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
                if deployment["metadata"]["name"] == "jaeger":
                    continue  # the dev overlay's trace UI, probed on its own health port
                pod = deployment["spec"]["template"]["spec"]
                container = pod["containers"][0]
                with self.subTest(overlay=overlay, deployment=deployment["metadata"]["name"]):
                    for probe, path in (("readinessProbe", "/readyz"), ("startupProbe", "/readyz"), ("livenessProbe", "/healthz")):
                        self.assertEqual(container[probe]["httpGet"]["path"], path)
                        expected = "http" if deployment["metadata"]["name"] == "stripe-standin" else "ops"
                        self.assertEqual(container[probe]["httpGet"]["port"], expected, "the ops port")
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
                if name in ("stripe-standin", "jaeger"):
                    continue  # dev tools with settings of their own
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
                        if ref.get("optional") and ref["name"] not in secrets:
                            continue  # an optional key of a Secret made elsewhere: assume it absent
                        if ref["name"] in secrets:
                            if ref.get("optional") and ref["key"] not in secrets[ref["name"]]["data"]:
                                continue
                            self.assertIn(ref["key"], secrets[ref["name"]]["data"], f"{overlay} {name}: {ref}")
                        else:
                            # Created outside the overlay: by kubectl or by CloudNativePG.
                            documented = {"jwt-secret", "stripe-secret", "nats-credentials", f"{name}-db-app"}
                            self.assertIn(ref["name"], documented, f"{overlay} {name}")
                        if ref["name"] in secrets:
                            # The overlay's own value (the dev key, with its dev-only mark).
                            env[variable["name"]] = base64.b64decode(
                                secrets[ref["name"]]["data"][ref["key"]]).decode()
                        elif ref["key"] == "uri":
                            env[variable["name"]] = "postgres://user:password@db/name"
                        else:
                            # As an operator would make one (docs/deploy.md).
                            env[variable["name"]] = "made-outside-the-overlay-by-openssl-rand-48"
                binary = os.path.join(ROOT, "target", "debug", name)
                with self.subTest(overlay=overlay, deployment=name):
                    result = subprocess.run([binary, "env", "--check"], env=env, capture_output=True, text=True)
                    self.assertEqual(result.returncode, 0, result.stderr)


class Traces(unittest.TestCase):
    def test_the_dev_overlay_sends_every_span_to_its_jaeger_which_skaffold_forwards(self):
        objects = render("dev")
        (jaeger,) = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == "jaeger"]
        ports = {p["name"]: p["containerPort"] for p in jaeger["spec"]["template"]["spec"]["containers"][0]["ports"]}
        self.assertEqual((ports["otlp-http"], ports["ui"]), (4318, 16686))
        (config,) = [c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"].startswith("ticketing-config")]
        self.assertEqual(config["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://jaeger:4318")
        skaffold = yaml.safe_load(read(os.path.join(ROOT, "skaffold.yaml")))
        self.assertIn({"resourceType": "service", "resourceName": "jaeger", "namespace": "ticketing",
                       "port": 16686, "localPort": 16686}, skaffold["portForward"])

    def test_every_service_reads_the_otel_settings_from_the_config_and_prod_samples_a_tenth(self):
        for overlay in OVERLAYS:
            objects = render(overlay)
            for deployment in of_kind(objects, "Deployment"):
                if deployment["metadata"]["name"] not in APPS:
                    continue
                env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
                for key in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"):
                    with self.subTest(overlay=overlay, deployment=deployment["metadata"]["name"], key=key):
                        ref = env[key]["valueFrom"]["configMapKeyRef"]
                        self.assertTrue(ref["name"].startswith("ticketing-config"))
                        self.assertIs(ref["optional"], True)
        (config,) = [c for c in of_kind(render("prod"), "ConfigMap") if c["metadata"]["name"].startswith("ticketing-config")]
        self.assertEqual((config["data"]["OTEL_TRACES_SAMPLER"], config["data"]["OTEL_TRACES_SAMPLER_ARG"]),
                         ("parentbased_traceidratio", "0.1"))
        self.assertEqual(config["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"],
                         "http://opentelemetry-collector.monitoring:4318")


class Routing(unittest.TestCase):
    def ingress_routes(self, overlay):
        (ingress,) = [i for i in of_kind(render(overlay), "Ingress") if i["metadata"]["name"] == "ticketing"]
        self.assertEqual(ingress["spec"]["ingressClassName"], "nginx")
        (rule,) = ingress["spec"]["rules"]
        return rule.get("host"), {
            p["path"]: p["backend"]["service"]["name"] for p in rule["http"]["paths"] if p["pathType"] == "Prefix"
        }, ingress

    def test_the_ingress_the_httproute_and_the_local_nginx_route_alike(self):
        _, ingress, _ = self.ingress_routes("dev")
        (route,) = [r for r in of_kind(render("prod-gateway"), "HTTPRoute") if r["metadata"]["name"] == "ticketing"]
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

    def test_sign_in_and_sign_up_are_rate_limited_at_the_ingress_as_locally(self):
        """ingress-nginx limits sign-in and sign-up per client address as make up's
        nginx does (5 a second, bursts of 10), on an Ingress of their own that routes
        them to auth like the main one, for the same host and TLS in prod."""
        config = subprocess.run(
            [os.path.join(ROOT, "scripts", "stack.sh"), "nginx-config"],
            check=True, capture_output=True, text=True,
        ).stdout
        self.assertIn("rate=5r/s", config)
        self.assertIn("burst=10", config)
        for overlay in ("dev", "prod"):
            ingresses = {i["metadata"]["name"]: i for i in of_kind(render(overlay), "Ingress")}
            limited = ingresses["ticketing-sign-in"]
            annotations = limited["metadata"]["annotations"]
            self.assertEqual(annotations["nginx.ingress.kubernetes.io/limit-rps"], "5")
            self.assertEqual(annotations["nginx.ingress.kubernetes.io/limit-burst-multiplier"], "2")
            (rule,) = limited["spec"]["rules"]
            paths = {(p["path"], p["pathType"], p["backend"]["service"]["name"]) for p in rule["http"]["paths"]}
            self.assertEqual(paths, {("/api/users/signin", "Exact", "auth"), ("/api/users/signup", "Exact", "auth")})
            main = ingresses["ticketing"]
            self.assertEqual(rule.get("host"), main["spec"]["rules"][0].get("host"), overlay)
            self.assertEqual(limited["spec"].get("tls"), main["spec"].get("tls"), overlay)

    def test_any_host_on_plain_http_in_dev_and_tls_with_a_redirect_in_prod(self):
        """The dev loop answers whatever host the browser sends (localhost through
        skaffold's port-forward; a .dev host would be forced to HTTPS by its HSTS
        preload); prod names its host, terminates TLS and redirects plain HTTP."""
        host, _, _ = self.ingress_routes("dev")
        self.assertIsNone(host)
        host, _, ingress = self.ingress_routes("prod")
        self.assertEqual(ingress["spec"]["tls"][0]["hosts"], [host])
        self.assertEqual(ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/ssl-redirect"], "true")
        objects = render("prod-gateway")
        (gateway,) = of_kind(objects, "Gateway")
        listeners = {l["name"]: l for l in gateway["spec"]["listeners"]}
        self.assertEqual((listeners["https"]["protocol"], listeners["https"]["hostname"]), ("HTTPS", host))
        self.assertEqual((listeners["http"]["protocol"], listeners["http"]["port"]), ("HTTP", 80), "HTTP-01 needs port 80")
        routes = {r["metadata"]["name"]: r for r in of_kind(objects, "HTTPRoute")}
        self.assertEqual(routes["ticketing"]["spec"]["parentRefs"], [{"name": "ticketing", "sectionName": "https"}])
        redirect = routes["ticketing-redirect"]
        self.assertEqual(redirect["spec"]["parentRefs"], [{"name": "ticketing", "sectionName": "http"}])
        (rule,) = redirect["spec"]["rules"]
        self.assertEqual(rule["filters"][0]["requestRedirect"]["scheme"], "https")
        self.assertEqual(of_kind(objects, "Ingress"), [])


class Prod(unittest.TestCase):
    def test_replicas_budgets_autoscalers_and_spread(self):
        objects = render("prod")
        budgets = {p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for p in of_kind(objects, "PodDisruptionBudget")}
        scaled = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objects, "HorizontalPodAutoscaler")}
        minimum = {h["spec"]["scaleTargetRef"]["name"]: h["spec"]["minReplicas"] for h in of_kind(objects, "HorizontalPodAutoscaler")}
        for deployment in of_kind(objects, "Deployment"):
            name = deployment["metadata"]["name"]
            with self.subTest(deployment=name):
                self.assertGreaterEqual(minimum.get(name, deployment["spec"].get("replicas", 1)), 2)
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
        stores = {s["metadata"]["name"] for s in of_kind(objects, "ObjectStore")}
        for name, cluster in clusters.items():
            with self.subTest(cluster=name):
                spec = cluster["spec"]
                self.assertEqual(spec["instances"], 3)
                # No committed write lost in a failover: a standby confirms every commit.
                self.assertEqual(spec["postgresql"]["synchronous"], {"method": "any", "number": 1, "dataDurability": "required"})
                # A maintained image: the official catalog's current minor, not a deprecated rolling tag.
                self.assertNotIn("imageName", spec)
                self.assertEqual(spec["imageCatalogRef"]["name"], "postgresql-standard-trixie")
                # Backups through the Barman Cloud plugin (the built-in path goes after 1.31).
                self.assertNotIn("backup", spec)
                (plugin,) = spec["plugins"]
                self.assertEqual(plugin["name"], "barman-cloud.cloudnative-pg.io")
                self.assertTrue(plugin["isWALArchiver"])
                self.assertIn(plugin["parameters"]["barmanObjectName"], stores)
                self.assertIn(name, backed_up)
        for backup in of_kind(objects, "ScheduledBackup"):
            self.assertEqual((backup["spec"]["method"], backup["spec"]["pluginConfiguration"]["name"]), ("plugin", "barman-cloud.cloudnative-pg.io"))
        (nats,) = [s for s in of_kind(objects, "StatefulSet") if s["metadata"]["name"] == "nats"]
        self.assertEqual(nats["spec"]["replicas"], 3)
        (config,) = [c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"].startswith("ticketing-config")]
        self.assertEqual(config["data"]["STREAM_REPLICAS"], "3")
        (nats_config,) = [c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"].startswith("nats-config")]
        self.assertIn("sync_interval: always", nats_config["data"]["nats.conf"])
        self.assertIn("nats-2.nats-headless:6222", nats_config["data"]["nats.conf"])

    def test_no_secret_values_in_git_for_prod_and_dev_only_ones_in_dev(self):
        self.assertEqual(of_kind(render("prod"), "Secret"), [])
        dev = {s["metadata"]["name"].rsplit("-", 1)[0] for s in of_kind(render("dev"), "Secret")}
        self.assertTrue({"jwt-secret", "stripe-secret"} <= dev)

    def test_strict_transport_security_wherever_tls_terminates(self):
        """Browsers are told to come back over HTTPS only: a Gateway sends HSTS only
        when each HTTPS route sets it; ingress-nginx sends it for every TLS host by
        default (its `hsts` setting), so the Ingress must terminate TLS and redirect."""
        (route,) = [r for r in of_kind(render("prod-gateway"), "HTTPRoute")
                    if r["spec"]["parentRefs"][0].get("sectionName") == "https"]
        for rule in route["spec"]["rules"]:
            headers = [h for f in rule.get("filters", []) if f["type"] == "ResponseHeaderModifier"
                       for h in f["responseHeaderModifier"].get("set", [])]
            self.assertIn({"name": "Strict-Transport-Security",
                           "value": "max-age=31536000; includeSubDomains"}, headers, rule["matches"])
        (ingress,) = [i for i in of_kind(render("prod"), "Ingress") if i["metadata"]["name"] == "ticketing"]
        self.assertTrue(ingress["spec"].get("tls"))
        self.assertEqual(ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/ssl-redirect"], "true")

    def test_the_dev_jwt_key_is_marked_dev_only_and_dev_alone_turns_secure_cookies_off(self):
        """auth refuses a `dev-only-` key with COOKIE_SECURE on (kit::config): the dev
        overlay's key must carry the mark and be long enough to start with at all, and
        only the dev overlay may turn Secure cookies off."""
        (jwt,) = [s for s in of_kind(render("dev"), "Secret")
                  if s["metadata"]["name"].startswith("jwt-secret")]
        key = base64.b64decode(jwt["data"]["JWT_KEY"]).decode()
        self.assertTrue(key.startswith("dev-only-"), "the dev key is marked dev-only")
        self.assertGreaterEqual(len(key.encode()), 32, "JWT_KEY is at least 32 bytes")
        for overlay, secure in (("dev", "false"), ("prod", "true"), ("prod-gateway", "true")):
            (config,) = [c for c in of_kind(render(overlay), "ConfigMap")
                         if c["metadata"]["name"].startswith("ticketing-config")]
            self.assertEqual(config["data"]["COOKIE_SECURE"], secure, overlay)

    def test_network_policies_select_pods_that_exist(self):
        for overlay in ("prod", "prod-gateway"):
            objects = render(overlay)
            cluster = Cluster(objects, gateway=overlay == "prod-gateway")
            pods = [e.labels for e in cluster.endpoints.values() if e.namespace == "ticketing"]
            for policy in of_kind(objects, "NetworkPolicy"):
                name = policy["metadata"]["name"]
                with self.subTest(overlay=overlay, policy=name):
                    self.assertTrue(any(selects(policy["spec"]["podSelector"], p) for p in pods), "podSelector")
                    rules = policy["spec"].get("ingress", []) + policy["spec"].get("egress", [])
                    for rule in rules:
                        for peer in rule.get("from", []) + rule.get("to", []):
                            if "podSelector" in peer and "namespaceSelector" not in peer:
                                self.assertTrue(any(selects(peer["podSelector"], p) for p in pods), peer)


class Images(unittest.TestCase):
    def test_skaffold_yaml_validates_and_every_artifact_is_a_dockerfile_target(self):
        schema = json.loads(read(os.path.join(SCHEMAS, "skaffold-v4beta14.json")))
        config = yaml.safe_load(read(os.path.join(ROOT, "skaffold.yaml")))
        jsonschema.validate(config, schema)
        self.assertEqual(config["apiVersion"], "skaffold/v4beta14")
        targets = set(re.findall(r"^FROM \S+ AS (\S+)", read(os.path.join(ROOT, "Dockerfile")), re.M))
        artifacts = list(config["build"]["artifacts"])
        for profile in config["profiles"]:
            artifacts += profile.get("build", {}).get("artifacts", [])
        for artifact in artifacts:
            with self.subTest(artifact=artifact["image"]):
                self.assertTrue(os.path.isdir(os.path.join(ROOT, artifact["context"])))
                if "docker" in artifact:
                    self.assertEqual(artifact["docker"]["dockerfile"], "Dockerfile")
                    target = artifact["docker"]["target"]
                else:
                    script, target, _ = artifact["custom"]["buildCommand"].split()
                    self.assertTrue(os.access(os.path.join(ROOT, script), os.X_OK), script)
                self.assertIn(target, targets)
                self.assertEqual(artifact["image"], f"ticketing-{target}")
        self.assertEqual(config["manifests"]["kustomize"]["paths"], ["infra/k8s/overlays/dev"])

    def test_the_dockerfile_passes_hadolint(self):
        dockerfile = os.path.join(ROOT, "Dockerfile")
        result = subprocess.run([tool("hadolint"), dockerfile], capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        text = read(dockerfile)
        self.assertIn("SQLX_OFFLINE=true", text)
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
        self.assertEqual({os.path.basename(w) for w in workflows}, {"test.yml", "deploy.yml", "deploy-service.yml"})
        for path in workflows:
            workflow = yaml.safe_load(read(path))
            name = os.path.basename(path)
            with self.subTest(workflow=name):
                self.assertIn("jobs", workflow)
                on = workflow.get(True) or workflow.get("on")  # YAML 1.1 reads `on` as true
                self.assertTrue(on)
                for job in workflow["jobs"].values():
                    uses = job.get("uses", "")
                    if uses.startswith("./"):
                        self.assertTrue(os.path.isfile(os.path.join(ROOT, uses)), uses)
                    for step in job.get("steps", []):
                        for target in re.findall(r"\bmake ([\w-]+)", step.get("run", "")):
                            self.assertIn(target, targets, f"{name}: make {target}")
                        for script in re.findall(r"(?:bash )?(\.ci/run|scripts/[\w.-]+)", step.get("run", "")):
                            self.assertTrue(os.path.isfile(os.path.join(ROOT, script)), script)

    def test_the_deploy_workflow_knows_what_each_service_is_built_from(self):
        """A service is deployed when a crate of its dependency graph changed: the
        workflow's lists must name every service, the bus services with bus/."""
        script = read(os.path.join(ROOT, ".github", "workflows", "deploy.yml"))
        (plain,) = re.findall(r"for service in ([\w ]+); do\n\s+touched \"\$all\|\^\$service/\"", script)
        (on_bus,) = re.findall(r"for service in ([\w ]+); do\n\s+touched \"\$all\|\^bus/\|\^\$service/\"", script)
        self.assertEqual(set(plain.split()), {"client"})
        self.assertEqual(set(on_bus.split()), {"auth", "tickets", "orders", "payments", "expiration"})
        self.assertIn("common/|kit/", script)


BUS_SERVICES = ["auth", "tickets", "orders", "payments", "expiration"]
BINARIES = APPS + ["stripe-standin", "loadgen"]


def run_binary(name, *args):
    binary = os.path.join(ROOT, "target", "debug", name)
    return subprocess.run([binary, *args], env={}, capture_output=True, text=True, timeout=30)


class CommandLines(unittest.TestCase):
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



class Dependencies(unittest.TestCase):
    """deny.toml refuses what the project has chosen not to ship (cargo deny, in
    `make lint`): shown on scratch workspaces that link a copyleft crate, two versions
    of one crate, or a crate without a version, beside a clean one."""

    def deny(self, crates, dependencies):
        """A workspace of `app` and `crates` ({directory: (name, version, licence)}),
        `app` depending on them as `dependencies` says; cargo deny's verdict on it."""
        import tempfile
        with tempfile.TemporaryDirectory() as scratch:
            def write(directory, name, version, licence, body=""):
                os.makedirs(os.path.join(scratch, directory, "src"))
                open(os.path.join(scratch, directory, "src", "lib.rs"), "w").close()
                with open(os.path.join(scratch, directory, "Cargo.toml"), "w") as f:
                    f.write(f'[package]\nname = "{name}"\nversion = "{version}"\nedition = "2021"\n'
                            f'license = "{licence}"\n{body}')
            for directory, (name, version, licence) in crates.items():
                write(directory, name, version, licence)
            write("app", "app", "0.1.0", "MIT", "[dependencies]\n" + dependencies)
            with open(os.path.join(scratch, "Cargo.toml"), "w") as f:
                # The others are not members: two of one name could not be.
                excluded = ", ".join(f'"{d}"' for d in crates)
                f.write(f'[workspace]\nmembers = ["app"]\nexclude = [{excluded}]\nresolver = "2"\n')
            with open(os.path.join(ROOT, "deny.toml")) as source, open(os.path.join(scratch, "deny.toml"), "w") as f:
                f.write(source.read())
            return subprocess.run(["cargo", "deny", "--offline", "check", "licenses", "bans", "sources"],
                                  cwd=scratch, capture_output=True, text=True)

    def test_a_permissive_tree_passes(self):
        result = self.deny({"lib": ("lib", "1.0.0", "MIT OR Apache-2.0")}, 'lib = { path = "../lib", version = "1" }\n')
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_a_copyleft_licence_is_refused(self):
        result = self.deny({"lib": ("lib", "1.0.0", "GPL-3.0-only")}, 'lib = { path = "../lib", version = "1" }\n')
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("GPL-3.0-only", result.stderr)
        self.assertIn("license is not explicitly allowed", result.stderr)

    def test_two_versions_of_one_crate_are_refused(self):
        result = self.deny(
            {"lib-1": ("lib", "1.0.0", "MIT"), "lib-2": ("lib", "2.0.0", "MIT")},
            'one = { package = "lib", path = "../lib-1", version = "1" }\n'
            'two = { package = "lib", path = "../lib-2", version = "2" }\n',
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("duplicate entries for crate 'lib'", result.stderr)

    def test_a_dependency_without_a_version_is_refused(self):
        result = self.deny({"lib": ("lib", "1.0.0", "MIT")}, 'lib = { path = "../lib" }\n')
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("wildcard", result.stderr)
