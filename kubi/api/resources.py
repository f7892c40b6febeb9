"""The catalogue of API resources Kubi serves, as data.

Every other layer (discovery, routing, storage keys, kubectl short names, the
client) reads this one table, so adding a resource is adding a row here plus its
registry strategy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
NO_COLLECTION_DELETE = ("create", "delete", "get", "list", "patch", "update", "watch")
CREATE_ONLY = ("create",)


@dataclass(frozen=True)
class Subresource:
    name: str
    kind: str
    group: str = ""
    version: str = ""
    verbs: tuple[str, ...] = ("get", "patch", "update")


STATUS = Subresource("status", "")  # kind "" means: the parent's kind
SCALE = Subresource("scale", "Scale", "autoscaling", "v1")


@dataclass(frozen=True)
class ResourceInfo:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    verbs: tuple[str, ...] = ALL_VERBS
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = ()
    # Versions of one resource share storage; the first-listed version stores it.
    storage_group: str | None = None
    # Served for old manifests: every request gets this warning, as upstream's
    # deprecated versions do.
    deprecation: str = ""

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """`deployments.apps`, `pods`: the name upstream uses in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def persisted(self) -> bool:
        """Review-style resources (create-only) are computed, never stored."""
        return self.verbs != CREATE_ONLY

    @property
    def storage_prefix(self) -> str:
        group = self.group if self.storage_group is None else self.storage_group
        return f"/registry/{group}/{self.plural}/" if group else f"/registry/{self.plural}/"

    def storage_key(self, namespace: str, name: str) -> str:
        if self.namespaced:
            return f"{self.storage_prefix}{namespace}/{name}"
        return f"{self.storage_prefix}{name}"

    def subresource(self, name: str) -> Subresource | None:
        for sub in self.subresources:
            if sub.name == name:
                return sub
        return None


def _sub(name: str, kind: str, group: str = "", version: str = "v1",
         verbs: tuple[str, ...] = ("create",)) -> Subresource:
    return Subresource(name, kind, group, version, verbs)


POD_SUBRESOURCES = (
    _sub("attach", "PodAttachOptions", verbs=("create", "get")),
    _sub("binding", "Binding"),
    Subresource("ephemeralcontainers", "", verbs=("get", "patch", "update")),
    _sub("eviction", "Eviction", "policy"),
    _sub("exec", "PodExecOptions", verbs=("create", "get")),
    _sub("log", "Pod", verbs=("get",)),
    _sub("portforward", "PodPortForwardOptions", verbs=("create", "get")),
    _sub("proxy", "PodProxyOptions", verbs=("create", "delete", "get", "patch", "update")),
    STATUS,
)

RESOURCES: tuple[ResourceInfo, ...] = (
    # core/v1
    ResourceInfo("", "v1", "Binding", "bindings", True, CREATE_ONLY),
    ResourceInfo("", "v1", "ConfigMap", "configmaps", True, short_names=("cm",)),
    ResourceInfo("", "v1", "Endpoints", "endpoints", True, short_names=("ep",)),
    ResourceInfo("", "v1", "Event", "events", True, short_names=("ev",)),
    ResourceInfo("", "v1", "LimitRange", "limitranges", True, short_names=("limits",)),
    ResourceInfo("", "v1", "Namespace", "namespaces", False, NO_COLLECTION_DELETE,
                 short_names=("ns",), subresources=(_sub("finalize", "Namespace",
                                                         verbs=("update",)), STATUS)),
    ResourceInfo("", "v1", "Node", "nodes", False, short_names=("no",),
                 subresources=(_sub("proxy", "NodeProxyOptions",
                                    verbs=("create", "delete", "get", "patch", "update")),
                               STATUS)),
    ResourceInfo("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True,
                 short_names=("pvc",), subresources=(STATUS,)),
    ResourceInfo("", "v1", "PersistentVolume", "persistentvolumes", False,
                 short_names=("pv",), subresources=(STATUS,)),
    ResourceInfo("", "v1", "Pod", "pods", True, short_names=("po",), categories=("all",),
                 subresources=POD_SUBRESOURCES),
    ResourceInfo("", "v1", "PodTemplate", "podtemplates", True),
    ResourceInfo("", "v1", "ReplicationController", "replicationcontrollers", True,
                 short_names=("rc",), categories=("all",), subresources=(SCALE, STATUS)),
    ResourceInfo("", "v1", "ResourceQuota", "resourcequotas", True, short_names=("quota",),
                 subresources=(STATUS,)),
    ResourceInfo("", "v1", "Secret", "secrets", True),
    ResourceInfo("", "v1", "ServiceAccount", "serviceaccounts", True, short_names=("sa",),
                 subresources=(_sub("token", "TokenRequest", "authentication.k8s.io"),)),
    ResourceInfo("", "v1", "Service", "services", True, short_names=("svc",),
                 categories=("all",),
                 subresources=(_sub("proxy", "ServiceProxyOptions",
                                    verbs=("create", "delete", "get", "patch", "update")),
                               STATUS)),
    # apps/v1
    ResourceInfo("apps", "v1", "ControllerRevision", "controllerrevisions", True),
    ResourceInfo("apps", "v1", "DaemonSet", "daemonsets", True, short_names=("ds",),
                 categories=("all",), subresources=(STATUS,)),
    ResourceInfo("apps", "v1", "Deployment", "deployments", True, short_names=("deploy",),
                 categories=("all",), subresources=(SCALE, STATUS)),
    ResourceInfo("apps", "v1", "ReplicaSet", "replicasets", True, short_names=("rs",),
                 categories=("all",), subresources=(SCALE, STATUS)),
    ResourceInfo("apps", "v1", "StatefulSet", "statefulsets", True, short_names=("sts",),
                 categories=("all",), subresources=(SCALE, STATUS)),
    # batch/v1
    ResourceInfo("batch", "v1", "CronJob", "cronjobs", True, short_names=("cj",),
                 categories=("all",), subresources=(STATUS,)),
    ResourceInfo("batch", "v1", "Job", "jobs", True, categories=("all",),
                 subresources=(STATUS,)),
    # autoscaling
    ResourceInfo("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers",
                 True, short_names=("hpa",), categories=("all",), subresources=(STATUS,)),
    ResourceInfo("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers",
                 True, short_names=("hpa",), categories=("all",), subresources=(STATUS,)),
    # networking.k8s.io/v1
    ResourceInfo("networking.k8s.io", "v1", "IngressClass", "ingressclasses", False),
    ResourceInfo("networking.k8s.io", "v1", "Ingress", "ingresses", True,
                 short_names=("ing",), subresources=(STATUS,)),
    ResourceInfo("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True,
                 short_names=("netpol",)),
    # storage.k8s.io/v1
    ResourceInfo("storage.k8s.io", "v1", "StorageClass", "storageclasses", False,
                 short_names=("sc",)),
    # rbac.authorization.k8s.io/v1
    ResourceInfo("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding",
                 "clusterrolebindings", False),
    ResourceInfo("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    ResourceInfo("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
    ResourceInfo("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    # coordination, discovery, events, policy, scheduling
    ResourceInfo("coordination.k8s.io", "v1", "Lease", "leases", True),
    ResourceInfo("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True),
    ResourceInfo("events.k8s.io", "v1", "Event", "events", True, short_names=("ev",),
                 storage_group=""),
    ResourceInfo("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True,
                 short_names=("pdb",), subresources=(STATUS,)),
    ResourceInfo("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", False,
                 short_names=("pc",)),
    # computed, create-only reviews
    ResourceInfo("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews",
                 False, CREATE_ONLY),
    ResourceInfo("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", False,
                 CREATE_ONLY),
    ResourceInfo("authorization.k8s.io", "v1", "LocalSubjectAccessReview",
                 "localsubjectaccessreviews", True, CREATE_ONLY),
    ResourceInfo("authorization.k8s.io", "v1", "SelfSubjectAccessReview",
                 "selfsubjectaccessreviews", False, CREATE_ONLY),
    ResourceInfo("authorization.k8s.io", "v1", "SelfSubjectRulesReview",
                 "selfsubjectrulesreviews", False, CREATE_ONLY),
    ResourceInfo("authorization.k8s.io", "v1", "SubjectAccessReview",
                 "subjectaccessreviews", False, CREATE_ONLY),
    # Versions removed upstream in 1.22, still served for book-era manifests: extra
    # views of the networking.k8s.io/v1 objects (same storage, converted on the way).
    ResourceInfo("networking.k8s.io", "v1beta1", "IngressClass", "ingressclasses", False,
                 storage_group="networking.k8s.io",
                 deprecation="networking.k8s.io/v1beta1 IngressClass is deprecated in v1.19+, "
                             "unavailable in v1.22+; use networking.k8s.io/v1 IngressClass"),
    ResourceInfo("networking.k8s.io", "v1beta1", "Ingress", "ingresses", True,
                 short_names=("ing",), subresources=(STATUS,),
                 storage_group="networking.k8s.io",
                 deprecation="networking.k8s.io/v1beta1 Ingress is deprecated in v1.19+, "
                             "unavailable in v1.22+; use networking.k8s.io/v1 Ingress"),
    # No short name here: kubectl would warn that `ing` is ambiguous across groups.
    ResourceInfo("extensions", "v1beta1", "Ingress", "ingresses", True,
                 subresources=(STATUS,),
                 storage_group="networking.k8s.io",
                 deprecation="extensions/v1beta1 Ingress is deprecated in v1.14+, "
                             "unavailable in v1.22+; use networking.k8s.io/v1 Ingress"),
)

# Preferred version first, as upstream's discovery lists them.
GROUP_VERSIONS: dict[str, tuple[str, ...]] = {}
for _r in RESOURCES:
    _versions = GROUP_VERSIONS.setdefault(_r.group, ())
    if _r.version not in _versions:
        GROUP_VERSIONS[_r.group] = (*_versions, _r.version)


@dataclass
class Catalogue:
    """Lookups over RESOURCES by the keys the API server and clients use."""

    resources: tuple[ResourceInfo, ...] = RESOURCES
    _by_path: dict[tuple[str, str, str], ResourceInfo] = field(default_factory=dict)
    _by_kind: dict[tuple[str, str], ResourceInfo] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for r in self.resources:
            self._by_path[(r.group, r.version, r.plural)] = r
            self._by_kind[(r.api_version, r.kind)] = r

    def by_path(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        return self._by_path.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceInfo | None:
        return self._by_kind.get((api_version, kind))

    def group_versions(self) -> dict[str, tuple[str, ...]]:
        return GROUP_VERSIONS

    def in_group_version(self, group: str, version: str) -> list[ResourceInfo]:
        return [r for r in self.resources if r.group == group and r.version == version]


CATALOGUE = Catalogue()
