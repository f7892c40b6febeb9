"""TaintToleration: NoSchedule/NoExecute taints must be tolerated (filter); fewer
untolerated PreferNoSchedule taints score higher (weight 3, reversed normalisation)."""

from __future__ import annotations

from typing import Any

import orjson

from kubi.api.taints import tolerated
from kubi.scheduler.framework import (
    NODE_ADD,
    NODE_CONDITION,
    NODE_TAINT,
    CycleState,
    NodeCheck,
    NodeInfo,
    Obj,
    Plugin,
    PodInfo,
    ScoreSpec,
    Status,
    default_normalize,
    unresolvable,
)


def untolerated_message(taint: Obj) -> str:
    return f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value', '')}}}"


class TaintToleration(Plugin):
    name = "TaintToleration"
    weight = 3
    events = frozenset({NODE_ADD, NODE_TAINT, NODE_CONDITION})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last: tuple[Any, dict[str, Status]] | None = None

    def pre_filter(self, state: CycleState, pod: PodInfo) -> NodeCheck | Status | None:
        tainted = self.cluster.tainted_nodes()
        if not tainted:
            return None
        key = (self.cluster.generation(), orjson.dumps(pod.tolerations))
        if self._last is not None and self._last[0] == key:
            rejected = self._last[1]
        else:
            rejected = {}
            for node in tainted:
                for taint in node.hard_taints:
                    if not tolerated(pod.tolerations, taint):
                        status = unresolvable(untolerated_message(taint))
                        status.plugin = self.name
                        rejected[node.name] = status
                        break
            self._last = (key, rejected)
        return NodeCheck(rejected=rejected) if rejected else None

    def pre_score(self, state: CycleState, pod: PodInfo,
                  nodes: list[NodeInfo]) -> ScoreSpec | None:
        if not self.cluster.prefer_tainted_nodes():
            return None  # every node scores the same
        preferred = [t for t in pod.tolerations
                     if (t.get("effect") or "PreferNoSchedule") == "PreferNoSchedule"]
        counts = [sum(1 for taint in node.prefer_taints if not tolerated(preferred, taint))
                  for node in nodes]
        return ScoreSpec(scores=default_normalize(counts, reverse=True))
