"""`pagoda gateway`: the reverse proxy in front of the workers (tenants, limits, routing,
failover). It imports neither torch nor the engine."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path


def add_parser(subparsers, help_text: str) -> None:
    from pagoda_gateway.proxy import ProxySettings
    from pagoda_gateway.server import GatewaySettings

    defaults, proxy = GatewaySettings(), ProxySettings()
    parser = subparsers.add_parser(
        "gateway",
        help=help_text,
        description=help_text,
        epilog="Workers come from --discover in a cluster, or from --backend locally.",
    )

    def option(group, flag: str, kind, default, text: str) -> None:
        group.add_argument(flag, type=kind, default=default, help=f"{text} (default: {default})")

    option(parser, "--host", str, defaults.host, "address to listen on")
    option(parser, "--port", int, defaults.port, "port to listen on; 0 picks a free one")
    workers = parser.add_argument_group("workers")
    workers.add_argument(
        "--backend",
        action="append",
        default=[],
        metavar="URL",
        help="a worker's base URL, e.g. http://127.0.0.1:8001 (repeat for each); it gets "
        "traffic while its /ready answers 200",
    )
    workers.add_argument(
        "--standby-backend",
        action="append",
        default=[],
        metavar="URL",
        help="a fallback worker: used only while no --backend is ready",
    )
    workers.add_argument(
        "--discover",
        metavar="NAMESPACE/NAME",
        help="in a pod: the workers of the LLMDeployment NAME, from the EndpointSlices of its "
        "Services NAME-active and NAME-standby (the operator sets this)",
    )
    workers.add_argument(
        "--backend-api-key-file",
        type=Path,
        help="file holding the API key the workers require (spec.serving.apiKeySecret)",
    )
    routing = parser.add_argument_group("routing")
    routing.add_argument(
        "--routing",
        choices=["prefix", "round-robin"],
        default=defaults.routing,
        help="prefix: a request's session, or the worker holding the longest part of its "
        "prompt, picks its worker, under bounded loads; round-robin: ignore both "
        f"(default: {defaults.routing})",
    )
    for flag, kind, default, text in [
        ("--prefix-chars", int, defaults.prefix_chars,
         "characters of a prompt's beginning that place it when no worker holds it yet"),
        ("--max-attempts", int, proxy.max_attempts,
         "workers tried for one request when one fails before its first byte"),
        ("--retry-budget", float, proxy.retry_budget_s,
         "seconds within which those retries may start"),
        ("--hold-queue-size", int, defaults.hold_queue_size,
         "requests that may wait while no worker is ready; beyond: 503"),
        ("--hold-timeout", float, defaults.hold_timeout_s,
         "seconds a request waits for a worker to become ready; then 503"),
    ]:  # fmt: skip
        option(routing, flag, kind, default, text)
    tenants = parser.add_argument_group("tenants")
    tenants.add_argument(
        "--tenants",
        type=Path,
        help="YAML file of tenants: name, keyFile or keySha256, requestsPerMinute, "
        "tokensPerMinute, concurrentRequests; unset serves without keys or limits",
    )
    for flag, kind, default, text in [
        ("--drain-timeout", float, defaults.drain_timeout_s,
         "seconds in-flight requests get after SIGTERM"),
        ("--header-timeout", float, defaults.header_timeout_s,
         "seconds for a request's headers to arrive (idle keep-alive connections close then)"),
        ("--body-timeout", float, defaults.body_timeout_s,
         "seconds for a request's body to arrive; beyond: 408"),
    ]:  # fmt: skip
        option(parser, flag, kind, default, text)
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning"], help="log level"
    )


def run(args: argparse.Namespace) -> int:
    from pagoda_gateway.proxy import ProxySettings
    from pagoda_gateway.server import Gateway, GatewaySettings, serve_until_signalled
    from pagoda_gateway.tenants import TenantsFileError

    from pagoda.logs import configure_logging

    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    try:
        backend_key = _read_key(args.backend_api_key_file)
        gateway = Gateway(
            GatewaySettings(
                host=args.host,
                port=args.port,
                backends=args.backend,
                standby_backends=args.standby_backend,
                discover=args.discover,
                tenants_file=args.tenants,
                routing=args.routing,
                prefix_chars=args.prefix_chars,
                hold_queue_size=args.hold_queue_size,
                hold_timeout_s=args.hold_timeout,
                drain_timeout_s=args.drain_timeout,
                header_timeout_s=args.header_timeout,
                body_timeout_s=args.body_timeout,
                proxy=ProxySettings(
                    max_attempts=args.max_attempts,
                    retry_budget_s=args.retry_budget,
                    backend_api_key=backend_key,
                ),
            )
        )
    except (TenantsFileError, ValueError, OSError) as e:
        print(f"pagoda gateway: {e}", file=sys.stderr)
        return 2
    configure_logging(args.log_level)
    try:
        asyncio.run(serve_until_signalled(gateway, progress))
    except (RuntimeError, OSError) as e:
        print(f"pagoda gateway: {e}", file=sys.stderr)
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    progress("stopped")
    return 0


def _read_key(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        key = path.read_text().strip()
    except OSError as e:
        raise OSError(f"cannot read --backend-api-key-file {path}: {e.strerror}") from None
    if not key:
        raise ValueError(f"--backend-api-key-file {path} is empty")
    return key
