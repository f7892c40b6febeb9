"""The shared workload-controller helpers in kubi.controllers._pods."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from kubi.api import meta as m
from kubi.api.labels import InvalidSelector, label_selector_matches, selector_to_string
from kubi.controllers._pods import (
    Expectations,
    adopt_patch,
    claim_pods,
    controller_ref,
    is_owned_by,
    is_pod_active,
    is_pod_available,
    is_pod_ready,
    owner_reference,
    pod_deletion_rank,
    pod_from_template,
    release_patch,
    seconds_until_available,
)

Obj = dict[str, Any]
NOW = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)


def ago(seconds: float) -> str:
    return m.rfc3339(NOW - datetime.timedelta(seconds=seconds))


def owner(name: str = "echo", uid: str = "owner-uid", deleting: bool = False) -> Obj:
    meta: Obj = {"name": name, "namespace": "ns", "uid": uid}
    if deleting:
        meta["deletionTimestamp"] = ago(0)
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta}


def pod(name: str, *, phase: str = "Pending", node: str = "", ready_since: str | None = None,
        restarts: int = 0, created: str | None = None, labels: dict[str, str] | None = None,
        owners: list[Obj] | None = None, deleting: bool = False, cost: str | None = None
        ) -> Obj:
    meta: Obj = {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                 "labels": labels if labels is not None else {"app": "echo"}}
    if created:
        meta["creationTimestamp"] = created
    if owners:
        meta["ownerReferences"] = owners
    if deleting:
        meta["deletionTimestamp"] = ago(0)
    if cost is not None:
        meta["annotations"] = {"controller.kubernetes.io/pod-deletion-cost": cost}
    conditions = ([{"type": "Ready", "status": "True", "lastTransitionTime": ready_since}]
                  if ready_since else [{"type": "Ready", "status": "False"}])
    return {"metadata": meta, "spec": {"nodeName": node} if node else {},
            "status": {"phase": phase, "conditions": conditions,
                       "containerStatuses": [{"name": "c", "restartCount": restarts}]}}


def names(pods: list[Obj]) -> list[str]:
    return [p["metadata"]["name"] for p in pods]


def test_owner_references() -> None:
    ref = owner_reference(owner())
    assert ref == {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "echo",
                   "uid": "owner-uid", "controller": True, "blockOwnerDeletion": True}
    assert owner_reference(owner(), block=False)["blockOwnerDeletion"] is False
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "c1"}
    owned = pod("p", owners=[other, ref])
    assert controller_ref(owned) == ref
    assert controller_ref(pod("p", owners=[other])) is None
    assert controller_ref({}) is None
    assert is_owned_by(owned, owner())
    assert not is_owned_by(owned, owner(uid="someone-else"))


def test_pod_state() -> None:
    assert is_pod_active(pod("p"))
    assert not is_pod_active(pod("p", phase="Succeeded"))
    assert not is_pod_active(pod("p", phase="Failed"))
    assert not is_pod_active(pod("p", phase="Running", deleting=True))
    assert is_pod_ready(pod("p", ready_since=ago(1)))
    assert not is_pod_ready(pod("p"))
    assert not is_pod_ready({})

    fresh = pod("p", ready_since=ago(3))
    assert is_pod_available(fresh, 0, NOW)
    assert not is_pod_available(fresh, 5, NOW)
    assert is_pod_available(fresh, 2, NOW)
    assert not is_pod_available(pod("p"), 0, NOW)
    assert seconds_until_available(fresh, 5, NOW) == pytest.approx(2.0)
    assert seconds_until_available(fresh, 2, NOW) is None
    assert seconds_until_available(pod("p"), 5, NOW) is None


def test_pod_from_template() -> None:
    template: Obj = {
        "metadata": {"labels": {"app": "echo"}, "annotations": {"a": "b"},
                     "finalizers": ["example.com/f"], "name": "ignored"},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    made = pod_from_template(template, owner())
    assert made == {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "echo-", "namespace": "ns", "labels": {"app": "echo"},
                     "annotations": {"a": "b"}, "finalizers": ["example.com/f"],
                     "ownerReferences": [owner_reference(owner())]},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    # A copy: changing the pod leaves the template alone.
    made["spec"]["containers"][0]["image"] = "other"
    made["metadata"]["labels"]["x"] = "y"
    assert template["spec"]["containers"][0]["image"] == "nginx"
    assert template["metadata"]["labels"] == {"app": "echo"}

    assert pod_from_template(template, owner(), "web-0")["metadata"]["generateName"] == "web-0"
    bare = pod_from_template(template, owner(), controller=False)
    assert "ownerReferences" not in bare["metadata"]
    long_name = "x" * 253
    assert pod_from_template(template, owner(long_name))["metadata"][
        "generateName"] == long_name


def test_deletion_rank_follows_upstream_order() -> None:
    candidates = [
        pod("running-ready-old", phase="Running", node="n1", ready_since=ago(3600)),
        pod("running-ready-new", phase="Running", node="n1", ready_since=ago(10)),
        pod("running-notready", phase="Running", node="n1"),
        pod("unknown", phase="Unknown", node="n1"),
        pod("pending-assigned", node="n1"),
        pod("unassigned", phase="Running"),
    ]
    assert names(pod_deletion_rank(reversed(candidates))) == [
        "unassigned", "pending-assigned", "unknown", "running-notready",
        "running-ready-new", "running-ready-old"]


def test_deletion_rank_tie_breakers() -> None:
    restarts = [pod("calm", node="n", restarts=0), pod("crashy", node="n", restarts=4)]
    assert names(pod_deletion_rank(restarts)) == ["crashy", "calm"]
    ages = [pod("old", node="n", created=ago(7200)), pod("new", node="n", created=ago(5)),
            pod("unknown-age", node="n")]
    assert names(pod_deletion_rank(ages)) == ["unknown-age", "new", "old"]
    costs = [pod("precious", node="n", cost="100"), pod("cheap", node="n", cost="-5"),
             pod("default", node="n", cost="not-a-number")]
    assert names(pod_deletion_rank(costs)) == ["cheap", "default", "precious"]
    # Doubled up: the pod sharing its node with more related pods goes first.
    crowded = [pod("alone", node="a"), pod("crowded", node="b")]
    related = [*crowded, pod("neighbour", node="b")]
    assert names(pod_deletion_rank(crowded, related)) == ["crowded", "alone"]


def test_deletion_rank_logarithmic_buckets() -> None:
    # Created 1000s and 1010s ago fall into one power-of-two bucket: uid decides.
    similar = [pod("b", node="n", created=ago(1000)), pod("a", node="n", created=ago(1010))]
    assert names(pod_deletion_rank(similar, now=NOW)) == ["a", "b"]
    # Without `now`, exact times compare: the newer goes first.
    assert names(pod_deletion_rank(similar)) == ["b", "a"]
    far = [pod("a", node="n", created=ago(100000)), pod("b", node="n", created=ago(10))]
    assert names(pod_deletion_rank(far, now=NOW)) == ["b", "a"]


def test_label_selector_matches() -> None:
    labels = {"app": "echo", "tier": "web"}
    assert label_selector_matches({}, labels)
    assert not label_selector_matches(None, labels)
    assert label_selector_matches({"matchLabels": {"app": "echo"}}, labels)
    assert not label_selector_matches({"matchLabels": {"app": "other"}}, labels)
    expressions = [
        ({"key": "tier", "operator": "In", "values": ["web", "api"]}, True),
        ({"key": "tier", "operator": "In", "values": ["api"]}, False),
        ({"key": "missing", "operator": "In", "values": ["x"]}, False),
        ({"key": "tier", "operator": "NotIn", "values": ["api"]}, True),
        ({"key": "tier", "operator": "NotIn", "values": ["web"]}, False),
        ({"key": "missing", "operator": "NotIn", "values": ["x"]}, True),
        ({"key": "app", "operator": "Exists"}, True),
        ({"key": "missing", "operator": "Exists"}, False),
        ({"key": "missing", "operator": "DoesNotExist"}, True),
        ({"key": "app", "operator": "DoesNotExist"}, False),
    ]
    for expression, expected in expressions:
        assert label_selector_matches({"matchExpressions": [expression]}, labels) is expected, (
            expression)
    assert label_selector_matches({"matchLabels": {"app": "echo"}}, None) is False


@pytest.mark.parametrize("expression", [
    {"key": "a", "operator": "In", "values": []},
    {"key": "a", "operator": "NotIn"},
    {"key": "a", "operator": "Exists", "values": ["x"]},
    {"key": "a", "operator": "Equals", "values": ["x"]},
    {"key": "", "operator": "Exists"},
])
def test_invalid_selectors_are_rejected(expression: Obj) -> None:
    with pytest.raises(InvalidSelector):
        label_selector_matches({"matchExpressions": [expression]}, {"a": "x"})
    with pytest.raises(InvalidSelector):
        selector_to_string({"matchExpressions": [expression]})


def test_selector_to_string() -> None:
    assert selector_to_string({"matchLabels": {"tier": "web", "app": "echo"}, "matchExpressions": [
        {"key": "env", "operator": "NotIn", "values": ["prod", "dev"]},
        {"key": "gpu", "operator": "DoesNotExist"},
        {"key": "zone", "operator": "Exists"}]}) == (
        "app=echo,env notin (dev,prod),!gpu,tier=web,zone")
    assert selector_to_string(None) == ""
    assert selector_to_string({}) == ""


def test_claim_pods() -> None:
    me = owner()
    mine = owner_reference(me)
    theirs = owner_reference(owner("other", uid="other-uid"))
    selector = {"matchLabels": {"app": "echo"}}
    pods = [
        pod("owned", owners=[mine]),
        pod("owned-moved", owners=[mine], labels={"app": "moved"}),
        pod("orphan"),
        pod("orphan-other-labels", labels={"app": "other"}),
        pod("orphan-deleting", deleting=True),
        pod("someone-elses", owners=[theirs]),
    ]
    foreign = pod("elsewhere")
    foreign["metadata"]["namespace"] = "other-ns"
    adopt, release, owned = claim_pods(me, selector, [*pods, foreign])
    assert names(adopt) == ["orphan"]
    assert names(release) == ["owned-moved"]
    assert names(owned) == ["owned"]

    # An owner being deleted neither adopts nor releases.
    adopt, release, owned = claim_pods(owner(deleting=True), selector, pods)
    assert (names(adopt), names(release), names(owned)) == ([], [], ["owned"])

    # Extra conditions (as a DaemonSet's node check) narrow the match.
    adopt, release, owned = claim_pods(me, selector, pods,
                                       matches=lambda p: p["metadata"]["name"] != "owned")
    assert (names(adopt), names(release), names(owned)) == (
        ["orphan"], ["owned", "owned-moved"], [])

    target = pod("p")
    assert adopt_patch(me, target) == {"metadata": {"ownerReferences": [mine],
                                                    "uid": "uid-p"}}
    assert release_patch(me, target) == {"metadata": {
        "ownerReferences": [{"$patch": "delete", "uid": "owner-uid"}], "uid": "uid-p"}}


def test_expectations() -> None:
    clock = [0.0]
    exp = Expectations(timeout=300, clock=lambda: clock[0])
    assert exp.satisfied("ns/rs")  # nothing expected yet

    exp.expect_creations("ns/rs", 2)
    assert not exp.satisfied("ns/rs")
    exp.creation_observed("ns/rs")
    assert not exp.satisfied("ns/rs") and exp.pending("ns/rs") == (1, 0)
    exp.lower("ns/rs", adds=1)  # a create failed: it will never be observed
    assert exp.satisfied("ns/rs")

    exp.expect_deletions("ns/rs", ["ns/a", "ns/b"])
    assert exp.pending("ns/rs") == (0, 2)
    exp.deletion_observed("ns/rs", "ns/a")
    exp.deletion_observed("ns/rs", "ns/a")  # terminating, then gone: counted once
    exp.deletion_observed("ns/rs", "ns/unrelated")
    assert exp.pending("ns/rs") == (0, 1) and not exp.satisfied("ns/rs")
    exp.deletion_observed("ns/rs", "ns/b")
    assert exp.satisfied("ns/rs")

    exp.expect_creations("ns/rs", 3)
    clock[0] = 299
    assert not exp.satisfied("ns/rs")
    clock[0] = 301  # lost events must not wedge the controller
    assert exp.satisfied("ns/rs")

    exp.expect("ns/rs", 1, ["ns/c"])
    assert exp.pending("ns/rs") == (1, 1)
    exp.creation_observed("ns/rs")
    exp.deletion_observed("ns/rs", "ns/c")
    assert exp.satisfied("ns/rs")

    exp.expect_creations("ns/rs", 1)
    exp.delete("ns/rs")
    assert exp.satisfied("ns/rs") and exp.pending("ns/rs") == (0, 0)
