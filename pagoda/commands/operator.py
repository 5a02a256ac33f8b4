"""`pagoda operator`: run the Kubernetes operator that reconciles LLMDeployments."""

from __future__ import annotations

import argparse


def add_parser(subparsers, help_text: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("operator", help=help_text, description=help_text)
    parser.add_argument(
        "--kubeconfig",
        help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster)",
    )
    parser.add_argument(
        "--namespace",
        dest="namespaces",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; default: all namespaces)",
    )
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument(
        "--peering",
        default="pagoda",
        help="kopf peering object shared by the operator's replicas; one of them works, the"
        " others wait (default: %(default)s)",
    )
    peering.add_argument(
        "--standalone", action="store_true", help="run without peering (a single replica)"
    )
    parser.add_argument(
        "--priority", type=int, help="peering priority; the highest works (default: random)"
    )
    parser.add_argument(
        "--peering-lifetime",
        type=int,
        default=30,
        help="seconds a silent peer counts as alive (default: %(default)s)",
    )
    parser.add_argument("--bind", default="0.0.0.0", help="address of the HTTP endpoints")
    parser.add_argument(
        "--liveness-port", type=int, default=8080, help="serves /healthz (default: %(default)s)"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=9090,
        help="serves Prometheus /metrics; 0 turns it off (default: %(default)s)",
    )
    parser.add_argument("--workers", type=int, default=4, help="LLMDeployments reconciled at once")
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=300.0,
        help="reconcile every LLMDeployment at least this often (default: %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="log kopf's own details")
    return parser


def run(args: argparse.Namespace) -> int:
    from pagoda_operator.main import OperatorOptions, run_operator

    return run_operator(
        OperatorOptions(
            kubeconfig=args.kubeconfig,
            namespaces=tuple(args.namespaces),
            peering=None if args.standalone else args.peering,
            priority=args.priority,
            peering_lifetime=args.peering_lifetime,
            bind=args.bind,
            liveness_port=args.liveness_port,
            metrics_port=args.metrics_port,
            workers=args.workers,
            resync_seconds=args.resync_seconds,
            verbose=args.verbose,
        )
    )
