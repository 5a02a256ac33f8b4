"""`pagoda serve`: the worker pod's main process, an OpenAI-compatible server.

Engine settings come from EngineConfig's defaults, then `--config engine.json` (the operator
mounts one from a ConfigMap; its keys are EngineConfig field names), then engine flags given
on the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from dataclasses import fields
from pathlib import Path

from pagoda_worker.engine.config import (
    EngineConfig,
    add_engine_args,
    format_bytes,
    parse_bytes,
    with_default,
)

from pagoda.logs import configure_logging

ENGINE_FIELDS = [f.name for f in fields(EngineConfig)]


class UsageError(Exception):
    """Something about the command line or the config file; the message says what to do."""


def add_parser(subparsers, help_text: str) -> None:
    # Defaults shown in --help are read from the dataclasses that the code itself uses.
    from pagoda_worker.engine.async_engine import AsyncEngineOptions
    from pagoda_worker.server.server import ServerSettings

    server_defaults, engine_defaults = ServerSettings(), AsyncEngineOptions()
    parser = subparsers.add_parser(
        "serve",
        help=help_text,
        description=help_text,
        epilog="Engine flags given here override the keys of --config.",
    )
    parser.add_argument(
        "--model",
        help="a Hugging Face model folder, or a Hugging Face id (org/name) found in the local "
        "cache ($HF_HOME) or downloaded into it (default: the shipped stories260K)",
    )
    parser.add_argument(
        "--served-model-name",
        help="the name clients ask for (default: the folder's name, or the Hugging Face id)",
    )
    _option(parser, "--host", str, server_defaults.host, "address to listen on")
    _option(parser, "--port", int, server_defaults.port, "port to listen on; 0 picks a free one")
    parser.add_argument("--config", help="JSON file of engine settings (EngineConfig field names)")
    parser.add_argument(
        "--api-key-file",
        help="file of API keys, one per line; $PAGODA_API_KEY adds keys (comma-separated)",
    )
    server = parser.add_argument_group("server")
    for flag, kind, default, text in [
        ("--max-waiting-seqs", int, engine_defaults.max_waiting_seqs,
         "sequences (prompts x n) allowed to wait; a request that does not fit: 429"),
        ("--max-seqs-per-request", int, engine_defaults.max_seqs_per_request,
         "most sequences (prompts x n) in one request; beyond: 400"),
        ("--request-timeout", float, engine_defaults.request_timeout_s,
         "seconds before a request is aborted; 0 disables"),
        ("--drain-timeout", float, server_defaults.drain_timeout_s,
         "seconds in-flight requests get after SIGTERM"),
        ("--max-body-bytes", parse_bytes, server_defaults.max_body_bytes,
         "largest request body; beyond it: 413"),
        ("--header-timeout", float, server_defaults.header_timeout_s,
         "seconds for a request's headers to arrive (idle keep-alive connections close then)"),
        ("--body-timeout", float, server_defaults.body_timeout_s,
         "seconds for a request's body to arrive; beyond: 408"),
        ("--heartbeat-timeout", float, engine_defaults.heartbeat_timeout_s,
         "seconds of engine-loop silence after which /health fails"),
        ("--canary-interval", float, server_defaults.readiness.canary_interval_s,
         "idle seconds between canary generations behind /ready"),
    ]:  # fmt: skip
        _option(server, flag, kind, default, text)
    server.add_argument(
        "--stream-coalesce",
        action="store_true",
        help="a stream that fell behind (slow client, busy server) sends the tokens of several "
        "engine steps as one chunk instead of one chunk per step",
    )
    server.add_argument(
        "--audit-log",
        action="store_true",
        help="log prompts and completions (redacted) to the pagoda.audit logger",
    )
    server.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning"],
        help=with_default("log level of the server's own messages", "info"),
    )
    add_engine_args(parser)


def _option(group, flag: str, kind, default, text: str) -> None:
    """A flag whose --help shows its default; sizes take units and show them."""
    if kind is parse_bytes:
        group.add_argument(flag, type=kind, default=default, metavar="SIZE",
                           help=with_default(text, format_bytes(default)))  # fmt: skip
    else:
        group.add_argument(flag, type=kind, default=default, help=with_default(text, default))


def read_config_file(path: str) -> dict:
    try:
        values = json.loads(Path(path).read_text())
    except OSError as e:
        raise UsageError(f"cannot read --config {path}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise UsageError(f"--config {path} is not valid JSON: {e}") from e
    if not isinstance(values, dict):
        raise UsageError(f"--config {path} must hold a JSON object of engine settings")
    unknown = sorted(set(values) - set(ENGINE_FIELDS))
    if unknown:
        raise UsageError(
            f"--config {path} has unknown keys: {', '.join(unknown)}; "
            f"known keys: {', '.join(ENGINE_FIELDS)}"
        )
    return values


def engine_config(args: argparse.Namespace) -> EngineConfig:
    import pydantic

    values = read_config_file(args.config) if args.config else {}
    given = [name for name in ENGINE_FIELDS if name != "model" and hasattr(args, name)]
    values |= {name: getattr(args, name) for name in given}
    if args.model:
        values["model"] = args.model
    try:
        return pydantic.TypeAdapter(EngineConfig).validate_json(json.dumps(values), strict=True)
    except pydantic.ValidationError as e:
        problem = e.errors(include_url=False)[0]
        where = ".".join(map(str, problem["loc"])) or "engine settings"
        raise UsageError(f"{where}: {problem['msg']}") from e


def run(args: argparse.Namespace) -> int:
    from pagoda_worker.engine.async_engine import AsyncEngineOptions, EngineDeadError
    from pagoda_worker.engine.core_client import EngineStartError
    from pagoda_worker.models.loader import ModelLoadError
    from pagoda_worker.server.auth import APIKeyError, load_api_keys
    from pagoda_worker.server.readiness import ReadinessSettings
    from pagoda_worker.server.server import Server, ServerSettings, serve_until_signalled

    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    try:
        config = engine_config(args)
        keys = load_api_keys(args.api_key_file)
    except (UsageError, APIKeyError) as e:
        print(f"pagoda serve: {e}", file=sys.stderr)
        return 2
    configure_logging(args.log_level)
    if keys:
        progress(f"API keys required on /v1 ({len(keys)} configured)")
    settings = ServerSettings(
        host=args.host,
        port=args.port,
        served_model_name=args.served_model_name,
        api_keys=keys,
        max_body_bytes=args.max_body_bytes,
        drain_timeout_s=args.drain_timeout,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        audit_log=args.audit_log,
        stream_coalesce=args.stream_coalesce,
        engine=AsyncEngineOptions(
            max_waiting_seqs=args.max_waiting_seqs,
            max_seqs_per_request=args.max_seqs_per_request,
            request_timeout_s=args.request_timeout or None,
            heartbeat_timeout_s=args.heartbeat_timeout,
        ),
        readiness=ReadinessSettings(
            canary_interval_s=args.canary_interval,
            canary_max_age_s=3 * args.canary_interval + 5,
        ),
    )
    try:
        asyncio.run(serve_until_signalled(Server(settings), config, progress))
    except (ModelLoadError, EngineStartError, EngineDeadError, OSError) as e:
        print(f"pagoda serve: {e}", file=sys.stderr)
        return 1
    # The drain is over: a late SIGTERM must not turn this clean exit into -15.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    progress("stopped")
    return 0
