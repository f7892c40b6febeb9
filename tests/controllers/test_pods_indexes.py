"""The informer indexes workload controllers read instead of scanning a namespace:
the same objects as a scan would find, for owners, orphans and label selectors."""

from __future__ import annotations

from typing import Any

from kubi.api.labels import label_selector_matches, selector_is_valid
from kubi.client.informer import Cache
from kubi.controllers._pods import (
    claim_candidates,
    claim_pods,
    controlled_by,
    index_by_controller,
    index_by_labels,
    owner_reference,
    selected_by,
)


def rs(name: str, uid: str, namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "spec": {"selector": {"matchLabels": {"app": "web"}}}}


def pod(name: str, owner: dict[str, Any] | None = None, namespace: str = "default",
        **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels,
                            "uid": f"uid-{namespace}-{name}"}
    if owner is not None:
        meta["ownerReferences"] = [owner_reference(owner)]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta}


def names(found: list[dict[str, Any]]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in found)


def test_claim_candidates_are_what_a_namespace_scan_would_claim() -> None:
    mine, theirs = rs("mine", "u1"), rs("theirs", "u2")
    cache = Cache()
    index_by_controller(cache)
    index_by_controller(cache)  # a second controller asking again: harmless
    pods = [pod("owned", mine, app="web"), pod("owned-moved", mine, app="db"),
            pod("orphan", None, app="web"), pod("orphan-other", None, app="db"),
            pod("foreign", theirs, app="web"),
            pod("elsewhere", mine, "other", app="web"), pod("orphan-elsewhere", None, "other")]
    for p in pods:
        cache.put(p)
    selector = mine["spec"]["selector"]
    scanned = claim_pods(mine, selector, cache.list("default"))
    indexed = claim_pods(mine, selector, claim_candidates(cache, mine))
    assert [names(part) for part in indexed] == [names(part) for part in scanned] == [
        ["orphan"], ["owned-moved"], ["owned"]]
    assert names(controlled_by(cache, mine)) == ["owned", "owned-moved"]
    # Adoption moves a pod from the orphans to its owner.
    cache.put(pod("orphan", mine, app="web"))
    assert names(controlled_by(cache, mine)) == ["orphan", "owned", "owned-moved"]
    assert "orphan" not in names(claim_candidates(cache, theirs))


def test_selected_by_matches_a_scan_and_rejects_nothing_valid() -> None:
    cache = Cache()
    index_by_labels(cache)
    for p in [pod("a", app="web", tier="fe"), pod("b", app="web", tier="be"),
              pod("c", app="db", tier="fe"), pod("d", None, "other", app="web"),
              pod("e")]:
        cache.put(p)
    selectors: list[dict[str, Any] | None] = [
        {"matchLabels": {"app": "web"}},
        {"matchLabels": {"app": "web", "tier": "fe"}},
        {"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "NotIn", "values": ["fe"]}]},
        {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
        {"matchLabels": {"app": "nothing"}},
        {}, None]
    for selector in selectors:
        assert selector_is_valid(selector)
        scanned = [p for p in cache.list("default")
                   if label_selector_matches(selector, p["metadata"]["labels"])]
        assert names(selected_by(cache, "default", selector)) == names(scanned), selector
    assert not selector_is_valid({"matchExpressions": [{"key": "a", "operator": "In"}]})
    # Relabelled pods leave their old buckets.
    cache.put(pod("a", app="db", tier="fe"))
    assert names(selected_by(cache, "default", {"matchLabels": {"app": "web"}})) == ["b"]
