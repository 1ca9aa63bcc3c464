"""Who may talk to whom, computed from rendered NetworkPolicies.

A small model of a cluster: the pods an overlay makes (its workloads and each
CloudNativePG cluster's instances), the pods the platform runs beside them (the
ingress controller, a Gateway's data plane, cert-manager's ACME solver, CoreDNS and
NodeLocal DNSCache, the CloudNativePG operator, Prometheus), and addresses outside the
cluster. A flow is allowed when the source's egress policies (if any select it) and
the destination's ingress policies (if any select it) both let it through, as the
NetworkPolicy API defines it."""

import ipaddress
from dataclasses import dataclass, field

NAMESPACE = "ticketing"


@dataclass
class Endpoint:
    """A pod (with a namespace and labels) or an address outside the cluster."""

    name: str
    ip: str
    namespace: str = None
    labels: dict = field(default_factory=dict)
    ports: dict = field(default_factory=dict)  # container port names to numbers

    @property
    def is_pod(self):
        return self.namespace is not None


def namespace_labels(namespace):
    return {"kubernetes.io/metadata.name": namespace}


def selects(selector, labels):
    for key, value in (selector or {}).get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in (selector or {}).get("matchExpressions", []):
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


def peer_matches(peer, endpoint, policy_namespace):
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        address = ipaddress.ip_address(endpoint.ip)
        if address not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(address in ipaddress.ip_network(e) for e in block.get("except", []))
    if not endpoint.is_pod:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], namespace_labels(endpoint.namespace)):
            return False
    elif endpoint.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or selects(peer["podSelector"], endpoint.labels)


def port_matches(rule_ports, port, protocol, destination):
    if not rule_ports:
        return True
    for rule_port in rule_ports:
        if rule_port.get("protocol", "TCP") != protocol:
            continue
        number = rule_port.get("port")
        if number is None:
            return True
        if isinstance(number, str):
            number = destination.ports.get(number)
        end = rule_port.get("endPort", number)
        if number is not None and number <= port <= end:
            return True
    return False


class Cluster:
    """The pods and policies of one rendered overlay, and the flows between them."""

    def __init__(self, objects, gateway=False):
        self.policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
        self.endpoints = {}
        counter = iter(range(10, 250))

        def pod(name, namespace, labels, ports=None):
            self.endpoints[name] = Endpoint(name, f"10.244.0.{next(counter)}", namespace, labels, ports or {})

        for workload in (o for o in objects if o["kind"] in ("Deployment", "StatefulSet")):
            template = workload["spec"]["template"]
            ports = {
                p["name"]: p["containerPort"]
                for c in template["spec"]["containers"] for p in c.get("ports", []) if "name" in p
            }
            pod(workload["metadata"]["name"], NAMESPACE, template["metadata"]["labels"], ports)
        for cluster in (o for o in objects if o["kind"] == "Cluster"):
            name = cluster["metadata"]["name"]
            for instance in (1, 2):
                labels = {"cnpg.io/cluster": name, "cnpg.io/podRole": "instance"}
                pod(f"{name}-{instance}", NAMESPACE, labels)
        pod("ingress-nginx", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"})
        if gateway:
            # NGINX Gateway Fabric (and other GEP-1762 implementations) run the Gateway's
            # data plane in the Gateway's namespace, labelled with its name.
            gateway_labels = {"gateway.networking.k8s.io/gateway-name": "ticketing", "app.kubernetes.io/name": "ticketing-nginx"}
            pod("gateway", NAMESPACE, gateway_labels)
        pod("nginx-gateway-control-plane", "nginx-gateway", {"app.kubernetes.io/name": "nginx-gateway"})
        pod("acme-solver", NAMESPACE, {"acme.cert-manager.io/http01-solver": "true"})
        pod("coredns", "kube-system", {"k8s-app": "kube-dns"})
        pod("cnpg-operator", "cnpg-system", {"app.kubernetes.io/name": "cloudnative-pg"})
        pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"})
        pod("otel-collector", "monitoring", {"app.kubernetes.io/name": "opentelemetry-collector"})
        pod("another-namespace", "shop", {"app.kubernetes.io/name": "shop"})
        self.endpoints["nodelocal-dns"] = Endpoint("nodelocal-dns", "169.254.20.10")
        self.endpoints["internet"] = Endpoint("internet", "203.0.113.10")
        self.endpoints["stripe"] = Endpoint("stripe", "198.51.100.7")

    def __getitem__(self, name):
        return self.endpoints[name]

    def _side(self, policy_type, subject, other, port, protocol, destination):
        """Whether the policies of `subject` (of type `policy_type`) let the flow pass."""
        applying = [
            p for p in self.policies
            if policy_type in p["spec"].get("policyTypes", ["Ingress"])
            and p["metadata"].get("namespace", NAMESPACE) == subject.namespace
            and selects(p["spec"]["podSelector"], subject.labels)
        ]
        if not applying:
            return True
        key, peers_key = ("ingress", "from") if policy_type == "Ingress" else ("egress", "to")
        for policy in applying:
            namespace = policy["metadata"].get("namespace", NAMESPACE)
            for rule in policy["spec"].get(key, []):
                peers = rule.get(peers_key)
                if not port_matches(rule.get("ports"), port, protocol, destination):
                    continue
                if not peers or any(peer_matches(peer, other, namespace) for peer in peers):
                    return True
        return False

    def egress_allows(self, source, destination, port, protocol="TCP"):
        """Whether `source`'s own egress policies let the flow out (whatever the
        destination's ingress policies say)."""
        source, destination = self[source], self[destination]
        return self._side("Egress", source, destination, port, protocol, destination)

    def allows(self, source, destination, port, protocol="TCP"):
        source, destination = self[source], self[destination]
        egress = not source.is_pod or self._side("Egress", source, destination, port, protocol, destination)
        ingress = not destination.is_pod or self._side("Ingress", destination, source, port, protocol, destination)
        return egress and ingress
