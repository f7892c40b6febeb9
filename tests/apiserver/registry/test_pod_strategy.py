"""The Pod strategy: read-back defaults of the seed pod, status on create, update rules."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubi.api.errors import cause_text
from kubi.apiserver.registry import pods
from kubi.apiserver.registry.strategy import strategy_for

Obj = dict[str, Any]
SEED = Path("/work/shared/seed/manifests")
if not SEED.is_dir():
    SEED = Path(__file__).resolve().parents[4] / "shared" / "seed" / "manifests"

STRATEGY = strategy_for("", "Pod")


def seed_pod() -> Obj:
    pod: Obj = yaml.safe_load((SEED / "simple-pod.yml").read_text())
    return pod


def create(pod: Obj) -> Obj:
    """The store's create order: uid, default, prepare_for_create."""
    pod["metadata"]["uid"] = "00000000-0000-0000-0000-000000000001"
    STRATEGY.default(pod)
    STRATEGY.prepare_for_create(pod)
    return pod


def update(new: Obj, old: Obj) -> list[str]:
    STRATEGY.default(new)
    STRATEGY.prepare_for_update(new, old)
    return [cause_text(c) for c in STRATEGY.validate_update(new, old)]


def test_strategy_flags() -> None:
    assert isinstance(STRATEGY, pods.PodStrategy)
    assert STRATEGY.has_status and not STRATEGY.tracks_generation


@pytest.mark.skipif(not SEED.is_dir(), reason="seed manifests not present")
def test_seed_pod_reads_back_as_a_real_cluster_returns_it() -> None:
    pod = create(seed_pod())
    assert STRATEGY.validate(pod) == []
    container = {"imagePullPolicy": "Always", "resources": {},
                 "terminationMessagePath": "/dev/termination-log",
                 "terminationMessagePolicy": "File"}
    assert pod["spec"] == {
        "containers": [
            {"name": "nginx", "image": "gihyodocker/nginx:latest",
             "env": [{"name": "BACKEND_HOST", "value": "localhost:8080"}],
             "ports": [{"containerPort": 80, "protocol": "TCP"}], **container},
            {"name": "echo", "image": "gihyodocker/echo:latest",
             "ports": [{"containerPort": 8080, "protocol": "TCP"}], **container},
        ],
        "dnsPolicy": "ClusterFirst",
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
        "priority": 0,
        "restartPolicy": "Always",
        "schedulerName": "default-scheduler",
        "securityContext": {},
        "serviceAccount": "default",
        "serviceAccountName": "default",
        "terminationGracePeriodSeconds": 30,
        "tolerations": [
            {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists",
             "tolerationSeconds": 300},
            {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable",
             "operator": "Exists", "tolerationSeconds": 300},
        ],
    }
    assert pod["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    assert "generation" not in pod["metadata"]


def minimal_pod(**spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}], **spec}}


def test_create_replaces_client_status_and_computes_qos() -> None:
    pod = minimal_pod()
    pod["status"] = {"phase": "Running"}
    pod["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1", "memory": "64Mi"}}
    create(pod)
    # Limits without requests default the requests, which makes the pod Guaranteed.
    assert pod["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "1",
                                                                     "memory": "64Mi"}
    assert pod["status"] == {"phase": "Pending", "qosClass": "Guaranteed"}


def test_existing_tolerations_and_service_account_are_kept() -> None:
    pod = create(minimal_pod(serviceAccountName="robot", tolerations=[
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 10}]))
    assert pod["spec"]["serviceAccount"] == "robot"
    assert [t["key"] for t in pod["spec"]["tolerations"]] == [
        "node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]
    assert pod["spec"]["tolerations"][0]["tolerationSeconds"] == 10
    everything = create(minimal_pod(tolerations=[{"operator": "Exists"}]))
    assert everything["spec"]["tolerations"] == [{"operator": "Exists"}]


def test_host_network_defaults_host_ports() -> None:
    pod = minimal_pod(hostNetwork=True)
    pod["spec"]["containers"][0]["ports"] = [{"containerPort": 8080}]
    create(pod)
    assert pod["spec"]["containers"][0]["ports"] == [
        {"containerPort": 8080, "hostPort": 8080, "protocol": "TCP"}]


def test_invalid_pod_is_reported_with_spec_paths() -> None:
    pod = create(minimal_pod())
    pod["spec"]["containers"][0]["name"] = ""
    assert [cause_text(c) for c in STRATEGY.validate(pod)] == [
        "spec.containers[0].name: Required value"]


def test_image_and_deadline_and_added_tolerations_may_change() -> None:
    old = create(minimal_pod())
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["image"] = "busybox:1.37"
    new["spec"]["activeDeadlineSeconds"] = 60
    new["spec"]["tolerations"].append({"key": "gpu", "operator": "Exists"})
    new["status"] = {"phase": "Failed"}
    assert update(new, old) == []
    # A spec update keeps the stored status.
    assert new["status"] == old["status"]


def test_other_spec_changes_are_forbidden() -> None:
    old = create(minimal_pod())
    new = copy.deepcopy(old)
    new["spec"]["restartPolicy"] = "Never"
    causes = update(new, old)
    assert len(causes) == 1
    assert causes[0].startswith(
        "spec: Forbidden: pod updates may not change fields other than "
        "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
        "`spec.tolerations` (only additions to existing tolerations),"
        "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously "
        "negative)\n")
    assert '- \tRestartPolicy: "Always",' in causes[0]
    assert '+ \tRestartPolicy: "Never",' in causes[0]


@pytest.mark.parametrize(("change", "expected"), [
    (lambda s: s["containers"].append({"name": "d", "image": "x"}),
     ["spec.containers: Forbidden: pod updates may not add or remove containers"]),
    # Upstream runs the create validation too, so the missing image is reported twice.
    (lambda s: s["containers"][0].update(image=""),
     ["spec.containers[0].image: Required value"] * 2),
    (lambda s: s["tolerations"].pop(0),
     ["spec.tolerations: Forbidden: existing toleration can not be modified except its "
      "tolerationSeconds"]),
])
def test_update_rules(change: Any, expected: list[str]) -> None:
    old = create(minimal_pod())
    new = copy.deepcopy(old)
    change(new["spec"])
    assert [c for c in update(new, old) if not c.startswith("spec: Forbidden")] == expected


def test_active_deadline_may_only_decrease() -> None:
    old = create(minimal_pod(activeDeadlineSeconds=60))
    new = copy.deepcopy(old)
    new["spec"]["activeDeadlineSeconds"] = 120
    assert update(new, old) == ["spec.activeDeadlineSeconds: Invalid value: 120: must be less "
                                "than or equal to previous value"]
    new["spec"].pop("activeDeadlineSeconds")
    assert update(new, old) == ["spec.activeDeadlineSeconds: Invalid value: null: must not "
                                "update from a positive integer to nil value"]
