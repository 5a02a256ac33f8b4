"""`--help` shows the defaults the code uses (read from the same dataclasses), and flags that
take bytes accept sizes with units."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest
from pagoda_worker.engine.async_engine import AsyncEngineOptions
from pagoda_worker.engine.config import EngineConfig, describe_default
from pagoda_worker.server.server import ServerSettings

from pagoda.cli import build_parser, main
from pagoda.commands.serve import engine_config


def help_text(command: str, capsys) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    return " ".join(text[text.index("options:") :].split())  # no usage line; argparse wraps


def shown_default(text: str, flag: str) -> str:
    found = re.search(rf"{flag}[ ,].*?\(default: (.*?)\)", text)
    assert found, f"{flag} shows no default"
    return found.group(1)


@pytest.mark.parametrize("command", ["serve", "generate"])
def test_every_engine_flag_shows_the_engine_default(command, capsys):
    text = help_text(command, capsys)
    expected = {
        "kv_cache_bytes": "256MiB",
        "max_model_len": "the model's",
        "num_kv_blocks": "from the budget",
        "cpu_threads": "usable cores minus one, shared by the ranks, at least 1",
    }
    for f in fields(EngineConfig):
        if f.name != "model":
            flag = "--" + f.name.replace("_", "-")
            wanted = expected.get(f.name, describe_default(f.default))
            assert shown_default(text, flag) == wanted, flag


def test_server_flags_show_the_servers_defaults(capsys):
    text = help_text("serve", capsys)
    server, engine = ServerSettings(), AsyncEngineOptions()
    assert shown_default(text, "--drain-timeout") == str(server.drain_timeout_s)
    assert shown_default(text, "--max-body-bytes") == "4MiB"
    assert server.max_body_bytes == 4 * 2**20
    assert shown_default(text, "--request-timeout") == str(engine.request_timeout_s)
    assert shown_default(text, "--max-waiting-seqs") == str(engine.max_waiting_seqs)
    assert shown_default(text, "--log-level") == "info"


def parse(*argv: str):
    return build_parser(["serve", *argv]).parse_args(["serve", *argv])


def test_sizes_take_units():
    args = parse("--kv-cache-bytes", "1GiB", "--max-body-bytes", "512KiB")
    assert engine_config(args).kv_cache_bytes == 2**30
    assert args.max_body_bytes == 512 * 2**10
    assert engine_config(parse("--kv-cache-bytes", "1000")).kv_cache_bytes == 1000


def test_a_size_without_meaning_names_the_accepted_forms(capsys):
    with pytest.raises(SystemExit):
        parse("--kv-cache-bytes", "lots")
    assert "'lots' is not a size: give bytes, or a number with a unit such as 256MiB" in (
        capsys.readouterr().err
    )
