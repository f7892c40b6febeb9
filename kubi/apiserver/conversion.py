"""Conversion between the served versions of one stored resource.

Objects are stored in the version they were written in; a read in another
served version converts. Most resources have one version, so this is mostly the
identity; Events (core/v1 <-> events.k8s.io/v1), HorizontalPodAutoscalers
(autoscaling/v1 <-> v2) and the pre-1.22 Ingress versions (extensions/v1beta1,
networking.k8s.io/v1beta1 <-> networking.k8s.io/v1) differ in field layout.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from kubi.api.resources import ResourceInfo

Obj = dict[str, Any]
Converter = Callable[[Obj], Obj]


def _core_event_to_events_v1(obj: Obj) -> Obj:
    out: Obj = {"metadata": obj.get("metadata", {})}
    mapping = {"involvedObject": "regarding", "related": "related", "reason": "reason",
               "message": "note", "type": "type", "action": "action",
               "reportingComponent": "reportingController",
               "reportingInstance": "reportingInstance", "eventTime": "eventTime"}
    for src, dst in mapping.items():
        if obj.get(src) not in (None, ""):
            out[dst] = obj[src]
    if obj.get("series"):
        out["series"] = obj["series"]
    source = obj.get("source") or {}
    if source.get("component"):
        out["deprecatedSource"] = source
    for src, dst in (("firstTimestamp", "deprecatedFirstTimestamp"),
                     ("lastTimestamp", "deprecatedLastTimestamp"),
                     ("count", "deprecatedCount")):
        if obj.get(src) not in (None, ""):
            out[dst] = obj[src]
    return out


def _events_v1_to_core_event(obj: Obj) -> Obj:
    out: Obj = {"metadata": obj.get("metadata", {})}
    mapping = {"regarding": "involvedObject", "related": "related", "reason": "reason",
               "note": "message", "type": "type", "action": "action",
               "reportingController": "reportingComponent",
               "reportingInstance": "reportingInstance", "eventTime": "eventTime",
               "deprecatedSource": "source", "deprecatedFirstTimestamp": "firstTimestamp",
               "deprecatedLastTimestamp": "lastTimestamp", "deprecatedCount": "count"}
    for src, dst in mapping.items():
        if obj.get(src) not in (None, ""):
            out[dst] = obj[src]
    out.setdefault("involvedObject", {})
    out.setdefault("source", {})
    if obj.get("series"):
        out["series"] = obj["series"]
    return out


def _hpa_v2_to_v1(obj: Obj) -> Obj:
    out: Obj = {"metadata": obj.get("metadata", {})}
    spec = obj.get("spec") or {}
    v1spec: Obj = {k: spec[k] for k in ("scaleTargetRef", "minReplicas", "maxReplicas")
                   if k in spec}
    for metric in spec.get("metrics") or []:
        resource = metric.get("resource") or {}
        target = resource.get("target") or {}
        if resource.get("name") == "cpu" and "averageUtilization" in target:
            v1spec["targetCPUUtilizationPercentage"] = target["averageUtilization"]
    out["spec"] = v1spec
    status = obj.get("status") or {}
    out["status"] = {k: status[k] for k in ("observedGeneration", "lastScaleTime",
                                            "currentReplicas", "desiredReplicas")
                     if k in status}
    return out


def _hpa_v1_to_v2(obj: Obj) -> Obj:
    out: Obj = {"metadata": obj.get("metadata", {})}
    spec = dict(obj.get("spec") or {})
    cpu = spec.pop("targetCPUUtilizationPercentage", None)
    if cpu is not None:
        spec["metrics"] = [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}]
    out["spec"] = spec
    if obj.get("status"):
        out["status"] = dict(obj["status"])
    return out


# -- Ingress: networking.k8s.io/v1 <-> the v1beta1 versions removed in 1.22 ----------
#
# v1beta1 names a service backend flat (`serviceName`, `servicePort` int-or-string)
# and the default backend `backend`; v1 nests it (`service.name`, `service.port.number`
# or `.name`) and says `defaultBackend`. Everything else has the same JSON.

INGRESS_V1 = "networking.k8s.io/v1"
INGRESS_V1BETA1_VERSIONS = ("extensions/v1beta1", "networking.k8s.io/v1beta1")
# v1beta1 defaulted a missing pathType to this; v1 requires one.
DEFAULT_PATH_TYPE = "ImplementationSpecific"


def _ingress_backend_v1beta1_to_v1(backend: Any) -> Any:
    if not isinstance(backend, dict):
        return backend
    out: Obj = {k: v for k, v in backend.items() if k not in ("serviceName", "servicePort")}
    name = backend.get("serviceName")
    port = backend.get("servicePort")
    # As upstream: any sign of a service (a name, a non-zero or named port) makes one.
    if name or isinstance(port, str) or port:
        service: Obj = {"name": name or ""}
        if isinstance(port, str):
            service["port"] = {"name": port} if port else {}
        elif port:
            service["port"] = {"number": port}
        else:
            service["port"] = {}
        out["service"] = service
    return out


def _ingress_backend_v1_to_v1beta1(backend: Any) -> Any:
    if not isinstance(backend, dict):
        return backend
    out: Obj = {k: v for k, v in backend.items() if k != "service"}
    service = backend.get("service")
    port_value: Any = 0
    if isinstance(service, dict):
        if service.get("name"):
            out["serviceName"] = service["name"]
        port = service.get("port")
        if isinstance(port, dict):
            port_value = port.get("name") or port.get("number") or 0
    # intstr.IntOrString is a struct in Go: upstream always wrote it, 0 when unset.
    out["servicePort"] = port_value
    return out


def _convert_ingress_paths(spec: Obj, convert_backend: Converter,
                           default_path_type: bool) -> None:
    rules = spec.get("rules")
    if not isinstance(rules, list):
        return
    new_rules: list[Any] = []
    for rule in rules:
        http = rule.get("http") if isinstance(rule, dict) else None
        paths = http.get("paths") if isinstance(http, dict) else None
        if not (isinstance(rule, dict) and isinstance(http, dict)
                and isinstance(paths, list)):
            new_rules.append(rule)
            continue
        new_paths: list[Any] = []
        for item in paths:
            if isinstance(item, dict):
                item = dict(item)
                if "backend" in item:
                    item["backend"] = convert_backend(item["backend"])
                if default_path_type and item.get("pathType") is None:
                    item["pathType"] = DEFAULT_PATH_TYPE
            new_paths.append(item)
        new_rules.append({**rule, "http": {**http, "paths": new_paths}})
    spec["rules"] = new_rules


def _ingress_v1beta1_to_v1(obj: Obj) -> Obj:
    out = copy.deepcopy(obj)
    spec = out.get("spec")
    if isinstance(spec, dict):
        if "backend" in spec:
            spec["defaultBackend"] = _ingress_backend_v1beta1_to_v1(spec.pop("backend"))
        _convert_ingress_paths(spec, _ingress_backend_v1beta1_to_v1, default_path_type=True)
    return out


def _ingress_v1_to_v1beta1(obj: Obj) -> Obj:
    out = copy.deepcopy(obj)
    spec = out.get("spec")
    if isinstance(spec, dict):
        if "defaultBackend" in spec:
            spec["backend"] = _ingress_backend_v1_to_v1beta1(spec.pop("defaultBackend"))
        _convert_ingress_paths(spec, _ingress_backend_v1_to_v1beta1, default_path_type=False)
    return out


def _same_shape(obj: Obj) -> Obj:
    """Versions whose JSON is identical (the two v1beta1 Ingresses, IngressClass)."""
    return copy.deepcopy(obj)


_CONVERTERS: dict[tuple[str, str], Converter] = {
    ("v1", "events.k8s.io/v1"): _core_event_to_events_v1,
    ("events.k8s.io/v1", "v1"): _events_v1_to_core_event,
    ("autoscaling/v2", "autoscaling/v1"): _hpa_v2_to_v1,
    ("autoscaling/v1", "autoscaling/v2"): _hpa_v1_to_v2,
}
# Where one pair of group-versions serves several kinds: (from, to, kind).
_KIND_CONVERTERS: dict[tuple[str, str, str], Converter] = {
    ("extensions/v1beta1", INGRESS_V1, "Ingress"): _ingress_v1beta1_to_v1,
    (INGRESS_V1, "extensions/v1beta1", "Ingress"): _ingress_v1_to_v1beta1,
    ("networking.k8s.io/v1beta1", INGRESS_V1, "Ingress"): _ingress_v1beta1_to_v1,
    (INGRESS_V1, "networking.k8s.io/v1beta1", "Ingress"): _ingress_v1_to_v1beta1,
    ("extensions/v1beta1", "networking.k8s.io/v1beta1", "Ingress"): _same_shape,
    ("networking.k8s.io/v1beta1", "extensions/v1beta1", "Ingress"): _same_shape,
    ("networking.k8s.io/v1beta1", INGRESS_V1, "IngressClass"): _same_shape,
    (INGRESS_V1, "networking.k8s.io/v1beta1", "IngressClass"): _same_shape,
}


def to_version(obj: Obj, info: ResourceInfo) -> Obj | None:
    """`obj` in `info`'s version (same object if already so), or None if not convertible."""
    current = obj.get("apiVersion", info.api_version)
    if current == info.api_version and obj.get("kind", info.kind) == info.kind:
        return obj
    convert = (_KIND_CONVERTERS.get((current, info.api_version, info.kind))
               or _CONVERTERS.get((current, info.api_version)))
    if convert is None:
        return None
    out = convert(obj)
    out["apiVersion"], out["kind"] = info.api_version, info.kind
    return out
