"""Strategies of the kinds embedding a pod template: defaults, validation, updates."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubi.api.errors import cause_text
from kubi.apiserver.registry import workloads
from kubi.apiserver.registry.strategy import Strategy, strategy_for

Obj = dict[str, Any]
SEED = Path("/work/shared/seed/manifests")
UID = "6f3c1a9e-0000-4000-8000-000000000042"

TEMPLATE_POD_DEFAULTS = {
    "dnsPolicy": "ClusterFirst", "enableServiceLinks": True, "restartPolicy": "Always",
    "schedulerName": "default-scheduler", "securityContext": {},
    "terminationGracePeriodSeconds": 30,
}


def create(group: str, obj: Obj) -> tuple[Strategy, Obj, list[str]]:
    strategy = strategy_for(group, obj["kind"])
    obj["metadata"]["uid"] = UID
    strategy.default(obj)
    strategy.prepare_for_create(obj)
    return strategy, obj, [cause_text(c) for c in strategy.validate(obj)]


def update(strategy: Strategy, new: Obj, old: Obj) -> list[str]:
    strategy.default(new)
    strategy.prepare_for_update(new, old)
    return [cause_text(c) for c in strategy.validate_update(new, old)]


def template(labels: dict[str, str] | None = None, **spec: Any) -> Obj:
    return {"metadata": {"labels": labels or {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}], **spec}}


def deployment(**spec: Any) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template(),
                     **spec}}


def seed_objects(name: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all((SEED / name).read_text()) if doc]


needs_seed = pytest.mark.skipif(not SEED.is_dir(), reason="seed manifests not present")


@needs_seed
def test_seed_deployment_defaults() -> None:
    _, obj, causes = create("apps", seed_objects("simple-deployment.yml")[0])
    assert causes == []
    spec = obj["spec"]
    assert {k: v for k, v in spec.items() if k not in ("selector", "template")} == {
        "replicas": 3, "progressDeadlineSeconds": 600, "revisionHistoryLimit": 10,
        "strategy": {"type": "RollingUpdate",
                     "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}
    assert spec["template"]["metadata"] == {"creationTimestamp": None, "labels": {"app": "echo"}}
    pod_spec = spec["template"]["spec"]
    assert {k: v for k, v in pod_spec.items() if k != "containers"} == TEMPLATE_POD_DEFAULTS
    assert pod_spec["containers"][1] == {
        "name": "echo", "image": "gihyodocker/echo:latest", "imagePullPolicy": "Always",
        "ports": [{"containerPort": 8080, "protocol": "TCP"}], "resources": {},
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}
    assert obj["metadata"]["generation"] == 1
    assert "status" not in obj


@needs_seed
@pytest.mark.parametrize("name", ["simple-replicaset.yml", "simple-replicaset-with-label.yml"])
def test_seed_replicasets_validate_and_keep_replicas(name: str) -> None:
    for doc in seed_objects(name):
        replicas = doc["spec"]["replicas"]
        _, obj, causes = create("apps", doc)
        assert causes == []
        assert obj["spec"]["replicas"] == replicas
        assert "serviceAccountName" not in obj["spec"]["template"]["spec"]
        assert "tolerations" not in obj["spec"]["template"]["spec"]


def test_replicaset_replicas_default_to_one() -> None:
    rs = deployment()
    rs["kind"] = "ReplicaSet"
    _, obj, causes = create("apps", rs)
    assert causes == [] and obj["spec"]["replicas"] == 1


@pytest.mark.parametrize(("spec_change", "expected"), [
    ({"template": template({"app": "other"})},
     'spec.template.metadata.labels: Invalid value: map[string]string{"app":"other"}: '
     "`selector` does not match template `labels`"),
    ({"template": template(restartPolicy="Never")},
     'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"'),
    ({"template": template(activeDeadlineSeconds=10)},
     "spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in ReplicaSet "
     "is not Supported"),
    ({"template": {"metadata": {"labels": {"app": "web"}},
                   "spec": {"containers": [{"name": "web"}]}}},
     "spec.template.spec.containers[0].image: Required value"),
    ({"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
        {"name": "a", "image": "x"},
        {"name": "b", "image": "x", "ports": [{"containerPort": 70000}]}]}}},
     "spec.template.spec.containers[1].ports[0].containerPort: Invalid value: 70000: must be "
     "between 1 and 65535, inclusive"),
    ({"selector": {}},
     "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), "
     "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for "
     "deployment"),
    ({"selector": None}, "spec.selector: Required value"),
    ({"replicas": -1}, "spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
    ({"strategy": {"type": "Rolling"}},
     'spec.strategy: Unsupported value: "Rolling": supported values: "Recreate", "RollingUpdate"'),
    ({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0,
                                                              "maxUnavailable": 0}}},
     "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when "
     "`maxSurge` is 0"),
    ({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "150%"}}},
     'spec.strategy.rollingUpdate.maxSurge: Invalid value: "150%": must not be greater than '
     "100%"),
    ({"strategy": {"type": "Recreate", "rollingUpdate": {}}},
     "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is "
     "'Recreate'"),
    ({"progressDeadlineSeconds": 5, "minReadySeconds": 10},
     "spec.progressDeadlineSeconds: Invalid value: 5: must be greater than minReadySeconds"),
])
def test_deployment_validation(spec_change: Obj, expected: str) -> None:
    obj = deployment()
    obj["spec"].update(spec_change)
    if obj["spec"].get("selector") is None:
        del obj["spec"]["selector"]
    _, _, causes = create("apps", obj)
    assert expected in causes


def test_deployment_generation_and_selector_immutability() -> None:
    strategy, old, causes = create("apps", deployment())
    assert causes == []
    same = copy.deepcopy(old)
    same["metadata"]["labels"] = {"touched": "yes"}
    assert update(strategy, same, old) == []
    assert same["metadata"]["generation"] == 1
    scaled = copy.deepcopy(old)
    scaled["spec"]["replicas"] = 5
    assert update(strategy, scaled, old) == []
    assert scaled["metadata"]["generation"] == 2
    moved = copy.deepcopy(old)
    moved["spec"]["selector"] = {"matchLabels": {"app": "web", "v": "2"}}
    moved["spec"]["template"]["metadata"]["labels"]["v"] = "2"
    assert update(strategy, moved, old) == [
        'spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":'
        '"web", "v":"2"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is '
        "immutable"]


def statefulset(**spec: Any) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
            "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "web"}},
                     "template": template(),
                     "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                         "accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}}}], **spec}}


def test_statefulset_defaults_and_update_rules() -> None:
    strategy, obj, causes = create("apps", statefulset())
    assert causes == []
    spec = obj["spec"]
    assert spec["replicas"] == 1 and spec["serviceName"] == "db"
    assert spec["podManagementPolicy"] == "OrderedReady"
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert spec["revisionHistoryLimit"] == 10
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain",
                                                            "whenScaled": "Retain"}
    claim = spec["volumeClaimTemplates"][0]
    assert claim["apiVersion"] == "v1" and claim["kind"] == "PersistentVolumeClaim"
    assert claim["spec"]["volumeMode"] == "Filesystem"
    assert claim["status"] == {"phase": "Pending"}

    image = copy.deepcopy(obj)
    image["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"
    image["spec"]["replicas"] = 3
    assert update(strategy, image, obj) == []
    renamed = copy.deepcopy(obj)
    renamed["spec"]["serviceName"] = "other"
    assert update(strategy, renamed, obj) == [
        "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', "
        "'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and "
        "'minReadySeconds' are forbidden"]


@pytest.mark.parametrize(("spec_change", "expected"), [
    ({"podManagementPolicy": "Random"},
     "spec.podManagementPolicy: Invalid value: \"Random\": must be 'OrderedReady' or "
     "'Parallel'"),
    ({"template": template(restartPolicy="OnFailure")},
     'spec.template.spec.restartPolicy: Unsupported value: "OnFailure": supported values: '
     '"Always"'),
    ({"template": template({"app": "db"})},
     'spec.template.metadata.labels: Invalid value: map[string]string{"app":"db"}: `selector` '
     "does not match template `labels`"),
    ({"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Keep", "whenScaled": "Retain"}},
     'spec.persistentVolumeClaimRetentionPolicy.whenDeleted: Unsupported value: "Keep": '
     'supported values: "Retain", "Delete"'),
])
def test_statefulset_validation(spec_change: Obj, expected: str) -> None:
    _, _, causes = create("apps", statefulset(**spec_change))
    assert expected in causes


def daemonset(**spec: Any) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template(),
                     **spec}}


def test_daemonset_defaults_and_rules() -> None:
    strategy, obj, causes = create("apps", daemonset())
    assert causes == []
    assert obj["spec"]["updateStrategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    assert obj["spec"]["revisionHistoryLimit"] == 10
    assert "replicas" not in obj["spec"]
    relabelled = copy.deepcopy(obj)
    relabelled["spec"]["selector"] = {"matchLabels": {"app": "web", "x": "y"}}
    relabelled["spec"]["template"]["metadata"]["labels"]["x"] = "y"
    assert [c.split(": ")[0] for c in update(strategy, relabelled, obj)] == ["spec.selector"]
    _, _, causes = create("apps", daemonset(updateStrategy={
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}}))
    assert causes == ["spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 1: may not be "
                      "set when maxUnavailable is non-zero"]
    _, _, causes = create("apps", daemonset(template=template(activeDeadlineSeconds=5)))
    assert causes == ["spec.template.spec.activeDeadlineSeconds: Forbidden: "
                      "activeDeadlineSeconds in DaemonSet is not Supported"]
    missing = daemonset()
    del missing["spec"]["selector"]
    _, _, causes = create("apps", missing)
    assert causes == ['spec.template.metadata.labels: Invalid value: map[string]string{"app":'
                      '"web"}: `selector` does not match template `labels`']


def test_replication_controller_defaults_selector_and_labels_from_template() -> None:
    rc = {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc"},
          "spec": {"template": template()}}
    _, obj, causes = create("", rc)
    assert causes == []
    assert obj["spec"]["selector"] == {"app": "web"}
    assert obj["metadata"]["labels"] == {"app": "web"}
    assert obj["spec"]["replicas"] == 1
    bad = {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc"},
           "spec": {"selector": {"app": "x"}, "template": template()}}
    _, _, causes = create("", bad)
    assert causes == ['spec.template.metadata.labels: Invalid value: map[string]string{"app":'
                      '"web"}: `selector` does not match template `labels`']


def test_pod_template_defaults_validation_and_generation() -> None:
    strategy, obj, causes = create("", {"apiVersion": "v1", "kind": "PodTemplate",
                                        "metadata": {"name": "t"}, "template": template()})
    assert causes == []
    assert obj["template"]["spec"]["restartPolicy"] == "Always"
    assert obj["metadata"]["generation"] == 1
    changed = copy.deepcopy(obj)
    changed["template"]["spec"]["containers"][0]["image"] = ""
    assert update(strategy, changed, obj) == ["template.spec.containers[0].image: Required value"]
    assert changed["metadata"]["generation"] == 2


def job(**spec: Any) -> Obj:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi"},
            "spec": {"template": {"spec": {"containers": [{"name": "pi", "image": "perl:5.34"}],
                                           "restartPolicy": "Never"}}, **spec}}


def test_job_defaults_and_generated_selector() -> None:
    _, obj, causes = create("batch", job())
    assert causes == []
    spec = obj["spec"]
    assert {k: spec[k] for k in ("completions", "parallelism", "backoffLimit", "completionMode",
                                 "suspend", "podReplacementPolicy")} == {
        "completions": 1, "parallelism": 1, "backoffLimit": 6, "completionMode": "NonIndexed",
        "suspend": False, "podReplacementPolicy": "TerminatingOrFailed"}
    assert "manualSelector" not in spec
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": UID}}
    expected_labels = {"batch.kubernetes.io/controller-uid": UID,
                       "batch.kubernetes.io/job-name": "pi", "controller-uid": UID,
                       "job-name": "pi"}
    assert spec["template"]["metadata"] == {"creationTimestamp": None, "labels": expected_labels}
    assert obj["metadata"]["labels"] == expected_labels
    assert "serviceAccountName" not in spec["template"]["spec"]


def test_job_rules() -> None:
    always = job()
    del always["spec"]["template"]["spec"]["restartPolicy"]
    _, _, causes = create("batch", always)
    assert causes == ['spec.template.spec.restartPolicy: Unsupported value: "Always": supported '
                      'values: "OnFailure", "Never"']
    _, _, causes = create("batch", job(parallelism=2, completions=None))
    assert causes == []
    _, _, causes = create("batch", job(completionMode="Indexed", parallelism=2))
    assert causes == ["spec.completions: Required value: when completion mode is Indexed"]
    manual = job(manualSelector=True, selector={"matchLabels": {"app": "x"}})
    _, _, causes = create("batch", manual)
    assert causes == ["spec.template.metadata.labels: Invalid value: map[string]string(nil): "
                      "`selector` does not match template `labels`"]


def test_job_immutable_fields() -> None:
    strategy, old, _ = create("batch", job())
    new = copy.deepcopy(old)
    new["spec"]["completions"] = 3
    assert update(strategy, new, old) == [
        "spec.completions: Invalid value: 3: field is immutable"]
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "perl:5.40"
    causes = update(strategy, new, old)
    assert len(causes) == 1 and causes[0].startswith("spec.template: Invalid value: ")
    assert causes[0].endswith(": field is immutable")
    new = copy.deepcopy(old)
    new["spec"]["parallelism"] = 4
    new["spec"]["suspend"] = True
    assert update(strategy, new, old) == []
    assert new["metadata"]["generation"] == 2


def cronjob(**spec: Any) -> Obj:
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick"},
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": job()["spec"]},
                     **spec}}


def test_cronjob_defaults() -> None:
    _, obj, causes = create("batch", cronjob())
    assert causes == []
    spec = obj["spec"]
    assert {k: spec[k] for k in ("concurrencyPolicy", "suspend", "successfulJobsHistoryLimit",
                                 "failedJobsHistoryLimit")} == {
        "concurrencyPolicy": "Allow", "suspend": False, "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 1}
    assert spec["jobTemplate"]["metadata"] == {"creationTimestamp": None}
    assert spec["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"] == "ClusterFirst"
    # Upstream defaults only the pod template inside a CronJob's job template.
    assert "backoffLimit" not in spec["jobTemplate"]["spec"]


@pytest.mark.parametrize(("spec_change", "expected"), [
    ({"schedule": "* * *"},
     'spec.schedule: Invalid value: "* * *": expected exactly 5 fields, found 3: [* * *]'),
    ({"schedule": "61 * * * *"},
     'spec.schedule: Invalid value: "61 * * * *": end of range (61) above maximum (59): 61'),
    ({"schedule": ""}, "spec.schedule: Required value"),
    ({"concurrencyPolicy": "Sometimes"}, 'spec.concurrencyPolicy: Unsupported value: '
     '"Sometimes": supported values: "Allow", "Forbid", "Replace"'),
    ({"timeZone": "Mars/Olympus"},
     'spec.timeZone: Invalid value: "Mars/Olympus": unknown time zone Mars/Olympus'),
    ({"jobTemplate": {"spec": {**job()["spec"], "selector": {"matchLabels": {"a": "b"}}}}},
     'spec.jobTemplate.spec.selector: Invalid value: v1.LabelSelector{MatchLabels:'
     'map[string]string{"a":"b"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: '
     "`selector` will be auto-generated"),
])
def test_cronjob_validation(spec_change: Obj, expected: str) -> None:
    _, _, causes = create("batch", cronjob(**spec_change))
    assert expected in causes


@pytest.mark.parametrize("schedule", ["0 0 * * *", "@hourly", "0 9 * JAN-MAR MON-FRI",
                                      "*/15 0-6,22-23 1,15 * 0"])
def test_cron_schedules_accepted(schedule: str) -> None:
    assert workloads.cron_schedule_error(schedule) is None


def test_registered_kinds_track_generation_and_status() -> None:
    for group, kind in (("apps", "Deployment"), ("apps", "ReplicaSet"), ("apps", "StatefulSet"),
                        ("apps", "DaemonSet"), ("", "ReplicationController"), ("batch", "Job"),
                        ("batch", "CronJob")):
        strategy = strategy_for(group, kind)
        assert strategy.has_status and strategy.tracks_generation, kind
    assert not strategy_for("", "PodTemplate").has_status
