"""The default plugins, in upstream's default profile order, with upstream's weights."""

from __future__ import annotations

from typing import Any

from kubi.scheduler.framework import Cluster, Plugin
from kubi.scheduler.plugins.imagelocality import ImageLocality
from kubi.scheduler.plugins.interpodaffinity import InterPodAffinity
from kubi.scheduler.plugins.nodeaffinity import NodeAffinity
from kubi.scheduler.plugins.nodename import NodeName
from kubi.scheduler.plugins.nodeports import NodePorts
from kubi.scheduler.plugins.noderesources import NodeResourcesBalancedAllocation, NodeResourcesFit
from kubi.scheduler.plugins.nodeunschedulable import NodeUnschedulable
from kubi.scheduler.plugins.podtopologyspread import PodTopologySpread
from kubi.scheduler.plugins.tainttoleration import TaintToleration
from kubi.scheduler.plugins.volumebinding import VolumeBinding
from kubi.scheduler.plugins.volumezone import VolumeZone

DEFAULT_PLUGINS: list[type[Plugin]] = [
    NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit,
    VolumeBinding, VolumeZone, PodTopologySpread, InterPodAffinity,
    NodeResourcesBalancedAllocation, ImageLocality,
]


def default_plugins(cluster: Cluster, client: Any = None) -> list[Plugin]:
    return [cls(cluster, client) for cls in DEFAULT_PLUGINS]
