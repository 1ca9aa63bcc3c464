"""The `ingress` container: nginx with the rendered Ingress's routes, sending each to
the replicas of its Service that are ready, on port 80 (published on CLUSTER_PORT);
and, on port 3000, each Service by its name (`http://auth:3000` from inside the
cluster), with the same ready endpoints: what kube-proxy does for a ClusterIP
Service. The supervisor rewrites the configuration and reloads nginx whenever the
set of ready replicas changes."""

import os

from . import images, podman, topology
from .paths import state

NAME = "ingress"
CONFIG_DIR = state("ingress")

ERRORS = {
    413: "Request body is too large",
    502: "The service is unavailable; please try again",
    503: "The service is unavailable; please try again",
    504: "The service took too long to answer; please try again",
}


def routes():
    """(path, service, port) of the Ingress's rules, in their order."""
    ingress = next(o for o in topology.render("prod")
                   if o["kind"] == "Ingress" and o["metadata"]["name"] == "ticketing")
    found = []
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["pathType"] == "Prefix", path
            backend = path["backend"]["service"]
            found.append((path["path"], backend["name"], backend["port"]["number"]))
    return found


def body_size():
    ingress = next(o for o in topology.render("prod")
                   if o["kind"] == "Ingress" and o["metadata"]["name"] == "ticketing")
    return ingress["metadata"].get("annotations", {}).get(
        "nginx.ingress.kubernetes.io/proxy-body-size", "1m")


def location(path, service, endpoints):
    if endpoints.get(service):
        return f"    location {path} {{ proxy_pass http://{service}; }}\n"
    # No ready endpoint: what ingress-nginx answers for a Service without one.
    return f"    location {path} {{ return 503; }}\n"


def config(endpoints, port=3000):
    """nginx.conf for the ready endpoints: service name to addresses."""
    upstreams = ""
    for service, addresses in sorted(endpoints.items()):
        if addresses:
            servers = "".join(f"    server {a}:{port} max_fails=0;\n" for a in sorted(addresses))
            upstreams += f"  upstream {service} {{\n{servers}    keepalive 16;\n  }}\n"
    errors = "".join(f"    error_page {code} @e{code};\n" for code in ERRORS)
    error_locations = "".join(
        f"    location @e{code} {{\n      default_type application/json;\n"
        f"      return {code} '{{\"errors\":[{{\"message\":\"{message}\"}}]}}';\n    }}\n"
        for code, message in ERRORS.items())
    ingress_routes = "".join(location(path, service, endpoints) for path, service, _ in routes())
    services = "".join(
        f"  server {{\n    listen {port};\n    server_name {service};\n{errors}"
        f"{location('/', service, endpoints)}{error_locations}  }}\n"
        for service in topology.HTTP_SERVICES)
    return f"""\
# Written by the cluster's supervisor (infra/cluster/ingress.py) from the rendered
# Ingress and the replicas whose readiness probe passes. Do not edit: it is rewritten.
worker_processes 1;
pid /tmp/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path /tmp/body;
  proxy_temp_path /tmp/proxy;
  fastcgi_temp_path /tmp/fastcgi;
  uwsgi_temp_path /tmp/uwsgi;
  scgi_temp_path /tmp/scgi;
  client_max_body_size {body_size()};
  # ingress-nginx changes endpoints without a reload (its Lua balancer); this nginx
  # reloads, and a reload closes idle client connections, racing a request sent on
  # one ("connection reset"). So no client connection is kept idle here.
  keepalive_timeout 0;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host $http_host;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto $scheme;
  # ingress-nginx's defaults: another replica is tried when one refuses or times out
  # a connection (never for a request it may have started on: no non_idempotent).
  proxy_connect_timeout 5s;
  proxy_next_upstream error timeout;
{upstreams}
  # The Ingress: its routes for any host, plain HTTP (TLS is the real cluster's).
  server {{
    listen 8080 default_server;
{errors}{ingress_routes}{error_locations}  }}
  # The Services, by name.
  server {{
    listen {port} default_server;
    return 404;
  }}
{services}}}
"""


def write(endpoints):
    """Writes the configuration; whether it changed."""
    os.makedirs(CONFIG_DIR, exist_ok=True)
    path = os.path.join(CONFIG_DIR, "nginx.conf")
    text = config(endpoints)
    if os.path.exists(path) and open(path).read() == text:
        return False
    with open(path + ".new", "w") as file:
        file.write(text)
    os.chmod(path + ".new", 0o644)
    os.replace(path + ".new", path)
    return True


def reload():
    podman.podman("kill", "--signal", "HUP", NAME, check=False)


def spec(cluster_port):
    return topology.Spec(
        name=NAME,
        app=NAME,
        role="ingress",
        image=f"localhost/{images.NGINX_IMAGE}:latest",
        args=["-c", "/etc/nginx/nginx.conf", "-e", "stderr", "-g", "daemon off;"],
        user=f"{images.NGINX_UID}:{images.NGINX_UID}",
        read_only=True,
        cap_drop=["ALL"],
        no_new_privileges=True,
        memory="256m",
        cpus="1",
        aliases=list(topology.HTTP_SERVICES),
        mounts=[(CONFIG_DIR, "/etc/nginx", True)],
        tmpfs=[("/tmp", "rw,size=64m,mode=1777")],
        publish=[f"{cluster_port}:8080"],
        grace=10,
    )
