"""The real-node tier puts the host back: what it records before a run is restored after it,
and at the next start when a run died before it could clean up (e2e/node/host.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.node import host


@pytest.fixture
def fake_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """/proc/sys and a v1 cgroup layout (cpu, cpuset) in a temp folder."""
    sysctls = tmp_path / "proc-sys"
    for name, value in zip(host.KUBELET_SYSCTLS, ("0", "0", "1", "0", "1000", "2000"), strict=True):
        (sysctls / name).parent.mkdir(parents=True, exist_ok=True)
        (sysctls / name).write_text(value + "\n")
    cgroups = tmp_path / "cgroup"
    for controller in ("cpu", "cpuset"):
        (cgroups / controller).mkdir(parents=True)
    (cgroups / "cpuset" / "cpuset.cpus").write_text("0-1\n")
    (cgroups / "cpuset" / "cpuset.mems").write_text("0\n")
    monkeypatch.setattr(host, "SYSCTL_DIR", sysctls)
    monkeypatch.setattr(host, "cgroup_hierarchies", lambda: sorted(cgroups.iterdir()))
    return tmp_path


def kubelet_runs(root: Path) -> None:
    """What the kubelet and runc do to the host during a run."""
    (root / "proc-sys/vm/overcommit_memory").write_text("1\n")
    (root / "proc-sys/kernel/panic").write_text("10\n")
    (root / "cgroup/cpu/pagoda-e2e/kubepods/burstable/pod1").mkdir(parents=True)


def test_a_run_is_undone_and_forgotten(fake_host: Path) -> None:
    state, workdir = fake_host / "state.json", fake_host / "run-1"
    host.prepare(state, workdir, log=print)
    assert workdir.is_dir() and state.exists()
    knobs = [
        fake_host / "cgroup/cpuset/pagoda-e2e" / name for name in ("cpuset.cpus", "cpuset.mems")
    ]
    assert [knob.read_text() for knob in knobs] == ["0-1\n", "0\n"], "a cpuset takes no task empty"
    for knob in knobs:  # cgroupfs removes a folder with its control files; a plain folder not
        knob.unlink()
    kubelet_runs(fake_host)

    host.restore(state, log=print)
    assert (fake_host / "proc-sys/vm/overcommit_memory").read_text() == "0"
    assert (fake_host / "proc-sys/kernel/panic").read_text() == "1"
    assert not list(fake_host.glob("cgroup/*/pagoda-e2e")), "every cgroup folder made is gone"
    assert not workdir.exists() and not state.exists()
    host.restore(state, log=print)  # nothing recorded: nothing to do


def test_the_next_start_undoes_a_run_that_died(fake_host: Path) -> None:
    state = fake_host / "state.json"
    host.prepare(state, fake_host / "run-1", log=print)
    for knob in fake_host.glob("cgroup/cpuset/pagoda-e2e/cpuset.*"):
        knob.unlink()  # as cgroupfs would let rmdir do
    kubelet_runs(fake_host)  # ... and the run is killed: no restore

    host.prepare(state, fake_host / "run-2", log=print)
    assert (fake_host / "proc-sys/kernel/panic").read_text() == "1"
    assert not (fake_host / "run-1").exists()
    assert not (fake_host / "cgroup/cpu/pagoda-e2e/kubepods").exists()
    recorded = host.HostState.load(state)
    assert recorded.sysctls["kernel/panic"] == "1", "the host's value, not the dead run's"
    assert recorded.folders == [str(fake_host / "run-2")]


def test_the_changes_are_named_before_they_are_made() -> None:
    said = host.describe_changes()
    assert "vm.overcommit_memory" in said and "kernel.panic" in said
    assert "/sys/fs/cgroup/*/pagoda-e2e" in said
