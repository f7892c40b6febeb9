"""ImageLocality: nodes that already hold the pod's images score higher, scaled by how
widely each image is spread (weight 1)."""

from __future__ import annotations

from kubi.scheduler.framework import (
    MAX_NODE_SCORE,
    NODE_ADD,
    CycleState,
    NodeInfo,
    Plugin,
    PodInfo,
    ScoreSpec,
)

MB = 1024 * 1024
MIN_THRESHOLD = 23 * MB
MAX_CONTAINER_THRESHOLD = 1000 * MB


def image_score(sum_scores: int, num_containers: int) -> int:
    max_threshold = MAX_CONTAINER_THRESHOLD * num_containers
    sum_scores = min(max(sum_scores, MIN_THRESHOLD), max_threshold)
    return MAX_NODE_SCORE * (sum_scores - MIN_THRESHOLD) // (max_threshold - MIN_THRESHOLD)


class ImageLocality(Plugin):
    name = "ImageLocality"
    weight = 1
    events = frozenset({NODE_ADD})

    def pre_score(self, state: CycleState, pod: PodInfo,
                  nodes: list[NodeInfo]) -> ScoreSpec | None:
        spread = {image: self.cluster.image_node_count(image) for image in pod.images}
        if not any(spread.values()) or not pod.images:
            return None  # no node has any of them: every node scores 0
        total_nodes = len(self.cluster.node_list())
        scores = []
        for node in nodes:
            summed = 0
            for image in pod.images:
                size = node.images.get(image)
                if size is not None:
                    summed += int(size * (spread[image] / total_nodes))
            scores.append(image_score(summed, len(pod.images)))
        return ScoreSpec(scores=scores)
