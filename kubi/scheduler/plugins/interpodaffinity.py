"""InterPodAffinity: required pod affinity / anti-affinity by topologyKey, and existing
pods' required anti-affinity towards the incoming pod (filter); preferred terms of the
pod and of existing pods, plus existing pods' required affinity (score, weight 2)."""

from __future__ import annotations

from collections.abc import Iterable

from kubi.scheduler.framework import (
    ASSIGNED_POD_ADD,
    ASSIGNED_POD_DELETE,
    ASSIGNED_POD_UPDATE,
    MAX_NODE_SCORE,
    NAMESPACE_CHANGE,
    NODE_ADD,
    NODE_LABEL,
    AffinityTerm,
    CycleState,
    NodeCheck,
    NodeInfo,
    Plugin,
    PodInfo,
    ScoreSpec,
    Status,
    unresolvable,
    unschedulable,
)

ERR_AFFINITY = "node(s) didn't match pod affinity rules"
ERR_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
ERR_EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
HARD_POD_AFFINITY_WEIGHT = 1

Pair = tuple[str, str]


class InterPodAffinity(Plugin):
    name = "InterPodAffinity"
    weight = 2
    events = frozenset({NODE_ADD, NODE_LABEL, ASSIGNED_POD_ADD, ASSIGNED_POD_UPDATE,
                        ASSIGNED_POD_DELETE, NAMESPACE_CHANGE})

    def _candidates(self, terms: list[AffinityTerm]) -> Iterable[PodInfo]:
        """Pods that some term could select: those in the terms' namespaces."""
        cluster = self.cluster
        if any(t.all_namespaces or t.namespace_selector is not None for t in terms):
            namespaces: Iterable[str] = cluster.all_namespaces()
        else:
            namespaces = {ns for t in terms for ns in t.namespaces}
        for namespace in namespaces:
            yield from cluster.pods_in_namespace(namespace)

    def _matches(self, term: AffinityTerm, pod: PodInfo) -> bool:
        return term.matches(pod, self.cluster.namespace_labels)

    def pre_filter(self, state: CycleState, pod: PodInfo) -> NodeCheck | Status | None:
        cluster = self.cluster
        existing_anti: dict[Pair, int] = {}
        for node in cluster.nodes_with_anti_affinity_pods():
            for other in node.anti_affinity_pods.values():
                for term in other.anti_affinity:
                    value = node.labels.get(term.topology_key)
                    if value is not None and self._matches(term, pod):
                        pair = (term.topology_key, value)
                        existing_anti[pair] = existing_anti.get(pair, 0) + 1
        if not existing_anti and not pod.affinity and not pod.anti_affinity:
            return None
        affinity_counts: dict[Pair, int] = {}
        anti_counts: dict[Pair, int] = {}
        if pod.affinity or pod.anti_affinity:
            for other in self._candidates([*pod.affinity, *pod.anti_affinity]):
                host = cluster.node(other.node_name)
                if host is None:
                    continue
                node = host
                if pod.affinity and all(self._matches(t, other) for t in pod.affinity):
                    for term in pod.affinity:
                        value = node.labels.get(term.topology_key)
                        if value is not None:
                            pair = (term.topology_key, value)
                            affinity_counts[pair] = affinity_counts.get(pair, 0) + 1
                for term in pod.anti_affinity:
                    value = node.labels.get(term.topology_key)
                    if value is not None and self._matches(term, other):
                        pair = (term.topology_key, value)
                        anti_counts[pair] = anti_counts.get(pair, 0) + 1
        self_affine = bool(pod.affinity) and all(self._matches(t, pod) for t in pod.affinity)
        affinity_failed = unresolvable(ERR_AFFINITY)
        anti_failed = unschedulable(ERR_ANTI_AFFINITY)
        existing_failed = unschedulable(ERR_EXISTING_ANTI_AFFINITY)
        for status in (affinity_failed, anti_failed, existing_failed):
            status.plugin = self.name
        affinity_terms = pod.affinity
        anti_terms = pod.anti_affinity

        def check(node: NodeInfo) -> Status | None:
            labels = node.labels
            if affinity_terms:
                pods_exist = True
                for term in affinity_terms:
                    value = labels.get(term.topology_key)
                    if value is None:
                        return affinity_failed
                    if affinity_counts.get((term.topology_key, value), 0) <= 0:
                        pods_exist = False
                # The first of a group of pods with affinity to each other may go anywhere.
                if not pods_exist and not (not affinity_counts and self_affine):
                    return affinity_failed
            for term in anti_terms:
                value = labels.get(term.topology_key)
                if value is not None and anti_counts.get((term.topology_key, value), 0) > 0:
                    return anti_failed
            if existing_anti:
                for pair in labels.items():
                    if existing_anti.get(pair, 0) > 0:
                        return existing_failed
            return None

        return NodeCheck(per_node=check)

    def pre_score(self, state: CycleState, pod: PodInfo,
                  nodes: list[NodeInfo]) -> ScoreSpec | None:
        cluster = self.cluster
        has_preferred = bool(pod.preferred_affinity or pod.preferred_anti_affinity)
        scores_by_pair: dict[Pair, int] = {}

        def add(term: AffinityTerm, node: NodeInfo, weight: int) -> None:
            value = node.labels.get(term.topology_key)
            if value is not None:
                pair = (term.topology_key, value)
                scores_by_pair[pair] = scores_by_pair.get(pair, 0) + weight

        if has_preferred:
            for other in self._candidates([*pod.preferred_affinity,
                                           *pod.preferred_anti_affinity]):
                node = cluster.node(other.node_name)
                if node is None:
                    continue
                for term in pod.preferred_affinity:
                    if self._matches(term, other):
                        add(term, node, term.weight)
                for term in pod.preferred_anti_affinity:
                    if self._matches(term, other):
                        add(term, node, -term.weight)
        # Existing pods' own terms towards the incoming pod (symmetry).
        for node in cluster.nodes_with_affinity_pods():
            for other in node.affinity_pods.values():
                for term in other.affinity:
                    if self._matches(term, pod):
                        add(term, node, HARD_POD_AFFINITY_WEIGHT)
                for term in other.preferred_affinity:
                    if self._matches(term, pod):
                        add(term, node, term.weight)
                for term in other.preferred_anti_affinity:
                    if self._matches(term, pod):
                        add(term, node, -term.weight)
        if not scores_by_pair:
            return None
        raw = [sum(scores_by_pair.get(pair, 0) for pair in node.labels.items())
               for node in nodes]
        lowest, highest = min(raw), max(raw)
        spread = highest - lowest
        if spread == 0:
            return ScoreSpec(scores=[0] * len(nodes))
        return ScoreSpec(scores=[int(MAX_NODE_SCORE * ((s - lowest) / spread)) for s in raw])
