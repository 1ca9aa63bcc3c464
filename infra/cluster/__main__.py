"""scripts/cluster: the production topology as containers on this machine.

  images                 an image per deployable (and NATS, PostgreSQL, nginx)
  up [--no-build]        the cluster (make cluster): safe to run twice
  down [--purge]         remove its containers (and with --purge its data)
  status                 every container, its readiness, the databases, the stream
  wait-ready [--within S]  until every probed container is ready (240)
  endpoints              where its parts answer from this machine (JSON)
  translations           what podman cannot express of the manifests, and what is left out
  fault KIND ...         break it (scripts/cluster fault --help)
  supervise              the probes and the ingress's rotation (started by up)
"""

import argparse
import json
import os
import sys

from . import control, faults, images, supervisor, topology


def fault_parser(commands):
    fault = commands.add_parser("fault", help="break the cluster",
                                description=faults.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = fault.add_subparsers(dest="kind", required=True)
    for kind, default in (("kill", 1.0), ("stop", 10.0)):
        parser = kinds.add_parser(kind)
        parser.add_argument("name")
        parser.add_argument("--down", type=float, default=default)
    for kind in ("nats-leader", "nats-follower"):
        parser = kinds.add_parser(kind)
        parser.add_argument("--down", type=float, default=10.0)
        if kind == "nats-leader":
            parser.add_argument("--graceful", action="store_true",
                                help="lame duck and SIGTERM instead of SIGKILL")
    for kind in ("partition", "lossy"):
        parser = kinds.add_parser(kind)
        parser.add_argument("name")
        parser.add_argument("--from", dest="peers", nargs="*", default=[])
        parser.add_argument("--seconds", type=float)
        if kind == "lossy":
            parser.add_argument("--probability", type=float, required=True)
    kinds.add_parser("heal").add_argument("names", nargs="*")
    parser = kinds.add_parser("stall")
    parser.add_argument("name")
    parser.add_argument("--seconds", type=float, default=40.0)
    kinds.add_parser("failover").add_argument("app", choices=topology.DATABASES)
    kinds.add_parser("rolling-restart").add_argument("app", choices=topology.SERVICES)


def run_fault(args):
    match args.kind:
        case "kill":
            faults.kill(args.name, args.down)
        case "stop":
            faults.stop(args.name, args.down)
        case "nats-leader":
            faults.nats_leader(args.down, args.graceful)
        case "nats-follower":
            faults.nats_follower(args.down)
        case "partition":
            faults.partition(args.name, args.peers, args.seconds)
        case "lossy":
            faults.lossy(args.name, args.probability, args.peers, args.seconds)
        case "heal":
            faults.heal(*args.names)
        case "stall":
            faults.stall(args.name, args.seconds)
        case "failover":
            faults.failover(args.app)
        case "rolling-restart":
            faults.rolling_restart(args.app)


def main():
    parser = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("images")
    commands.add_parser("up").add_argument("--no-build", action="store_true")
    commands.add_parser("down").add_argument("--purge", action="store_true")
    commands.add_parser("status")
    commands.add_parser("wait-ready").add_argument("--within", type=float, default=240)
    commands.add_parser("endpoints")
    commands.add_parser("translations")
    commands.add_parser("supervise")
    fault_parser(commands)
    args = parser.parse_args()
    if os.geteuid() != 0 and args.command not in ("translations",):
        sys.exit("scripts/cluster runs podman as root (rootful: iptables in the containers' "
                 "namespaces); run it with sudo")
    match args.command:
        case "images":
            control.install()
            images.build_all(control.log)
        case "up":
            control.up(build=not args.no_build)
        case "down":
            control.down(purge=args.purge)
        case "status":
            control.status()
        case "wait-ready":
            control.wait_ready([s.name for s in control.specs() if s.probes], args.within)
        case "endpoints":
            print(json.dumps(control.endpoints(), indent=1))
        case "translations":
            for topic, text in topology.TRANSLATIONS:
                print(f"{topic}: {text}\n")
        case "supervise":
            supervisor.main(control.specs())
        case "fault":
            run_fault(args)


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # a clear line, not a traceback, for what podman refused
        from .podman import Failed
        if isinstance(error, Failed):
            sys.exit(f"[cluster] error: {error}")
        raise
