"""The tenants file (its errors name the problem) and the key lookup (hashed keys, compared in
constant time, re-read from rotated key files)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pagoda_gateway.tenants
import pytest
from pagoda_gateway.tenants import Limits, TenantKeys, TenantsFileError, load_tenants_file

DIGEST = "0" * 64
ONE_TENANT = f"tenants:\n- name: a\n  keySha256: '{DIGEST}'\n"


def tenants_file(folder: Path, text: str) -> Path:
    path = folder / "tenants.yaml"
    path.write_text(text)
    return path


def load_error(folder: Path, text: str) -> str:
    with pytest.raises(TenantsFileError) as error:
        load_tenants_file(tenants_file(folder, text))
    return str(error.value)


@pytest.fixture
def keys(tmp_path) -> TenantKeys:
    """alpha's key in a file (as the kubelet mounts a Secret: a trailing newline), beta's as a
    digest, gamma's in a file."""
    (tmp_path / "alpha").write_text("alpha-key\n")
    (tmp_path / "gamma").write_text("gamma-key")
    beta = hashlib.sha256(b"beta-key").hexdigest()
    path = tenants_file(
        tmp_path,
        f"""tenants:
- name: alpha
  keyFile: {tmp_path / "alpha"}
  requestsPerMinute: 3
  tokensPerMinute: 1000
- name: beta
  keySha256: {beta}
  concurrentRequests: 2
- name: gamma
  keyFile: {tmp_path / "gamma"}
""",
    )
    return TenantKeys(load_tenants_file(path).tenants)


def test_limits_are_read_from_camel_case_fields(keys):
    limits = {tenant.name: tenant.limits for tenant in keys.tenants}
    assert limits == {
        "alpha": Limits(requests_per_minute=3, tokens_per_minute=1000),
        "beta": Limits(concurrent_requests=2),
        "gamma": Limits(),
    }
    assert keys.enabled
    assert not TenantKeys([]).enabled


def test_a_bearer_key_finds_its_tenant(keys):
    assert keys.tenant_for("Bearer alpha-key").name == "alpha"  # from its file, newline dropped
    assert keys.tenant_for("Bearer beta-key").name == "beta"  # from its digest
    assert keys.tenant_for("bearer gamma-key").name == "gamma"  # the scheme in any case
    assert keys.tenant_for("Bearer  gamma-key ").name == "gamma"


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Bearer wrong-key", "alpha-key", "Basic alpha-key"],
)
def test_a_wrong_missing_or_non_bearer_key_finds_no_tenant(keys, authorization):
    assert keys.tenant_for(authorization) is None


def test_no_key_never_matches_a_tenant_whose_digest_is_the_empty_keys(tmp_path):
    # `printf %s "$KEY" | sha256sum` with KEY unset gives the empty key's digest
    empty = hashlib.sha256(b"").hexdigest()
    path = tenants_file(tmp_path, ONE_TENANT.replace(DIGEST, empty))
    keys = TenantKeys(load_tenants_file(path).tenants)
    for authorization in (None, "", "Bearer", "Bearer  ", "Basic x", "x"):
        assert keys.tenant_for(authorization) is None, authorization


def test_every_key_is_compared_whichever_matches(keys, monkeypatch):
    compared = []

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return a == b

    monkeypatch.setattr(pagoda_gateway.tenants.hmac, "compare_digest", counting)
    for key in ("alpha-key", "gamma-key", "no-such-key"):
        compared.clear()
        keys.tenant_for(f"Bearer {key}")
        assert len(compared) == 3, key  # no early exit: the time tells nothing


def test_reload_picks_up_a_rotated_key_file(keys, tmp_path):
    (tmp_path / "alpha").write_text("alpha-key-2\n")
    assert keys.tenant_for("Bearer alpha-key").name == "alpha"  # until the reload
    keys.reload()
    assert keys.tenant_for("Bearer alpha-key-2").name == "alpha"
    assert keys.tenant_for("Bearer alpha-key") is None


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda path: path.unlink(), "tenant gamma: cannot read its key file"),
        (lambda path: path.write_text("\n"), r"tenant gamma: its key file .* is empty"),
    ],
)
def test_a_failing_reload_keeps_the_keys_in_use(keys, tmp_path, break_it, message):
    (tmp_path / "alpha").write_text("alpha-key-2")  # read before gamma's fails: not taken
    break_it(tmp_path / "gamma")
    with pytest.raises(TenantsFileError, match=message):
        keys.reload()
    assert keys.tenant_for("Bearer alpha-key").name == "alpha"
    assert keys.tenant_for("Bearer alpha-key-2") is None
    assert keys.tenant_for("Bearer gamma-key").name == "gamma"


def test_a_missing_key_file_fails_at_start(tmp_path):
    path = tenants_file(tmp_path, f"tenants:\n- name: alpha\n  keyFile: {tmp_path / 'nope'}\n")
    with pytest.raises(TenantsFileError, match=r"tenant alpha: cannot read its key file .*nope"):
        TenantKeys(load_tenants_file(path).tenants)


def test_duplicate_names_are_named(tmp_path):
    entries = "".join(f"- name: {n}\n  keySha256: '{DIGEST}'\n" for n in ("a", "b", "a", "b"))
    assert "tenant names must be unique: a, b" in load_error(tmp_path, "tenants:\n" + entries)


def test_a_tenant_needs_exactly_one_of_key_file_and_key_sha256(tmp_path):
    both = f"tenants:\n- name: alpha\n  keyFile: /k\n  keySha256: '{DIGEST}'\n"
    assert "tenant alpha: set exactly one of keyFile and keySha256" in load_error(tmp_path, both)
    neither = "tenants:\n- name: alpha\n"
    assert "tenant alpha: set exactly one of keyFile and keySha256" in load_error(tmp_path, neither)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("tenants:\n- name: alpha\n  keySha256: abc\n", "tenants.0.keySha256"),
        (f"tenants:\n- name: Alpha!\n  keySha256: '{DIGEST}'\n", "tenants.0.name"),
        (ONE_TENANT + "  requestsPerMinut: 3\n", "tenants.0.requestsPerMinut: Extra inputs"),
        (ONE_TENANT + "  tokensPerMinute: 0\n", "tenants.0.tokensPerMinute"),
        ("- name: alpha\n", "file: Input should be a valid dictionary"),
    ],
)
def test_an_invalid_entry_names_the_field(tmp_path, text, named):
    message = load_error(tmp_path, text)
    assert message.startswith(f"the tenants file {tmp_path / 'tenants.yaml'} is invalid: ")
    assert named in message


def test_bad_yaml_is_named(tmp_path):
    assert "is not YAML" in load_error(tmp_path, "tenants: [\n")


def test_a_missing_tenants_file_is_named(tmp_path):
    with pytest.raises(TenantsFileError) as error:
        load_tenants_file(tmp_path / "absent.yaml")
    assert str(error.value) == (
        f"cannot read the tenants file {tmp_path / 'absent.yaml'}: No such file or directory"
    )


def test_an_empty_tenants_file_has_no_tenants(tmp_path):
    assert load_tenants_file(tenants_file(tmp_path, "")).tenants == []


def test_a_relative_key_file_is_found_beside_the_tenants_file(tmp_path, monkeypatch):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "a").write_text("relative-key\n")
    (tmp_path / "tenants.yaml").write_text("tenants:\n- name: a\n  keyFile: keys/a\n")
    monkeypatch.chdir("/")  # not where the files are
    keys = TenantKeys(load_tenants_file(tmp_path / "tenants.yaml").tenants)
    assert keys.tenant_for("Bearer relative-key").name == "a"
