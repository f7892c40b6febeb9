"""The Pod strategy: upstream's `registry/core/pod/strategy.go` plus the admission
plugins that every real cluster runs on pods (ServiceAccount, Priority,
DefaultTolerationSeconds), since their results are part of what a created pod
looks like when read back.
"""

from __future__ import annotations

import copy
from typing import Any

from kubi.api.errors import Cause, forbidden, invalid, required
from kubi.apiserver.registry import podspec
from kubi.apiserver.registry.strategy import Obj, Strategy, register

DEFAULT_TOLERATION_SECONDS = 300
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
# The built-in priority classes; others need a PriorityClass lookup the strategy cannot do.
SYSTEM_PRIORITIES = {"system-node-critical": 2000001000, "system-cluster-critical": 2000000000}

UPDATABLE_POD_SPEC_FIELDS = (
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously "
    "negative)",
)


def _containers(spec: Obj, group: str) -> list[Obj]:
    value = spec.get(group)
    return [c for c in value if isinstance(c, dict)] if isinstance(value, list) else []


def default_pod(pod: Obj) -> None:
    """SetDefaults_Pod: the pod spec defaults plus the pod-only ones."""
    spec = pod.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    podspec.default_pod_spec(spec)
    for container in _containers(spec, "initContainers") + _containers(spec, "containers"):
        resources = container.get("resources")
        if isinstance(resources, dict) and isinstance(resources.get("limits"), dict):
            # Limits without requests mean the requests equal the limits.
            requests = resources.setdefault("requests", {})
            if isinstance(requests, dict):
                for name, limit in resources["limits"].items():
                    requests.setdefault(name, limit)
        if spec.get("hostNetwork"):
            for port in container.get("ports") or []:
                if isinstance(port, dict) and not port.get("hostPort"):
                    port["hostPort"] = port.get("containerPort")


def _tolerates(toleration: Obj, key: str) -> bool:
    """Whether an existing toleration already covers a NoExecute taint `key`."""
    if toleration.get("effect") not in (None, "", "NoExecute"):
        return False
    if toleration.get("operator") == "Exists" and not toleration.get("key"):
        return True
    return bool(toleration.get("key") == key)


def admit_pod(pod: Obj) -> None:
    """What upstream's mutating admission plugins add to a pod on create."""
    spec = pod["spec"]
    if not spec.get("serviceAccountName"):
        spec["serviceAccountName"] = "default"
    spec["serviceAccount"] = spec["serviceAccountName"]
    class_name = spec.get("priorityClassName")
    if "priority" not in spec and (not class_name or class_name in SYSTEM_PRIORITIES):
        spec["priority"] = SYSTEM_PRIORITIES.get(class_name or "", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.get("tolerations")
    existing = [t for t in tolerations if isinstance(t, dict)] if isinstance(tolerations,
                                                                               list) else []
    added = [
        {"key": key, "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": DEFAULT_TOLERATION_SECONDS}
        for key in (NOT_READY_TAINT, UNREACHABLE_TAINT)
        if not any(_tolerates(t, key) for t in existing)
    ]
    if added:
        spec["tolerations"] = [*(tolerations or []), *added]


def _go_field(key: str) -> str:
    return key[:1].upper() + key[1:]


def _spec_diff(old: Obj, new: Obj) -> str:
    """A short rendering of what changed, in place of upstream's cmp.Diff of core.PodSpec."""
    lines = ["  core.PodSpec{"]
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key):
            continue
        if key in old:
            lines.append(f"- \t{_go_field(key)}: {podspec.show_any(old[key])},")
        if key in new:
            lines.append(f"+ \t{_go_field(key)}: {podspec.show_any(new[key])},")
    lines.append("  }")
    return "\n".join(lines) + "\n"


def _same_except_seconds(old: Obj, new: Obj) -> bool:
    strip = ("tolerationSeconds",)
    return {k: v for k, v in old.items() if k not in strip} == \
        {k: v for k, v in new.items() if k not in strip}


def _validate_only_added_tolerations(new: list[Any], old: list[Any], path: str) -> list[Cause]:
    causes: list[Cause] = []
    for old_toleration in old:
        if not isinstance(old_toleration, dict):
            continue
        if not any(isinstance(t, dict) and _same_except_seconds(old_toleration, t)
                   for t in new):
            causes.append(forbidden(path, "existing toleration can not be modified except its "
                                          "tolerationSeconds"))
    return causes


def validate_pod_update(new: Obj, old: Obj) -> list[Cause]:
    """Upstream's ValidatePodUpdate: a pod spec is immutable but for a few fields."""
    new_spec: Obj = new.get("spec") or {}
    old_spec: Obj = old.get("spec") or {}
    causes: list[Cause] = []
    for group in ("containers", "initContainers"):
        new_containers = _containers(new_spec, group)
        old_containers = _containers(old_spec, group)
        if len(new_containers) != len(old_containers):
            return [forbidden(f"spec.{group}", "pod updates may not add or remove containers")]
        for index, container in enumerate(new_containers):
            if not container.get("image"):
                causes.append(required(f"spec.{group}[{index}].image", ""))
    if causes:
        return causes

    deadline = new_spec.get("activeDeadlineSeconds")
    old_deadline = old_spec.get("activeDeadlineSeconds")
    if deadline is not None:
        if not 0 <= deadline <= podspec.MAX_INT32:
            return [invalid("spec.activeDeadlineSeconds", deadline,
                            f"must be between 0 and {podspec.MAX_INT32}, inclusive")]
        if old_deadline is not None and old_deadline < deadline:
            return [invalid("spec.activeDeadlineSeconds", deadline,
                            "must be less than or equal to previous value")]
    elif old_deadline is not None:
        causes.append(invalid("spec.activeDeadlineSeconds", None,
                              "must not update from a positive integer to nil value"))

    munged = copy.deepcopy(new_spec)
    for group in ("containers", "initContainers"):
        for munged_container, old_container in zip(_containers(munged, group),
                                                   _containers(old_spec, group), strict=True):
            munged_container["image"] = old_container.get("image")
    _restore(munged, old_spec, "activeDeadlineSeconds")
    causes.extend(_validate_only_added_tolerations(new_spec.get("tolerations") or [],
                                                   old_spec.get("tolerations") or [],
                                                   "spec.tolerations"))
    _restore(munged, old_spec, "tolerations")
    old_grace = old_spec.get("terminationGracePeriodSeconds")
    if isinstance(old_grace, int) and old_grace < 0 and \
            new_spec.get("terminationGracePeriodSeconds") == 1:
        _restore(munged, old_spec, "terminationGracePeriodSeconds")
    new_gates = [g.get("name") for g in new_spec.get("schedulingGates") or []]
    old_gates = [g.get("name") for g in old_spec.get("schedulingGates") or []]
    for gate in new_gates:
        if gate not in old_gates:
            causes.append(forbidden("spec.schedulingGates",
                                    f"only deletion is allowed, but found new scheduling gate "
                                    f"'{gate}'"))
    _restore(munged, old_spec, "schedulingGates")
    if munged != old_spec:
        causes.append(forbidden(
            "spec", "pod updates may not change fields other than "
            + ",".join(UPDATABLE_POD_SPEC_FIELDS) + "\n" + _spec_diff(old_spec, munged)))
    return causes


def _restore(target: Obj, source: Obj, key: str) -> None:
    if key in source:
        target[key] = copy.deepcopy(source[key])
    else:
        target.pop(key, None)


@register("", "Pod")
class PodStrategy(Strategy):
    has_status = True
    tracks_generation = False

    def default(self, obj: Obj) -> None:
        default_pod(obj)

    def prepare_for_create(self, obj: Obj) -> None:
        super().prepare_for_create(obj)
        spec = obj.get("spec")
        if isinstance(spec, dict):
            admit_pod(obj)
            obj["status"] = {"phase": "Pending", "qosClass": podspec.qos_class(spec)}
        else:
            obj["status"] = {"phase": "Pending"}

    def validate(self, obj: Obj) -> list[Cause]:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [required("spec.containers", "")]
        return podspec.validate_pod_spec(spec, "spec")

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return self.validate(new) + validate_pod_update(new, old)
