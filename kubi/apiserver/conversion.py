"""Conversion between the served versions of one stored resource.

Objects are stored in the version they were written in; a read in another
served version converts. Most resources have one version, so this is mostly the
identity; Events (core/v1 <-> events.k8s.io/v1) and HorizontalPodAutoscalers
(autoscaling/v1 <-> v2) differ in field layout.
"""

from __future__ import annotations

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


_CONVERTERS: dict[tuple[str, str], Converter] = {
    ("v1", "events.k8s.io/v1"): _core_event_to_events_v1,
    ("events.k8s.io/v1", "v1"): _events_v1_to_core_event,
    ("autoscaling/v2", "autoscaling/v1"): _hpa_v2_to_v1,
    ("autoscaling/v1", "autoscaling/v2"): _hpa_v1_to_v2,
}


def to_version(obj: Obj, info: ResourceInfo) -> Obj | None:
    """`obj` in `info`'s version (same object if already so), or None if not convertible."""
    current = obj.get("apiVersion", info.api_version)
    if current == info.api_version and obj.get("kind", info.kind) == info.kind:
        return obj
    convert = _CONVERTERS.get((current, info.api_version))
    if convert is None:
        return None
    out = convert(obj)
    out["apiVersion"], out["kind"] = info.api_version, info.kind
    return out
