"""The scheduling framework: pod and node views, statuses and the plugin protocol.

Objects from informers are read, never copied or mutated: `PodInfo` and
`NodeInfo` pre-compute what plugins need (requests, ports, compiled selectors,
taints) once per object version, so the hot path is attribute reads.

A filter plugin answers `pre_filter(state, pod)` with a `NodeCheck`: how it judges
nodes for this pod. Judgements come in three speeds, fastest first:
- `rejected` / `allowed`: node names decided from the cache's indexes,
- `by_state`: a function of the node's resource state only (memoised per state),
- `per_node`: a call per node.
A score plugin answers `pre_score(state, pod, nodes)` with a `ScoreSpec`: either a
function of the node's resource state (memoised) or a list of final scores.
"""

from __future__ import annotations

import functools
import math
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar, Protocol

from kubi.api.labels import InvalidSelector, Matcher, compile_selector, requirement_matcher

Obj = dict[str, Any]

MAX_NODE_SCORE = 100
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024
LABEL_HOSTNAME = "kubernetes.io/hostname"
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"

# -- statuses -------------------------------------------------------------------------

SUCCESS = 0
ERROR = 1
UNSCHEDULABLE = 2
UNSCHEDULABLE_AND_UNRESOLVABLE = 3
SKIP = 4


class Status:
    """A plugin's verdict; `reasons` are the strings counted in the FitError message."""

    __slots__ = ("code", "plugin", "reasons")

    def __init__(self, code: int, *reasons: str, plugin: str = "") -> None:
        self.code = code
        self.reasons = reasons
        self.plugin = plugin

    @property
    def rejected(self) -> bool:
        return self.code in (UNSCHEDULABLE, UNSCHEDULABLE_AND_UNRESOLVABLE)

    @property
    def message(self) -> str:
        return ", ".join(self.reasons)

    def __repr__(self) -> str:
        return f"Status({self.code}, {self.reasons!r}, plugin={self.plugin!r})"


def unschedulable(*reasons: str) -> Status:
    return Status(UNSCHEDULABLE, *reasons)


def unresolvable(*reasons: str) -> Status:
    return Status(UNSCHEDULABLE_AND_UNRESOLVABLE, *reasons)


# -- cluster events (what may make a rejected pod schedulable) ------------------------------

NODE_ADD = "NodeAdd"
NODE_DELETE = "NodeDelete"
NODE_LABEL = "NodeLabelChange"
NODE_TAINT = "NodeTaintChange"  # taints, spec.unschedulable
NODE_ALLOCATABLE = "NodeAllocatableChange"
NODE_CONDITION = "NodeConditionChange"  # Ready (Kubi stands in a not-ready taint)
NODE_IMAGES = "NodeImagesChange"
ASSIGNED_POD_ADD = "AssignedPodAdd"
ASSIGNED_POD_UPDATE = "AssignedPodUpdate"
ASSIGNED_POD_DELETE = "AssignedPodDelete"
PVC_CHANGE = "PersistentVolumeClaimChange"
PV_CHANGE = "PersistentVolumeChange"
STORAGE_CLASS_CHANGE = "StorageClassChange"
NAMESPACE_CHANGE = "NamespaceChange"
UNSCHEDULABLE_TIMEOUT = "UnschedulableTimeout"

# -- quantities -----------------------------------------------------------------------

_QUANTITY = re.compile(
    r"([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?")
_SUFFIXES: dict[str, Fraction] = {
    "": Fraction(1), "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18), "Ki": Fraction(2**10), "Mi": Fraction(2**20),
    "Gi": Fraction(2**30), "Ti": Fraction(2**40), "Pi": Fraction(2**50), "Ei": Fraction(2**60)}


@functools.lru_cache(maxsize=8192)
def _parse_quantity(text: str) -> Fraction:
    found = _QUANTITY.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"quantities must match the regular expression "
                         f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {text!r}")
    number, exponent, suffix = found.groups()
    value = Fraction(number)
    if exponent:
        return value * Fraction(10) ** int(exponent[1:])
    return value * _SUFFIXES[suffix or ""]


def parse_quantity(value: Any) -> Fraction:
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(value)
    return _parse_quantity(str(value))


def quantity_value(value: Any) -> int:
    """resource.Quantity.Value(): rounded up to a whole unit."""
    return math.ceil(parse_quantity(value))


def quantity_milli(value: Any) -> int:
    """resource.Quantity.MilliValue(): rounded up to a whole milli-unit."""
    return math.ceil(parse_quantity(value) * 1000)


def _safe(parse: Callable[[Any], int], value: Any) -> int:
    try:
        return parse(value)
    except (ValueError, ZeroDivisionError):
        return 0  # the API server validates quantities; a bad one counts as nothing


# -- resources --------------------------------------------------------------------------

class Resources:
    """A vector of schedulable resources: cpu in millicores, the rest in units."""

    __slots__ = ("cpu", "ephemeral", "memory", "pods", "scalars")

    def __init__(self, cpu: int = 0, memory: int = 0, ephemeral: int = 0, pods: int = 0,
                 scalars: dict[str, int] | None = None) -> None:
        self.cpu = cpu
        self.memory = memory
        self.ephemeral = ephemeral
        self.pods = pods
        self.scalars = scalars if scalars is not None else {}

    @classmethod
    def from_list(cls, values: Mapping[str, Any] | None) -> Resources:
        out = cls()
        for name, raw in (values or {}).items():
            if name == "cpu":
                out.cpu = _safe(quantity_milli, raw)
            elif name == "memory":
                out.memory = _safe(quantity_value, raw)
            elif name == "ephemeral-storage":
                out.ephemeral = _safe(quantity_value, raw)
            elif name == "pods":
                out.pods = _safe(quantity_value, raw)
            elif is_scalar_resource(name):
                out.scalars[name] = _safe(quantity_value, raw)
        return out

    def add(self, other: Resources) -> None:
        self.cpu += other.cpu
        self.memory += other.memory
        self.ephemeral += other.ephemeral
        for name, amount in other.scalars.items():
            self.scalars[name] = self.scalars.get(name, 0) + amount

    def maximise(self, other: Resources) -> None:
        self.cpu = max(self.cpu, other.cpu)
        self.memory = max(self.memory, other.memory)
        self.ephemeral = max(self.ephemeral, other.ephemeral)
        for name, amount in other.scalars.items():
            self.scalars[name] = max(self.scalars.get(name, 0), amount)

    def copy(self) -> Resources:
        return Resources(self.cpu, self.memory, self.ephemeral, self.pods, dict(self.scalars))

    def signature(self) -> tuple[Any, ...]:
        return (self.cpu, self.memory, self.ephemeral, self.pods,
                tuple(sorted(self.scalars.items())) if self.scalars else ())


def is_scalar_resource(name: str) -> bool:
    """Extended resources, hugepages and attachable volumes (upstream IsScalarResourceName)."""
    if name.startswith(("hugepages-", "attachable-volumes-")):
        return True
    if "/" not in name:
        return False
    domain = name.split("/", 1)[0]
    return not (domain == "kubernetes.io" or domain.endswith(".kubernetes.io")) \
        and not name.startswith("requests.")


def _container_requests(container: Obj, non_zero: bool) -> Resources:
    requests = (container.get("resources") or {}).get("requests") or {}
    out = Resources.from_list(requests)
    if non_zero:
        if "cpu" not in requests:
            out.cpu = DEFAULT_MILLI_CPU_REQUEST
        if "memory" not in requests:
            out.memory = DEFAULT_MEMORY_REQUEST
    return out


def pod_requests(spec: Obj, non_zero: bool = False) -> Resources:
    """Upstream resourcehelper.PodRequests: containers (+ sidecars), max with each init
    container, plus overhead. `non_zero` fills missing cpu/memory with the scoring defaults."""
    total = Resources()
    for container in spec.get("containers") or []:
        total.add(_container_requests(container, non_zero))
    sidecars = Resources()
    init_peak = Resources()
    for container in spec.get("initContainers") or []:
        requests = _container_requests(container, non_zero)
        if container.get("restartPolicy") == "Always":
            sidecars.add(requests)
            init_peak.maximise(sidecars)
        else:
            running = requests.copy()
            running.add(sidecars)
            init_peak.maximise(running)
    total.add(sidecars)
    total.maximise(init_peak)
    overhead = spec.get("overhead")
    if overhead:
        total.add(Resources.from_list(overhead))
    return total


# -- node selector terms (node affinity) ---------------------------------------------------

def _node_requirement(expr: Obj, field_mode: bool) -> Callable[[NodeInfo], bool]:
    key = expr.get("key", "")
    operator = expr.get("operator", "")
    values = list(expr.get("values") or [])
    if field_mode:
        if key != "metadata.name" or operator not in ("In", "NotIn"):
            return lambda node: False
        names = frozenset(values)
        if operator == "In":
            return lambda node: node.name in names
        return lambda node: node.name not in names
    if operator in ("Gt", "Lt"):
        try:
            bound = int(values[0]) if len(values) == 1 else None
        except ValueError:
            bound = None
        if bound is None:
            return lambda node: False
        greater = operator == "Gt"

        def compare(node: NodeInfo) -> bool:
            try:
                actual = int(node.labels.get(key, ""))
            except ValueError:
                return False
            return actual > bound if greater else actual < bound

        return compare
    try:
        label_match = requirement_matcher(key, operator, values)
    except InvalidSelector:
        return lambda node: False
    return lambda node: label_match(node.labels)


def compile_node_selector_term(term: Obj) -> Callable[[NodeInfo], bool] | None:
    """One term: its expressions ANDed. An empty term matches nothing (None)."""
    checks = [_node_requirement(e, False) for e in term.get("matchExpressions") or []]
    checks += [_node_requirement(e, True) for e in term.get("matchFields") or []]
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]
    return lambda node: all(check(node) for check in checks)


def required_node_matcher(spec: Obj) -> Callable[[NodeInfo], bool] | None:
    """nodeSelector AND required node affinity (terms ORed); None when the pod has neither."""
    node_selector = spec.get("nodeSelector") or {}
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                 .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if not node_selector and required is None:
        return None
    selector_items = tuple(node_selector.items())
    terms: list[Callable[[NodeInfo], bool]] | None = None
    if required is not None:
        compiled = [compile_node_selector_term(t) for t in required.get("nodeSelectorTerms") or []]
        terms = [t for t in compiled if t is not None]

    def matches(node: NodeInfo) -> bool:
        labels = node.labels
        for key, value in selector_items:
            if labels.get(key) != value:
                return False
        if terms is None:
            return True
        return any(term(node) for term in terms)

    return matches


# -- taints and tolerations --------------------------------------------------------------

# -- pod affinity terms -------------------------------------------------------------------

class AffinityTerm:
    """A compiled PodAffinityTerm: which pods it selects and over which topology."""

    __slots__ = ("all_namespaces", "namespace_selector", "namespaces", "selector",
                 "topology_key", "weight")

    def __init__(self, term: Obj, pod_namespace: str, pod_labels: Mapping[str, str],
                 weight: int = 0) -> None:
        self.topology_key: str = term.get("topologyKey") or ""
        self.weight = weight
        extra: list[tuple[str, str, list[str]]] = []
        if term.get("labelSelector") is not None:
            for key in term.get("matchLabelKeys") or []:
                if key in pod_labels:
                    extra.append((key, "In", [pod_labels[key]]))
            for key in term.get("mismatchLabelKeys") or []:
                if key in pod_labels:
                    extra.append((key, "NotIn", [pod_labels[key]]))
        self.selector = compile_selector(term.get("labelSelector"), extra=extra)
        namespaces = set(term.get("namespaces") or [])
        ns_selector = term.get("namespaceSelector")
        self.all_namespaces = False
        self.namespace_selector: Matcher | None = None
        if ns_selector is not None:
            if not ns_selector.get("matchLabels") and not ns_selector.get("matchExpressions"):
                self.all_namespaces = True
            else:
                self.namespace_selector = compile_selector(ns_selector)
        elif not namespaces:
            namespaces = {pod_namespace}
        self.namespaces = frozenset(namespaces)

    def namespace_matches(self, namespace: str, namespace_labels: Mapping[str, str] | None
                          ) -> bool:
        if self.all_namespaces or namespace in self.namespaces:
            return True
        return (self.namespace_selector is not None and namespace_labels is not None
                and self.namespace_selector(namespace_labels))

    def matches(self, pod: PodInfo, namespace_labels: Callable[[str], Mapping[str, str] | None]
                ) -> bool:
        if not (self.all_namespaces or pod.namespace in self.namespaces):
            if self.namespace_selector is None:
                return False
            labels = namespace_labels(pod.namespace)
            if labels is None or not self.namespace_selector(labels):
                return False
        return self.selector(pod.labels)


def _terms(section: Obj | None, key: str, namespace: str, labels: Mapping[str, str],
           weighted: bool) -> list[AffinityTerm]:
    out: list[AffinityTerm] = []
    for entry in (section or {}).get(key) or []:
        if weighted:
            out.append(AffinityTerm(entry.get("podAffinityTerm") or {}, namespace, labels,
                                    int(entry.get("weight") or 0)))
        else:
            out.append(AffinityTerm(entry, namespace, labels))
    return out


# -- pods -----------------------------------------------------------------------------------

def normalized_image_name(name: str) -> str:
    if name.rfind(":") <= name.rfind("/"):
        name += ":latest"
    return name


class PodInfo:
    """What scheduling needs from a pod, computed once per pod version."""

    __slots__ = (
        "affinity",
        "anti_affinity",
        "creation",
        "has_affinity",
        "host_ports",
        "images",
        "key",
        "labels",
        "name",
        "namespace",
        "node_name",
        "non_zero",
        "obj",
        "preferred_affinity",
        "preferred_anti_affinity",
        "priority",
        "request_signature",
        "requests",
        "scheduler_name",
        "spec",
        "terminating",
        "tolerations",
        "uid",
    )

    def __init__(self, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        self.obj = obj
        self.spec = spec
        self.name: str = meta.get("name", "")
        self.namespace: str = meta.get("namespace", "")
        self.key = f"{self.namespace}/{self.name}"
        self.uid: str = meta.get("uid", "")
        self.labels: dict[str, str] = meta.get("labels") or {}
        self.creation: str = meta.get("creationTimestamp") or ""
        self.terminating = "deletionTimestamp" in meta
        self.node_name: str = spec.get("nodeName") or ""
        self.scheduler_name: str = spec.get("schedulerName") or "default-scheduler"
        self.priority = int(spec.get("priority") or 0)
        self.tolerations: list[Obj] = spec.get("tolerations") or []
        self.requests = pod_requests(spec)
        self.non_zero = pod_requests(spec, non_zero=True)
        req = self.requests
        self.request_signature = (req.cpu, req.memory, req.ephemeral,
                                  tuple(sorted(req.scalars.items())),
                                  self.non_zero.cpu, self.non_zero.memory)
        ports: list[tuple[str, str, int]] = []
        for container in spec.get("containers") or []:
            for port in container.get("ports") or []:
                host_port = int(port.get("hostPort") or 0)
                if host_port > 0:
                    ports.append((port.get("hostIP") or "0.0.0.0",
                                  port.get("protocol") or "TCP", host_port))
        self.host_ports = ports
        self.images = [normalized_image_name(c.get("image") or "")
                       for c in [*(spec.get("initContainers") or []),
                                 *(spec.get("containers") or [])]]
        affinity = spec.get("affinity") or {}
        pod_affinity = affinity.get("podAffinity")
        pod_anti = affinity.get("podAntiAffinity")
        required = "requiredDuringSchedulingIgnoredDuringExecution"
        preferred = "preferredDuringSchedulingIgnoredDuringExecution"
        ns, labels = self.namespace, self.labels
        self.affinity = _terms(pod_affinity, required, ns, labels, False)
        self.anti_affinity = _terms(pod_anti, required, ns, labels, False)
        self.preferred_affinity = _terms(pod_affinity, preferred, ns, labels, True)
        self.preferred_anti_affinity = _terms(pod_anti, preferred, ns, labels, True)
        self.has_affinity = bool(self.affinity or self.anti_affinity or self.preferred_affinity
                                 or self.preferred_anti_affinity)


# -- nodes -----------------------------------------------------------------------------------

_STATE_IDS: dict[tuple[Any, ...], int] = {}


def _state_id(state: tuple[Any, ...]) -> int:
    found = _STATE_IDS.get(state)
    if found is None:
        found = _STATE_IDS[state] = len(_STATE_IDS)
    return found


class NodeInfo:
    """A node and the pods on it (bound or assumed), with running totals."""

    __slots__ = (
        "affinity_pods", "allocatable", "anti_affinity_pods", "generation", "hard_taints",
        "images", "labels", "name", "node", "non_zero", "pods", "prefer_taints", "ready",
        "requested", "state_id", "taints", "unschedulable", "used_ports")

    def __init__(self, name: str) -> None:
        self.name = name
        self.node: Obj | None = None
        self.labels: dict[str, str] = {}
        self.taints: list[Obj] = []
        self.hard_taints: list[Obj] = []  # NoSchedule/NoExecute, plus a not-ready stand-in
        self.prefer_taints: list[Obj] = []
        self.unschedulable = False
        self.ready = False
        self.allocatable = Resources()
        self.requested = Resources()
        self.non_zero = Resources()
        self.pods: dict[str, PodInfo] = {}
        self.affinity_pods: dict[str, PodInfo] = {}
        self.anti_affinity_pods: dict[str, PodInfo] = {}
        self.used_ports: dict[tuple[str, int], dict[str, int]] = {}
        self.images: dict[str, int] = {}
        self.generation = 0
        self.state_id = -1

    def set_node(self, node: Obj) -> None:
        self.node = node
        meta = node.get("metadata") or {}
        spec = node.get("spec") or {}
        status = node.get("status") or {}
        self.labels = meta.get("labels") or {}
        self.taints = spec.get("taints") or []
        self.unschedulable = bool(spec.get("unschedulable"))
        self.allocatable = Resources.from_list(status.get("allocatable")
                                               or status.get("capacity"))
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"),
                     None)
        self.ready = ready is not None and ready.get("status") == "True"
        hard = [t for t in self.taints if t.get("effect") in ("NoSchedule", "NoExecute")]
        if not self.ready:
            # The node lifecycle controller would taint it; until it does, act as if it had.
            stand_in = TAINT_UNREACHABLE if ready is not None and ready.get(
                "status") == "Unknown" else TAINT_NOT_READY
            if not any(t.get("key") == stand_in for t in hard):
                hard.append({"key": stand_in, "effect": "NoSchedule"})
        self.hard_taints = hard
        self.prefer_taints = [t for t in self.taints if t.get("effect") == "PreferNoSchedule"]
        images: dict[str, int] = {}
        for image in status.get("images") or []:
            size = int(image.get("sizeBytes") or 0)
            for image_name in image.get("names") or []:
                images[normalized_image_name(image_name)] = size
        self.images = images
        self.refresh_state()

    def refresh_state(self) -> None:
        self.generation += 1
        self.state_id = _state_id((self.allocatable.signature(), self.requested.signature(),
                                   self.non_zero.cpu, self.non_zero.memory, len(self.pods)))

    def add_pod(self, pod: PodInfo) -> None:
        self.pods[pod.key] = pod
        self.requested.add(pod.requests)
        self.non_zero.cpu += pod.non_zero.cpu
        self.non_zero.memory += pod.non_zero.memory
        if pod.has_affinity:
            self.affinity_pods[pod.key] = pod
        if pod.anti_affinity:
            self.anti_affinity_pods[pod.key] = pod
        for ip, protocol, port in pod.host_ports:
            ips = self.used_ports.setdefault((protocol, port), {})
            ips[ip] = ips.get(ip, 0) + 1
        self.refresh_state()

    def remove_pod(self, key: str) -> PodInfo | None:
        pod = self.pods.pop(key, None)
        if pod is None:
            return None
        req = self.requested
        req.cpu -= pod.requests.cpu
        req.memory -= pod.requests.memory
        req.ephemeral -= pod.requests.ephemeral
        for name, amount in pod.requests.scalars.items():
            req.scalars[name] = req.scalars.get(name, 0) - amount
        self.non_zero.cpu -= pod.non_zero.cpu
        self.non_zero.memory -= pod.non_zero.memory
        self.affinity_pods.pop(key, None)
        self.anti_affinity_pods.pop(key, None)
        for ip, protocol, port in pod.host_ports:
            ips = self.used_ports.get((protocol, port))
            if ips is not None:
                ips[ip] -= 1
                if ips[ip] <= 0:
                    del ips[ip]
                if not ips:
                    del self.used_ports[(protocol, port)]
        self.refresh_state()
        return pod


# -- plugin protocol ---------------------------------------------------------------------

class CycleState(dict[str, Any]):
    """Per scheduling cycle scratch space shared by a pod's plugins."""


@dataclass
class NodeCheck:
    """How one filter plugin judges nodes for one pod (see the module docstring)."""

    rejected: Mapping[str, Status] | None = None
    allowed: set[str] | frozenset[str] | None = None
    outside: Status | None = None  # the verdict for nodes not in `allowed`
    by_state: Callable[[NodeInfo], Status | None] | None = None
    state_key: Any = None  # what besides the node state `by_state` depends on
    per_node: Callable[[NodeInfo], Status | None] | None = None


@dataclass
class ScoreSpec:
    """How one score plugin scores the feasible nodes for one pod."""

    by_state: Callable[[NodeInfo], int] | None = None
    state_key: Any = None
    scores: list[int] | None = None  # final (normalised) scores, aligned with the nodes


class Cluster(Protocol):
    """What plugins may read of the scheduler cache."""

    def node_list(self) -> list[NodeInfo]: ...

    def node(self, name: str) -> NodeInfo | None: ...

    def namespace_labels(self, namespace: str) -> Mapping[str, str] | None: ...

    def pods_in_namespace(self, namespace: str) -> Iterable[PodInfo]: ...

    def nodes_with_affinity_pods(self) -> Iterable[NodeInfo]: ...

    def nodes_with_anti_affinity_pods(self) -> Iterable[NodeInfo]: ...

    def unschedulable_nodes(self) -> Iterable[NodeInfo]: ...

    def tainted_nodes(self) -> Iterable[NodeInfo]: ...

    def nodes_with_label(self, key: str, value: str) -> set[str]: ...

    def image_node_count(self, image: str) -> int: ...

    def generation(self) -> int: ...

    def lister(self, resource: str) -> Callable[[str], Obj | None]: ...

    def list_objects(self, resource: str) -> list[Obj]: ...

    def all_namespaces(self) -> list[str]: ...

    def prefer_tainted_nodes(self) -> set[str]: ...


class Plugin:
    """Base of every plugin: a name, the cluster events that can make a rejected pod fit,
    and the extension points it implements (the defaults do nothing)."""

    name: ClassVar[str] = ""
    weight: int = 0
    # Cluster events (see queue.py) after which pods this plugin rejected may fit.
    events: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, cluster: Cluster, client: Any = None) -> None:
        self.cluster = cluster
        self.client = client  # kubi.client.rest.Client, for plugins that write (PreBind)

    def pre_filter(self, state: CycleState, pod: PodInfo) -> NodeCheck | Status | None:
        """A NodeCheck, a Status (SKIP, or a rejection of every node) or None (no filter)."""
        return None

    def pre_score(self, state: CycleState, pod: PodInfo,
                  nodes: list[NodeInfo]) -> ScoreSpec | None:
        """None: this plugin does not score this pod (upstream's Skip)."""
        return None

    async def pre_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        """Work that must be done before the Binding (e.g. volume provisioning hints)."""


def default_normalize(scores: list[int], reverse: bool) -> list[int]:
    """Upstream helper.DefaultNormalizeScore."""
    highest = max(scores, default=0)
    if highest == 0:
        return [MAX_NODE_SCORE] * len(scores) if reverse else scores
    if reverse:
        return [MAX_NODE_SCORE - MAX_NODE_SCORE * s // highest for s in scores]
    return [MAX_NODE_SCORE * s // highest for s in scores]


@dataclass
class Diagnosis:
    """Why a pod fits nowhere: per-node statuses, or one PreFilter rejection."""

    node_statuses: dict[str, Status] = field(default_factory=dict)
    unschedulable_plugins: set[str] = field(default_factory=set)
    pre_filter_message: str = ""


class FitError(Exception):
    """Upstream framework.FitError: the message is the pod's PodScheduled condition."""

    def __init__(self, pod: PodInfo, num_all_nodes: int, diagnosis: Diagnosis,
                 post_filter_message: str) -> None:
        self.pod = pod
        self.num_all_nodes = num_all_nodes
        self.diagnosis = diagnosis
        self.post_filter_message = post_filter_message
        super().__init__(self.message())

    def message(self) -> str:
        text = f"0/{self.num_all_nodes} nodes are available:"
        if self.diagnosis.pre_filter_message:
            text += f" {self.diagnosis.pre_filter_message}."
        else:
            histogram: dict[str, int] = {}
            for status in self.diagnosis.node_statuses.values():
                for reason in status.reasons:
                    histogram[reason] = histogram.get(reason, 0) + 1
            parts = sorted(f"{count} {reason}" for reason, count in histogram.items())
            if parts:
                text += f" {', '.join(parts)}."
        if self.post_filter_message:
            text += f" {self.post_filter_message}"
        return text


# -- running the plugins for one pod -------------------------------------------------------

NO_NODES_AVAILABLE = "no nodes available to schedule pods"
MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5
MAX_MEMO_ENTRIES = 200_000
_PASS: Any = object()  # a memoised "fits"


class NoNodesAvailable(Exception):
    def __init__(self) -> None:
        super().__init__(NO_NODES_AVAILABLE)


class SchedulingError(Exception):
    """A plugin failed (not a verdict about nodes): upstream's SchedulerError reason."""


def num_feasible_nodes_to_find(num_all_nodes: int, percentage: int = 0) -> int:
    """Upstream numFeasibleNodesToFind: all of a small cluster, else an adaptive share."""
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return num_all_nodes
    if percentage <= 0:
        percentage = max(50 - num_all_nodes // 125, MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    return max(num_all_nodes * percentage // 100, MIN_FEASIBLE_NODES_TO_FIND)


def post_filter_message(pod: PodInfo, num_all_nodes: int) -> str:
    """What DefaultPreemption would say; Kubi does not preempt, so preemption never helps."""
    if pod.spec.get("preemptionPolicy") == "Never":
        return "preemption: not eligible due to preemptionPolicy=Never."
    return (f"preemption: 0/{num_all_nodes} nodes are available: {num_all_nodes} "
            "Preemption is not helpful for scheduling.")


Precheck = tuple[Mapping[str, Status] | None, "set[str] | frozenset[str] | None", Status | None]


class Framework:
    """One scheduling profile: plugins in upstream's order, run for one pod at a time."""

    def __init__(self, cluster: Cluster, plugins: list[Plugin], *,
                 percentage_of_nodes_to_score: int = 0, seed: int | None = None) -> None:
        self.cluster = cluster
        self.plugins = plugins
        self.scorers = [p for p in plugins if p.weight]
        self.percentage = percentage_of_nodes_to_score
        self.next_start = 0
        self.random = random.Random(seed)
        self._memos: dict[Any, dict[int, Any]] = {}
        self._memo_entries = 0

    def plugin(self, name: str) -> Plugin | None:
        return next((p for p in self.plugins if p.name == name), None)

    def _memo(self, key: Any) -> dict[int, Any]:
        if self._memo_entries > MAX_MEMO_ENTRIES:
            self._memos.clear()
            self._memo_entries = 0
        memo = self._memos.get(key)
        if memo is None:
            memo = self._memos[key] = {}
        return memo

    def schedule(self, pod: PodInfo) -> tuple[str, CycleState]:
        """Pick a node for `pod`: the chosen node name and the cycle state for binding.
        Raises NoNodesAvailable, FitError or SchedulingError."""
        nodes = self.cluster.node_list()
        num_all = len(nodes)
        if num_all == 0:
            raise NoNodesAvailable
        state = CycleState()
        prechecks: list[Precheck] = []
        stages: list[Callable[[NodeInfo], Status | None]] = []
        single_state_stage: tuple[Callable[[NodeInfo], Status | None], Any] | None = None
        for plugin in self.plugins:
            result = plugin.pre_filter(state, pod)
            if result is None:
                continue
            if isinstance(result, Status):
                if result.code in (SUCCESS, SKIP):
                    continue
                if result.code == ERROR:
                    raise SchedulingError(f"running PreFilter plugin {plugin.name!r}: "
                                          f"{result.message}")
                diagnosis = Diagnosis(unschedulable_plugins={plugin.name},
                                      pre_filter_message=result.message)
                raise FitError(pod, num_all, diagnosis, post_filter_message(pod, num_all))
            if result.rejected or result.allowed is not None:
                check = (result.rejected or None, result.allowed, result.outside)
                if stages:  # after a per-node plugin: keep upstream's order of verdicts
                    stages.append(_precheck_stage(check))
                else:
                    prechecks.append(check)
            if result.by_state is not None:
                memo = self._memo(("filter", plugin.name, result.state_key))
                stages.append(self._memoised(memo, result.by_state))
                single_state_stage = (result.by_state, ("filter", plugin.name, result.state_key))
            if result.per_node is not None:
                stages.append(result.per_node)

        start = self.next_start % num_all
        order = nodes[start:] + nodes[:start] if start else nodes
        want = num_feasible_nodes_to_find(num_all, self.percentage)
        statuses: dict[str, Status] = {}
        feasible: list[NodeInfo] = []
        processed = 0
        if not prechecks and len(stages) == 1 and single_state_stage is not None:
            # The common pod: only resources matter. Judge nodes a batch at a time (as many
            # as are still wanted, so no more are examined than upstream would), one memo
            # lookup per node.
            judge, key = single_state_stage
            memo = self._memo(key)
            memo_get = memo.get
            position = 0
            while position < num_all and len(feasible) < want:
                batch = order[position:position + want - len(feasible)]
                position += len(batch)
                verdicts = [memo_get(node.state_id) for node in batch]
                if verdicts.count(_PASS) == len(batch):
                    feasible.extend(batch)
                    continue
                for node, verdict in zip(batch, verdicts, strict=True):
                    if verdict is None:
                        verdict = memo[node.state_id] = judge(node) or _PASS
                        self._memo_entries += 1
                    if verdict is _PASS:
                        feasible.append(node)
                    else:
                        statuses[node.name] = verdict
            processed = position
        else:
            for node in order:
                processed += 1
                name = node.name
                verdict = None
                for rejected, allowed, outside in prechecks:
                    if rejected is not None:
                        verdict = rejected.get(name)
                        if verdict is not None:
                            break
                    if allowed is not None and name not in allowed:
                        verdict = outside
                        break
                if verdict is None:
                    for stage in stages:
                        verdict = stage(node)
                        if verdict is not None:
                            break
                if verdict is None:
                    feasible.append(node)
                    if len(feasible) >= want:
                        break
                else:
                    statuses[name] = verdict
        self.next_start = (start + processed) % num_all
        if not feasible:
            diagnosis = Diagnosis(node_statuses=statuses,
                                  unschedulable_plugins={s.plugin for s in statuses.values()})
            raise FitError(pod, num_all, diagnosis, post_filter_message(pod, num_all))
        if len(feasible) == 1:
            return feasible[0].name, state
        totals = self._score(state, pod, feasible)
        return self._select(feasible, totals), state

    def _memoised(self, memo: dict[int, Any], judge: Callable[[NodeInfo], Status | None]
                  ) -> Callable[[NodeInfo], Status | None]:
        def check(node: NodeInfo) -> Status | None:
            verdict = memo.get(node.state_id)
            if verdict is None:
                verdict = memo[node.state_id] = judge(node) or _PASS
                self._memo_entries += 1
            return None if verdict is _PASS else verdict

        return check

    def _score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        by_state: list[tuple[int, Callable[[NodeInfo], int]]] = []
        state_keys: list[Any] = []
        listed: list[tuple[int, list[int]]] = []
        for plugin in self.scorers:
            spec = plugin.pre_score(state, pod, nodes)
            if spec is None:
                continue
            if spec.by_state is not None:
                by_state.append((plugin.weight, spec.by_state))
                state_keys.append((plugin.name, plugin.weight, spec.state_key))
            elif spec.scores is not None:
                listed.append((plugin.weight, spec.scores))
        if by_state:
            memo = self._memo(("score", tuple(state_keys)))
            memo_get = memo.get
            found: list[int | None] = [memo_get(node.state_id) for node in nodes]
            if None in found:
                for index, node in enumerate(nodes):
                    if found[index] is None:
                        total = memo[node.state_id] = sum(w * f(node) for w, f in by_state)
                        self._memo_entries += 1
                        found[index] = total
            totals: list[int] = found  # type: ignore[assignment]
        else:
            totals = [0] * len(nodes)
        for weight, scores in listed:
            totals = [t + weight * s for t, s in zip(totals, scores, strict=True)]
        return totals

    def _select(self, nodes: list[NodeInfo], totals: list[int]) -> str:
        """Highest total wins; ties are broken uniformly at random, as upstream's
        reservoir sampling does."""
        best = max(totals)
        tied = [index for index, total in enumerate(totals) if total == best]
        chosen = tied[0] if len(tied) == 1 else tied[self.random.randrange(len(tied))]
        return nodes[chosen].name


def _precheck_stage(check: Precheck) -> Callable[[NodeInfo], Status | None]:
    rejected, allowed, outside = check

    def stage(node: NodeInfo) -> Status | None:
        if rejected is not None:
            verdict = rejected.get(node.name)
            if verdict is not None:
                return verdict
        if allowed is not None and node.name not in allowed:
            return outside
        return None

    return stage
