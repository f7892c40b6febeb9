"""NodeAffinity: nodeSelector and required node affinity (filter); preferred terms'
weights summed per node (score, weight 2, normalised to the best)."""

from __future__ import annotations

from typing import Any

import orjson

from kubi.scheduler.framework import (
    NODE_ADD,
    NODE_LABEL,
    CycleState,
    NodeCheck,
    NodeInfo,
    Plugin,
    PodInfo,
    ScoreSpec,
    Status,
    compile_node_selector_term,
    default_normalize,
    required_node_matcher,
    unresolvable,
)

ERR_REASON = "node(s) didn't match Pod's node affinity/selector"


class NodeAffinity(Plugin):
    name = "NodeAffinity"
    weight = 2
    events = frozenset({NODE_ADD, NODE_LABEL})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last: tuple[Any, set[str]] | None = None
        self.status = unresolvable(ERR_REASON)
        self.status.plugin = self.name

    def pre_filter(self, state: CycleState, pod: PodInfo) -> NodeCheck | Status | None:
        matcher = required_node_matcher(pod.spec)
        if matcher is None:
            return None
        affinity = ((pod.spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution")
        key = (self.cluster.generation(),
               orjson.dumps([pod.spec.get("nodeSelector"), affinity]))
        if self._last is not None and self._last[0] == key:
            allowed = self._last[1]
        else:
            # Decided once per distinct selector and node set: replicas share the answer.
            allowed = {node.name for node in self.cluster.node_list() if matcher(node)}
            self._last = (key, allowed)
        return NodeCheck(allowed=allowed, outside=self.status)

    def pre_score(self, state: CycleState, pod: PodInfo,
                  nodes: list[NodeInfo]) -> ScoreSpec | None:
        preferred = ((pod.spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "preferredDuringSchedulingIgnoredDuringExecution") or []
        terms = []
        for entry in preferred:
            weight = int(entry.get("weight") or 0)
            term = compile_node_selector_term(entry.get("preference") or {})
            if weight and term is not None:
                terms.append((weight, term))
        if not terms:
            return None
        scores = [sum(w for w, term in terms if term(node)) for node in nodes]
        return ScoreSpec(scores=default_normalize(scores, reverse=False))
