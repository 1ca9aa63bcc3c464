"""The monitoring the prod overlay ships (infra/k8s/components/monitoring): a PodMonitor
per deployable on its ops port, the alerts as a PrometheusRule, and the Grafana
dashboard. Every alert is tested with `promtool test rules` (Debian's prometheus
package): for each, series that fire it and series that must not."""

import json
import os
import re
import subprocess
import tempfile
import unittest

import yaml

from rendered import APPS, K8S, ROOT, of_kind, read, render, tool

MONITORING = os.path.join(K8S, "components", "monitoring")
RULE_FILE = os.path.join(MONITORING, "prometheus-rule.yaml")
DASHBOARD = os.path.join(MONITORING, "dashboard.json")


def promtool():
    path = tool("promtool")
    if path is None:
        raise unittest.SkipTest("promtool is not installed (make deps installs Debian's prometheus)")
    return path


def plain_rules():
    """The rule file `make up MONITORING=on` gives its Prometheus."""
    return subprocess.run(
        [os.path.join(ROOT, "scripts", "stack.sh"), "prometheus-rules"],
        check=True, capture_output=True, text=True,
    ).stdout


def alerts():
    spec = yaml.safe_load(read(RULE_FILE))["spec"]
    return {r["alert"]: r for g in spec["groups"] for r in g["rules"] if "alert" in r}


def ramp(start, step, count):
    """promtool's expanding notation: `start+stepxcount` (count + 1 samples)."""
    sign = "+" if step >= 0 else "-"
    return f"{start}{sign}{abs(step)}x{count}"


# For each alert: cases of (input series, minutes at which to evaluate, the alerts'
# own labels expected then; an empty list: it must not fire). Series are sampled
# every minute.
ORDERS = 'service="orders",instance="127.0.0.1:4003",route="/api/orders",method="POST"'
CASES = {
    "HttpErrorBudgetBurningFast": [
        # 1 failure a second in 11: 9 % of the requests, against a budget of 0.1 %.
        ([(f'http_requests_total{{{ORDERS},status="201"}}', ramp(0, 600, 70)),
          (f'http_requests_total{{{ORDERS},status="500"}}', ramp(0, 60, 70))],
         70, [{"service": "orders", "severity": "critical"}]),
        # 0.5 %: spends the budget, but too slowly to page.
        ([(f'http_requests_total{{{ORDERS},status="201"}}', ramp(0, 600, 70)),
          (f'http_requests_total{{{ORDERS},status="500"}}', ramp(0, 3, 70))],
         70, []),
        # Every request fails, but there is one a minute: too few to page on.
        ([(f'http_requests_total{{{ORDERS},status="500"}}', ramp(0, 1, 70))], 70, []),
    ],
    "HttpErrorBudgetBurningSlowly": [
        # 1 % for 6 hours and more: above 6x the budget, below 14.4x.
        ([(f'http_requests_total{{{ORDERS},status="201"}}', ramp(0, 600, 400)),
          (f'http_requests_total{{{ORDERS},status="500"}}', ramp(0, 6, 400))],
         400, [{"service": "orders", "severity": "warning"}]),
        ([(f'http_requests_total{{{ORDERS},status="201"}}', ramp(0, 600, 400)),
          (f'http_requests_total{{{ORDERS},status="500"}}', ramp(0, 2, 400))],
         400, []),
    ],
    "HttpLatencyBudgetBurningFast": [
        # Half the requests slower than 250 ms.
        ([(f'http_requests_total{{{ORDERS},status="201"}}', ramp(0, 600, 70)),
          (f'http_request_duration_seconds_bucket{{{ORDERS},status="201",le="0.25"}}', ramp(0, 300, 70)),
          (f'http_request_duration_seconds_count{{{ORDERS},status="201"}}', ramp(0, 600, 70))],
         70, [{"service": "orders", "severity": "critical"}]),
        # 0.5 % slower: within the SLO.
        ([(f'http_requests_total{{{ORDERS},status="201"}}', ramp(0, 600, 70)),
          (f'http_request_duration_seconds_bucket{{{ORDERS},status="201",le="0.25"}}', ramp(0, 597, 70)),
          (f'http_request_duration_seconds_count{{{ORDERS},status="201"}}', ramp(0, 600, 70))],
         70, []),
    ],
    "HttpLatencyBudgetBurningSlowly": [
        # 8 % slower for hours: above 6x the 1 % budget, below 14.4x.
        ([(f'http_requests_total{{{ORDERS},status="201"}}', ramp(0, 600, 400)),
          (f'http_request_duration_seconds_bucket{{{ORDERS},status="201",le="0.25"}}', ramp(0, 552, 400)),
          (f'http_request_duration_seconds_count{{{ORDERS},status="201"}}', ramp(0, 600, 400))],
         400, [{"service": "orders", "severity": "warning"}]),
        ([(f'http_requests_total{{{ORDERS},status="201"}}', ramp(0, 600, 400)),
          (f'http_request_duration_seconds_bucket{{{ORDERS},status="201",le="0.25"}}', ramp(0, 588, 400)),
          (f'http_request_duration_seconds_count{{{ORDERS},status="201"}}', ramp(0, 600, 400))],
         400, []),
    ],
    "OutboxBacklogGrowing": [
        ([('outbox_backlog{service="tickets",instance="a"}', ramp(0, 10, 30))],
         30, [{"service": "tickets", "instance": "a", "severity": "warning"}]),
        # A steady backlog, one draining, and bursts that are published between scrapes.
        ([('outbox_backlog{service="tickets",instance="a"}', "500x30"),
          ('outbox_backlog{service="orders",instance="b"}', ramp(300, -10, 30)),
          ('outbox_backlog{service="auth",instance="c"}', " ".join(["0 50"] * 15))],
         30, []),
    ],
    "EventWaitingTooLong": [
        ([('events_waiting_oldest_age_seconds{service="orders",subject="ticket.updated",instance="a"}', ramp(0, 60, 10))],
         10, [{"service": "orders", "subject": "ticket.updated", "severity": "warning"}]),
        # Events that wait a little, their predecessors then arriving.
        ([('events_waiting_oldest_age_seconds{service="orders",subject="ticket.updated",instance="a"}', " ".join(["0 120"] * 5))],
         10, []),
    ],
    "EventParked": [
        ([('events_parked_total{service="orders",subject="payment.created",instance="a"}', "0 0 0 1 1 1 1")],
         6, [{"service": "orders", "subject": "payment.created", "severity": "warning"}]),
        # Counted from zero, nothing parked; and one parked more than an hour ago.
        ([('events_parked_total{service="orders",subject="payment.created",instance="a"}', "0x10"),
          ('events_parked_total{service="payments",subject="order.created",instance="b"}', "0 1x80")],
         80, []),
    ],
    "WorkerDown": [
        ([('worker_up{service="orders",worker="relay",instance="a",pod="orders-1"}', "1 1 0 0 0 0")],
         5, [{"service": "orders", "worker": "relay", "instance": "a", "pod": "orders-1", "severity": "critical"}]),
        # A failure the supervisor recovered from within a minute.
        ([('worker_up{service="orders",worker="relay",instance="a",pod="orders-1"}', "1 0 1 1 0 1")],
         5, []),
    ],
    "WorkerRestarting": [
        ([('worker_restarts_total{service="orders",worker="consumer",instance="a",pod="orders-1"}', "0 1 2 3 4 5")],
         5, [{"service": "orders", "worker": "consumer", "instance": "a", "pod": "orders-1", "severity": "warning"}]),
        ([('worker_restarts_total{service="orders",worker="consumer",instance="a",pod="orders-1"}', "0 1 1 1 1 1")],
         5, []),
    ],
    "ServiceDown": [
        ([('up{service="payments",instance="127.0.0.1:4004",job="payments"}', "1 0 0 0 0")],
         4, [{"service": "payments", "instance": "127.0.0.1:4004", "job": "payments", "severity": "critical"}]),
        # Back after a scrape missed; and a target that is not one of ours.
        ([('up{service="payments",instance="127.0.0.1:4004",job="payments"}', "1 0 1 1 1"),
          ('up{instance="node:9100",job="node"}', "0x5")],
         4, []),
    ],
    "NatsDisconnected": [
        ([('nats_connected{service="orders",instance="a"}', "1 0 0 0")],
         3, [{"service": "orders", "instance": "a", "severity": "critical"}]),
        # A reconnection within seconds.
        ([('nats_connected{service="orders",instance="a"}', "1 0 1 1")], 3, []),
    ],
    "EventLagHigh": [
        # 90 % of order.created events reach payments between 5 and 10 s late.
        ([('event_lag_seconds_bucket{service="payments",subject="order.created",consumer="payments",le="5"}', ramp(0, 10, 20)),
          ('event_lag_seconds_bucket{service="payments",subject="order.created",consumer="payments",le="10"}', ramp(0, 100, 20)),
          ('event_lag_seconds_bucket{service="payments",subject="order.created",consumer="payments",le="+Inf"}', ramp(0, 100, 20))],
         20, [{"service": "payments", "subject": "order.created", "consumer": "payments", "severity": "warning"}]),
        ([('event_lag_seconds_bucket{service="payments",subject="order.created",consumer="payments",le="0.05"}', ramp(0, 100, 20)),
          ('event_lag_seconds_bucket{service="payments",subject="order.created",consumer="payments",le="5"}', ramp(0, 100, 20)),
          ('event_lag_seconds_bucket{service="payments",subject="order.created",consumer="payments",le="+Inf"}', ramp(0, 100, 20))],
         20, []),
    ],
    "ExpirationLate": [
        # 40 % of expiries more than 2.5 s late.
        ([('expiration_lateness_seconds_bucket{service="expiration",le="1"}', ramp(0, 50, 10)),
          ('expiration_lateness_seconds_bucket{service="expiration",le="2.5"}', ramp(0, 60, 10)),
          ('expiration_lateness_seconds_bucket{service="expiration",le="5"}', ramp(0, 100, 10)),
          ('expiration_lateness_seconds_bucket{service="expiration",le="+Inf"}', ramp(0, 100, 10))],
         10, [{"service": "expiration", "severity": "warning"}]),
        ([('expiration_lateness_seconds_bucket{service="expiration",le="1"}', ramp(0, 100, 10)),
          ('expiration_lateness_seconds_bucket{service="expiration",le="2.5"}', ramp(0, 100, 10)),
          ('expiration_lateness_seconds_bucket{service="expiration",le="5"}', ramp(0, 100, 10)),
          ('expiration_lateness_seconds_bucket{service="expiration",le="+Inf"}', ramp(0, 100, 10))],
         10, []),
    ],
    "SignInFailuresSpiking": [
        # Two failures a second.
        ([('auth_signin_failures_total{service="auth",instance="a"}', ramp(0, 120, 10))],
         10, [{"service": "auth", "severity": "warning"}]),
        # People mistyping: one every two seconds at most; and a short burst.
        ([('auth_signin_failures_total{service="auth",instance="a"}', ramp(0, 30, 10)),
          ('auth_signin_failures_total{service="auth",instance="b"}', "0 0 0 0 0 0 0 0 300 300 300")],
         10, []),
    ],
}


def expand(template, labels):
    """An annotation as Prometheus renders it for an alert with these labels."""
    def label(match):
        return labels[match.group(1)]
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", label, template)


def promtool_tests(rules_file):
    tests = []
    for name, rule in alerts().items():
        for series, minutes, expected in CASES[name]:
            tests.append({
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "alert_rule_test": [{
                    "eval_time": f"{minutes}m",
                    "alertname": name,
                    "exp_alerts": [
                        {"exp_labels": labels,
                         "exp_annotations": {k: expand(v, labels) for k, v in rule["annotations"].items()}}
                        for labels in expected
                    ],
                }],
            })
    return {"rule_files": [rules_file], "evaluation_interval": "1m", "tests": tests}


class Rules(unittest.TestCase):
    def test_the_local_rule_file_is_the_prometheus_rules_spec(self):
        spec = yaml.safe_load(read(RULE_FILE))["spec"]
        self.assertEqual(yaml.safe_load(plain_rules()), spec)

    def test_the_rules_are_valid_for_prometheus(self):
        with tempfile.TemporaryDirectory() as scratch:
            path = os.path.join(scratch, "rules.yaml")
            with open(path, "w") as file:
                file.write(plain_rules())
            done = subprocess.run([promtool(), "check", "rules", path], capture_output=True, text=True)
            self.assertEqual(done.returncode, 0, done.stdout + done.stderr)

    def test_every_alert_has_a_severity_a_summary_and_a_runbook(self):
        for name, rule in alerts().items():
            with self.subTest(alert=name):
                self.assertIn(rule["labels"]["severity"], ("critical", "warning"))
                self.assertEqual(set(rule["annotations"]), {"summary", "runbook"})

    def test_the_alerts_the_issue_names_are_there(self):
        self.assertEqual(set(alerts()), {
            "HttpErrorBudgetBurningFast", "HttpErrorBudgetBurningSlowly",
            "HttpLatencyBudgetBurningFast", "HttpLatencyBudgetBurningSlowly",
            "OutboxBacklogGrowing", "EventWaitingTooLong", "EventParked", "WorkerDown",
            "WorkerRestarting", "ServiceDown", "NatsDisconnected", "EventLagHigh",
            "ExpirationLate", "SignInFailuresSpiking",
        })

    def test_each_alert_fires_on_its_series_and_not_on_the_others(self):
        self.assertEqual(set(CASES), set(alerts()))
        for name, cases in CASES.items():
            with self.subTest(alert=name):
                self.assertTrue(any(expected for _, _, expected in cases), "a case that fires")
                self.assertTrue(any(not expected for _, _, expected in cases), "a case that must not")
        with tempfile.TemporaryDirectory() as scratch:
            with open(os.path.join(scratch, "rules.yaml"), "w") as file:
                file.write(plain_rules())
            with open(os.path.join(scratch, "tests.yaml"), "w") as file:
                yaml.safe_dump(promtool_tests("rules.yaml"), file, sort_keys=False)
            done = subprocess.run([promtool(), "test", "rules", "tests.yaml"], cwd=scratch,
                                  capture_output=True, text=True)
            self.assertEqual(done.returncode, 0, done.stdout + done.stderr)

    def test_promtool_catches_an_alert_that_would_not_fire(self):
        """The rule tests can fail: with one threshold raised, promtool reports it."""
        with tempfile.TemporaryDirectory() as scratch:
            broken = plain_rules().replace("nats_connected == 0", "nats_connected == 2")
            self.assertIn("nats_connected == 2", broken)
            with open(os.path.join(scratch, "rules.yaml"), "w") as file:
                file.write(broken)
            with open(os.path.join(scratch, "tests.yaml"), "w") as file:
                yaml.safe_dump(promtool_tests("rules.yaml"), file, sort_keys=False)
            done = subprocess.run([promtool(), "test", "rules", "tests.yaml"], cwd=scratch,
                                  capture_output=True, text=True)
            self.assertNotEqual(done.returncode, 0)
            self.assertIn("NatsDisconnected", done.stdout + done.stderr)


def metric_names(expression):
    """The metric names an expression selects (not functions, labels or keywords)."""
    expression = re.sub(r'"[^"]*"', '""', expression)  # label values
    expression = re.sub(r"\{[^}]*\}", "", expression)  # matchers
    expression = re.sub(r"\[[^\]]*\]", "", expression)  # ranges
    expression = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expression)  # grouping
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expression):
        followed_by = expression[match.end():].lstrip()
        if followed_by.startswith("("):
            continue  # a function or aggregation
        if match.group() in ("and", "or", "unless", "offset"):
            continue
        names.add(match.group())
    return names


def dashboard_expressions():
    dashboard = json.loads(read(DASHBOARD))
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


class Metrics(unittest.TestCase):
    def emitted(self):
        """Every metric name the Rust code records or renders."""
        names = set()
        for folder, _, files in os.walk(ROOT):
            if "/target" in folder or "/.stack" in folder or "/.git" in folder:
                continue
            for name in files:
                if name.endswith(".rs"):
                    text = read(os.path.join(folder, name))
                    names |= set(re.findall(r'(?:counter|gauge|histogram)!\(\s*"([a-z_]+)"', text))
                    names |= set(re.findall(r'"(http_request[a-z_]*)', text))
        return names

    def test_rules_and_dashboard_select_only_metrics_the_services_record(self):
        emitted = self.emitted()
        recorded = {r["record"] for g in yaml.safe_load(read(RULE_FILE))["spec"]["groups"]
                    for r in g["rules"] if "record" in r}
        known = emitted | recorded | {"up"}
        expressions = [r["expr"] for g in yaml.safe_load(read(RULE_FILE))["spec"]["groups"] for r in g["rules"]]
        for expression in expressions + dashboard_expressions():
            for name in metric_names(expression):
                base = re.sub(r"_(bucket|count|sum)$", "", name)
                with self.subTest(expression=expression, metric=name):
                    self.assertTrue(name in known or base in known, f"{name} is recorded by no service")


class Manifests(unittest.TestCase):
    def test_a_pod_monitor_per_deployable_scrapes_its_ops_port_in_prod(self):
        for overlay in ("prod", "prod-gateway"):
            objects = render(overlay)
            monitors = {m["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]: m
                        for m in of_kind(objects, "PodMonitor")}
            self.assertEqual(set(monitors), set(APPS), overlay)
            for deployment in of_kind(objects, "Deployment"):
                name = deployment["metadata"]["labels"]["app.kubernetes.io/name"]
                endpoint, = monitors[name]["spec"]["podMetricsEndpoints"]
                ports = {p["name"]: p["containerPort"]
                         for c in deployment["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
                with self.subTest(overlay=overlay, deployable=name):
                    self.assertEqual(ports.get(endpoint["port"]), 9000)
                    self.assertEqual(endpoint["path"], "/metrics")
                    self.assertIn({"sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
                                   "targetLabel": "service"}, endpoint["relabelings"])
        self.assertEqual(of_kind(render("dev"), "PodMonitor"), [])

    def test_the_dashboard_is_provisioned_for_grafana_in_prod(self):
        config_maps = [c for c in of_kind(render("prod"), "ConfigMap")
                       if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
        self.assertEqual(len(config_maps), 1)
        (name, text), = config_maps[0]["data"].items()
        self.assertTrue(name.endswith(".json"))
        dashboard = json.loads(text)
        self.assertEqual(dashboard["uid"], "ticketing")
        titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
        for wanted in ("requests", "5xx", "latency", "published", "consumed", "waiting", "parked", "lag",
                       "outbox", "expiration", "charges", "pool"):
            self.assertIn(wanted, titles)

    def test_the_rules_reach_the_operator_in_both_prod_routings(self):
        for overlay in ("prod", "prod-gateway"):
            rule, = of_kind(render(overlay), "PrometheusRule")
            self.assertEqual(rule["metadata"]["namespace"], "ticketing")
            self.assertEqual(rule["spec"], yaml.safe_load(read(RULE_FILE))["spec"])


if __name__ == "__main__":
    unittest.main()
