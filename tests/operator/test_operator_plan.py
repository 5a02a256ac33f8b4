"""The whole reconciliation as a pure function, over a few realistic worlds."""

from __future__ import annotations

from datetime import timedelta

import pytest
from operator_world import PVC_SOURCE, T0, deployment, llmd, pod, quota
from pagoda_operator.api.spec import LLMDeploymentSpec
from pagoda_operator.naming import Owner
from pagoda_operator.observed import World
from pagoda_operator.plan import plan
from pagoda_operator.records import READY_AT
from pagoda_operator.rejection import Rejection
from pagoda_operator.revision import primary_config
from pagoda_operator.workload import engine_config_map

FALLBACK = {
    "model": {"source": {"hf": {"repo": "org/small"}}},
    "resources": {"gpus": 0},
    "promoteAfterSeconds": 10,
    "demoteAfterSeconds": 20,
}


def revision_of(resource: dict) -> str:
    return primary_config(LLMDeploymentSpec.model_validate(resource["spec"])).revision


def settle(world: World) -> tuple[dict, object]:
    """Plan once, store the status as the operator would, and plan again."""
    first = plan(world)
    stored = {**world.resource, "status": first.status}
    return stored, plan(World(**{**world.__dict__, "resource": stored}))


def conditions(status: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def kinds(result) -> list[str]:
    return [f"{o['kind']}/{o['metadata']['name']}" for o in result.apply]


def test_a_new_llmdeployment_gets_its_children_and_a_pending_status():
    result = plan(World(llmd(), now=T0))
    revision = revision_of(llmd())
    assert kinds(result) == [
        f"ConfigMap/demo-primary-{revision}",
        "Deployment/demo-primary",
        "Service/demo",
        "PodDisruptionBudget/demo",
    ]
    status = result.status
    assert status["phase"] == "Pending"
    assert status["observedGeneration"] == 1
    assert status["endpoint"] == "http://demo.team.svc:8000/v1"
    assert status["selector"] == "pagoda.dev/deployment=demo,pagoda.dev/tier=primary"
    assert conditions(status)["Ready"] == ("False", "NoReadyPods")
    assert conditions(status)["Progressing"] == ("True", "RollingUpdate")
    assert [t.reason for t in result.transitions] == ["RollingUpdate"]
    assert result.delete == []


def test_all_ready_means_ready_and_a_second_pass_changes_nothing():
    resource = llmd()
    revision = revision_of(resource)
    world = World(
        resource,
        deployments={"primary": deployment(revision=revision)},
        pods=[pod("p1"), pod("p2")],
        now=T0,
    )
    stored, again = settle(world)
    assert stored["status"]["phase"] == "Ready"
    assert conditions(stored["status"])["Ready"] == ("True", "Serving")
    assert stored["status"]["revisions"]["lastReady"] == revision
    assert not again.status_changed(stored["status"]), "reconciling twice writes nothing"
    assert again.transitions == []
    assert again.apply == plan(world).apply


def test_status_does_not_churn_as_time_passes():
    resource = llmd(fallback=FALLBACK)
    world = World(
        resource, deployments={"primary": deployment(revision=revision_of(resource))}, now=T0
    )
    stored, _ = settle(world)
    later = plan(World(**{**world.__dict__, "resource": stored, "now": T0 + timedelta(seconds=3)}))
    assert not later.status_changed(stored["status"])


def test_pod_problems_make_degraded_with_pod_names():
    resource = llmd()
    world = World(
        resource,
        deployments={"primary": deployment(revision=revision_of(resource), ready=1)},
        pods=[
            pod("p1"),
            pod(
                "p2",
                ready=False,
                started=False,
                waiting="CrashLoopBackOff",
                last_terminated="OOMKilled",
                exit_code=137,
            ),
        ],
        now=T0,
    )
    result = plan(world)
    assert conditions(result.status)["Degraded"] == ("True", "OOMKilled")
    degraded = next(c for c in result.status["conditions"] if c["type"] == "Degraded")
    assert "[primary]" in degraded["message"] and "p2" in degraded["message"]
    assert result.status["phase"] == "Degraded"


def test_quota_failures_surface_as_degraded_and_quota_exceeded():
    resource = llmd(replicas=3, resources={"gpus": 2})
    message = 'pods "x" is forbidden: exceeded quota: gpus'
    world = World(
        resource,
        deployments={
            "primary": deployment(
                revision=revision_of(resource), wanted=3, ready=2, replica_failure=message
            )
        },
        pods=[pod("p1", gpus=2), pod("p2", gpus=2)],
        quotas=[quota(4, 4)],
        now=T0,
    )
    status = plan(world).status
    assert conditions(status)["QuotaExceeded"] == ("True", "GPUQuotaExceeded")
    assert conditions(status)["Degraded"] == ("True", "FailedCreate")
    assert status["gpus"] == {
        "requested": 6,
        "steady": 6,
        "primary": 6,
        "surge": 0,
        "fallback": 0,
        "quota": 4,
        "usedByOthers": 0,
        "headroom": -2,
    }


def test_fallback_promotion_switches_the_service_then_demotion_switches_back():
    resource = llmd(fallback=FALLBACK)
    revision = revision_of(resource)
    down = {
        "primary": deployment(revision=revision, ready=0),
        "fallback": deployment("fallback", revision="f", wanted=1, ready=1),
    }
    up = {**down, "primary": deployment(revision=revision)}

    def step(resource: dict, deployments: dict, second: int):
        result = plan(World(resource, deployments=deployments, now=T0 + timedelta(seconds=second)))
        service = next(o for o in result.apply if o["kind"] == "Service")
        return {**resource, "status": result.status}, result, service["spec"]["selector"]

    resource, result, selector = step(resource, down, 0)
    assert selector["pagoda.dev/tier"] == "primary"
    assert result.requeue_after == 10, "wake up at the promotion deadline"
    resource, result, selector = step(resource, down, 10)
    assert selector["pagoda.dev/tier"] == "fallback"
    assert resource["status"]["activeTier"] == "fallback"
    assert conditions(resource["status"])["FallbackActive"] == ("True", "PrimaryUnavailable")
    assert conditions(resource["status"])["Ready"] == ("True", "Serving")
    assert resource["status"]["phase"] == "Degraded"
    resource, result, selector = step(resource, up, 15)
    assert selector["pagoda.dev/tier"] == "fallback"
    assert result.requeue_after == 20
    resource, result, selector = step(resource, up, 35)
    assert selector["pagoda.dev/tier"] == "primary"
    assert [(t.type, t.status) for t in result.transitions] == [("FallbackActive", False)]


def test_removing_the_fallback_deletes_its_deployment():
    resource = llmd()
    world = World(resource, deployments={"fallback": deployment("fallback")}, now=T0)
    assert {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo-fallback"} in plan(
        world
    ).delete


def test_a_look_alike_fallback_deployment_of_another_owner_is_not_deleted():
    theirs = deployment("fallback")
    theirs["metadata"]["ownerReferences"] = []
    world = World(llmd(), deployments={"fallback": theirs}, now=T0)
    assert plan(world).delete == []


def test_config_maps_it_does_not_own_are_neither_deleted_nor_rolled_back_to():
    someone_else = Owner("team", "demo", "uid-of-an-earlier-demo")
    spec = LLMDeploymentSpec.model_validate({"model": {"name": "old", "source": PVC_SOURCE}})
    old = primary_config(spec)
    resource = llmd(
        model={"name": "new", "source": PVC_SOURCE},
        status={"revisions": {"lastReady": old.revision}},
    )
    stalled = deployment(revision=revision_of(resource), updated=1, replicas=3,
                         deadline_exceeded=True)  # fmt: skip
    world = World(
        resource,
        deployments={"primary": stalled},
        config_maps=[engine_config_map(someone_else, old)],
        now=T0,
    )
    result = plan(world)
    assert result.delete == []
    assert "rolledBackFrom" not in result.status["revisions"]


def test_old_revision_config_maps_are_deleted_but_the_last_ready_one_is_kept():
    owner = Owner("team", "demo", "uid-1")

    def config_map(model: str) -> dict:
        spec = LLMDeploymentSpec.model_validate({"model": {"name": model, "source": PVC_SOURCE}})
        return engine_config_map(owner, primary_config(spec))

    ready, stale = config_map("ready-one"), config_map("stale-one")
    ready["metadata"]["annotations"] = {READY_AT: "2025-12-31T00:00:00Z"}
    result = plan(World(llmd(), config_maps=[ready, stale], now=T0))
    deleted = [ref["name"] for ref in result.delete]
    assert deleted == [stale["metadata"]["name"]]


def rolled_back_world(status: dict | None = None) -> World:
    """Revision "new" stalled; "old" became ready earlier (its ConfigMap says so)."""
    owner = Owner("team", "demo", "uid-1")
    old_spec = LLMDeploymentSpec.model_validate({"model": {"name": "old", "source": PVC_SOURCE}})
    old_map = engine_config_map(owner, primary_config(old_spec), {READY_AT: "2025-12-31T00:00:00Z"})
    resource = llmd(model={"name": "new", "source": PVC_SOURCE}, status=status)
    stalled = deployment(
        revision=revision_of(resource), updated=1, replicas=3, deadline_exceeded=True
    )
    return World(resource, deployments={"primary": stalled}, config_maps=[old_map], now=T0)


def test_rollback_renders_the_last_ready_revision_from_its_config_map():
    world = rolled_back_world()
    old = primary_config(LLMDeploymentSpec.model_validate(
        {"model": {"name": "old", "source": PVC_SOURCE}}
    )).revision  # fmt: skip
    new = revision_of(world.resource)
    result = plan(world)
    primary = next(o for o in result.apply if o["kind"] == "Deployment")
    assert primary["spec"]["template"]["metadata"]["labels"]["pagoda.dev/revision"] == old
    assert result.status["revisions"]["rolledBackFrom"] == new
    assert conditions(result.status)["RolledBack"] == ("True", "ProgressDeadlineExceeded")
    assert conditions(result.status)["UpToDate"] == ("False", "RolledBack")
    assert conditions(result.status)["Ready"] == ("True", "Serving")
    assert result.status["phase"] == "RolledBack"
    assert result.status["model"] == "old", "the model that serves, not the spec's"
    assert any(t.type == "RolledBack" and t.warning for t in result.transitions)


def test_the_rollback_is_remembered_on_the_config_maps_not_in_status():
    first = plan(rolled_back_world())
    applied = {o["metadata"]["name"]: o for o in first.apply if o["kind"] == "ConfigMap"}
    new_map = applied[f"demo-primary-{revision_of(rolled_back_world().resource)}"]
    assert new_map["metadata"]["annotations"]["pagoda.dev/rollback-reason"] == (
        "ProgressDeadlineExceeded"
    )
    # Status wiped (a restore without status); the Deployment already runs the old revision.
    world = rolled_back_world()
    old_map = world.config_maps[0]
    running_old = deployment(revision=old_map["metadata"]["labels"]["pagoda.dev/revision"])
    wiped = World(
        world.resource,
        deployments={"primary": running_old},
        config_maps=list(applied.values()),
        now=T0,
    )
    again = plan(wiped)
    assert again.status["revisions"] == first.status["revisions"]
    assert conditions(again.status)["RolledBack"] == ("True", "ProgressDeadlineExceeded")
    primary = next(o for o in again.apply if o["kind"] == "Deployment")
    assert (
        primary["spec"]["template"]["metadata"]["labels"]
        == (
            next(o for o in first.apply if o["kind"] == "Deployment")["spec"]["template"][
                "metadata"
            ]["labels"]
        )
    ), "the broken revision is not rolled out again"


def test_a_refused_child_makes_the_llmdeployment_not_ready_and_not_up_to_date():
    refused = (Rejection("Deployment", "demo-primary", 'Deployment "demo-primary" is invalid'),)
    result = plan(World(llmd(), now=T0), refused)
    ready = next(c for c in result.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "DeploymentRejected")
    assert "Deployment demo-primary was rejected by the apiserver" in ready["message"]
    assert 'Deployment "demo-primary" is invalid' in ready["message"]
    assert conditions(result.status)["UpToDate"] == ("False", "DeploymentRejected")
    assert result.status["phase"] == "Failed"
    assert result.status["observedGeneration"] == 1
    warnings = [(t.type, t.reason) for t in result.transitions if t.warning]
    assert ("Ready", "DeploymentRejected") in warnings, "a new LLMDeployment announces it too"


@pytest.mark.parametrize("replicas", [0, 1, 3])
def test_primary_replicas_follow_the_spec(replicas):
    result = plan(World(llmd(replicas=replicas), now=T0))
    primary = next(o for o in result.apply if o["kind"] == "Deployment")
    assert primary["spec"]["replicas"] == replicas


def test_a_spec_stored_under_a_looser_crd_is_reported_not_applied():
    ready = plan(World(llmd(), now=T0)).status
    stored = llmd(status=ready, generation=2, resources={"cpu": "1.2.3"})
    result = plan(World(stored, now=T0))
    assert result.apply == [] and result.delete == []
    status = result.status
    assert status["phase"] == "Failed" and status["observedGeneration"] == 2
    assert conditions(status)["Ready"] == ("False", "InvalidSpec")
    assert conditions(status)["UpToDate"] == ("False", "InvalidSpec")
    assert conditions(status)["Progressing"] == conditions(ready)["Progressing"], "kept"
    message = next(c["message"] for c in status["conditions"] if c["type"] == "Ready")
    assert "spec.resources.cpu" in message
    assert any(t.reason == "InvalidSpec" and t.warning for t in result.transitions)


def replaced_during_bake(old_restarted: bool = False, ready_for: int = 5) -> World:
    """Revision "old" got ready pods, then the spec moved to "new" within its 2 s bake; its pods
    keep serving while the pod of "new" crash-loops. Nothing is recorded as ready yet."""
    owner = Owner("team", "demo", "uid-1")
    old = primary_config(LLMDeploymentSpec.model_validate(
        {"model": {"name": "old", "source": PVC_SOURCE}}
    ))  # fmt: skip
    resource = llmd(model={"name": "new", "source": PVC_SOURCE}, rollout={"minReadySeconds": 2})
    new = revision_of(resource)
    restart = {"last_terminated": "Error", "restarts": 1} if old_restarted else {}
    since = T0 - timedelta(seconds=ready_for)
    pods = [
        pod("demo-primary-a", revision=old.revision, ready_since=since),
        pod("demo-primary-b", revision=old.revision, ready_since=since, **restart),
        pod("demo-primary-c", revision=new, ready=False, started=False,
            waiting="CrashLoopBackOff", last_terminated="Error", restarts=1),
    ]  # fmt: skip
    rolling = deployment(revision=new, updated=1, replicas=3, available=2)
    return World(
        resource,
        deployments={"primary": rolling},
        pods=pods,
        config_maps=[engine_config_map(owner, old)],
        now=T0,
    )


def test_a_revision_replaced_during_its_bake_is_rolled_back_to_once_its_pods_baked():
    world = replaced_during_bake()
    old = world.config_maps[0]["metadata"]["labels"]["pagoda.dev/revision"]
    result = plan(world)
    assert conditions(result.status)["RolledBack"] == ("True", "CrashedDuringRollout")
    assert result.status["revisions"]["lastReady"] == old
    primary = next(o for o in result.apply if o["kind"] == "Deployment")
    assert primary["spec"]["template"]["metadata"]["labels"]["pagoda.dev/revision"] == old
    old_map = next(o for o in result.apply if o["metadata"]["name"] == f"demo-primary-{old}")
    assert old_map["metadata"]["annotations"][READY_AT] == "2026-01-01T11:59:57Z", (
        "recorded on its ConfigMap, so it survives a status wipe"
    )
    assert result.delete == []


def test_a_revision_with_a_restarted_pod_does_not_become_ready_after_it_was_replaced():
    result = plan(replaced_during_bake(old_restarted=True))
    assert "lastReady" not in result.status["revisions"]
    assert conditions(result.status)["RolledBack"] == ("False", "NoRollback")
    assert result.delete == [], "its ConfigMap stays while its pods run"


def test_a_replaced_revision_is_looked_at_again_when_its_pods_will_have_baked():
    result = plan(replaced_during_bake(ready_for=1))
    assert "lastReady" not in result.status["revisions"]
    assert result.requeue_after == 1
