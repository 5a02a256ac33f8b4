"""`pagoda gateway` as a user runs it: defaults shown in --help are the code's, mistakes get one
line naming the fix, and the command never imports torch."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from pagoda_gateway.proxy import ProxySettings
from pagoda_gateway.server import GatewaySettings

from pagoda.cli import main


def run_gateway(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pagoda.cli", "gateway", "--port", "0", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def test_help_shows_the_defaults_the_gateway_uses(capsys):
    with pytest.raises(SystemExit):
        main(["gateway", "--help"])
    out = capsys.readouterr().out
    text = " ".join(out[out.index("options:") :].split())  # no usage line; argparse wraps
    settings, proxy = GatewaySettings(), ProxySettings()
    for flag, value in [
        ("--hold-queue-size", settings.hold_queue_size),
        ("--hold-timeout", settings.hold_timeout_s),
        ("--prefix-chars", settings.prefix_chars),
        ("--max-attempts", proxy.max_attempts),
        ("--retry-budget", proxy.retry_budget_s),
        ("--drain-timeout", settings.drain_timeout_s),
        ("--header-timeout", settings.header_timeout_s),
        ("--body-timeout", settings.body_timeout_s),
    ]:
        found = re.search(rf"{flag} \S+ .*?\(default: (.*?)\)", text)
        assert found and found.group(1) == str(value), flag


def test_the_gateway_never_imports_torch():
    code = (
        "import sys, pagoda.commands.gateway, pagoda_gateway.server; print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "give either --discover or --backend"),
        (["--backend", "http://127.0.0.1:1", "--discover", "ns/x"], "give either --discover"),
        (["--backend", "http://127.0.0.1:1", "--tenants", "/nonexistent.yaml"],
         "cannot read the tenants file /nonexistent.yaml"),
        (["--backend", "http://127.0.0.1:1", "--backend-api-key-file", "/nonexistent"],
         "cannot read --backend-api-key-file /nonexistent"),
    ],
)  # fmt: skip
def test_mistakes_exit_2_with_one_clear_line(argv, says):
    done = run_gateway(*argv)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"pagoda gateway: {says}")


def test_a_bad_tenants_file_names_the_field(tmp_path):
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants:\n- name: a\n  keySha256: nothex\n  requestsPerMinute: 0\n")
    done = run_gateway("--backend", "http://127.0.0.1:1", "--tenants", str(path))
    assert done.returncode == 2
    assert "tenants.0.keySha256" in done.stderr and "tenants.0.requestsPerMinute" in done.stderr


def test_discovery_outside_a_pod_says_so():
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    done = run_gateway("--discover", "team-a/chat", env=env)
    assert done.returncode == 1
    assert "outside a cluster, list the workers with --backend" in done.stderr.splitlines()[-1]
