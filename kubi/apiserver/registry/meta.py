"""Validation of `metadata`, shared by every kind (upstream api/validation/objectmeta.go).

Also the small helpers the per-kind strategies share: walking nested dicts,
per-kind name rules, and Go-style rendering of non-scalar values in messages.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from kubi.api.errors import INVALID, Cause, forbidden, invalid, required, too_long
from kubi.apiserver.registry import names

NameRule = Callable[[str], list[str]]

TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024
FIELD_IMMUTABLE = "field is immutable"

# Kinds whose names follow a rule other than DNS-1123 subdomain (upstream ValidateXName).
_NAME_RULES: dict[tuple[str, str], NameRule] = {
    ("", "Namespace"): names.dns1123_label,
    ("", "Service"): names.dns1035_label,
    ("rbac.authorization.k8s.io", "Role"): names.path_segment_name,
    ("rbac.authorization.k8s.io", "ClusterRole"): names.path_segment_name,
    ("rbac.authorization.k8s.io", "RoleBinding"): names.path_segment_name,
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): names.path_segment_name,
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"): names.path_segment_name,
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"): names.path_segment_name,
}


def name_rule_for(group: str, kind: str) -> NameRule:
    """The syntax rule `metadata.name` of this kind must follow."""
    return _NAME_RULES.get((group, kind), names.dns1123_subdomain)


def _generate_name_problems(prefix: str, name_rule: NameRule) -> list[str]:
    """A generateName is checked as a name prefix: a trailing '-' is allowed."""
    if name_rule is names.path_segment_name:
        return names.path_segment_prefix(prefix)
    if len(prefix) > 1 and prefix.endswith("-"):
        prefix = prefix[:-1] + "a"
    return name_rule(prefix)


# ---------------------------------------------------------------------------
# Rendering values the way upstream's field errors print them (Go's %#v/String).


def go_value(value: Any) -> str:
    """Render a value as Go prints it inside `Invalid value: …` for non-scalars."""
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value):
            return "[]string{" + ", ".join(f'"{v}"' for v in value) + "}"
        return "[]interface {}{" + ", ".join(go_value(v) for v in value) + "}"
    if isinstance(value, dict):
        if all(isinstance(v, str) for v in value.values()):
            inner = ", ".join(f'"{k}":"{v}"' for k, v in sorted(value.items()))
            return "map[string]string{" + inner + "}"
        inner = ", ".join(f'"{k}":{go_value(v)}' for k, v in sorted(value.items()))
        return "map[string]interface {}{" + inner + "}"
    if isinstance(value, str):
        return f'"{value}"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def invalid_go(path: str, value: Any, detail: str) -> Cause:
    """`Invalid value` for a list/map value, printed as upstream prints Go values."""
    if isinstance(value, (list, dict)):
        return Cause(INVALID, f"Invalid value: {go_value(value)}: {detail}", path)
    return invalid(path, value, detail)


def go_time(timestamp: str | None) -> str | None:
    """An RFC 3339 timestamp as Go's time.String() prints it (metav1.Time)."""
    if not timestamp:
        return None
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    return moment.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def immutable(path: str, new: Any, old: Any) -> list[Cause]:
    """Upstream ValidateImmutableField: `Invalid value: <new>: field is immutable`."""
    if new == old:
        return []
    return [invalid_go(path, new, FIELD_IMMUTABLE)]


# ---------------------------------------------------------------------------
# Dict helpers the strategies use on wire objects.


def dig(obj: Any, *keys: str | int) -> Any:
    """obj[k1][k2]…, or None as soon as a step is missing."""
    for key in keys:
        if isinstance(key, int):
            if not isinstance(obj, list) or key >= len(obj):
                return None
        elif not isinstance(obj, dict):
            return None
        obj = obj[key] if isinstance(key, int) else obj.get(key)
    return obj


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# ---------------------------------------------------------------------------
# Labels, annotations, owner references, finalizers.


def validate_labels(labels: Any, path: str) -> list[Cause]:
    causes: list[Cause] = []
    for key in sorted(as_dict(labels)):
        value = labels[key]
        causes += [invalid(path, key, msg) for msg in names.qualified_name(key)]
        text = value if isinstance(value, str) else str(value)
        causes += [invalid(path, text, msg) for msg in names.label_value(text)]
    return causes


def validate_annotations(annotations: Any, path: str) -> list[Cause]:
    causes: list[Cause] = []
    annotations = as_dict(annotations)
    total = 0
    for key in sorted(annotations):
        # Annotation keys are qualified names, case-insensitively.
        causes += [invalid(path, key, msg) for msg in names.qualified_name(key.lower())]
        value = annotations[key]
        total += len(key.encode()) + len(str(value).encode())
    if total > TOTAL_ANNOTATION_SIZE_LIMIT:
        causes.append(too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT))
    return causes


def _split_api_version(api_version: str) -> tuple[str, str]:
    if "/" in api_version:
        group, _, version = api_version.partition("/")
        return group, version
    return "", api_version


def validate_owner_references(refs: Any, path: str) -> list[Cause]:
    causes: list[Cause] = []
    controller = ""
    refs = as_list(refs)
    for ref in refs:
        ref = as_dict(ref)
        api_version = ref.get("apiVersion") or ""
        group, version = _split_api_version(api_version)
        kind = ref.get("kind") or ""
        if not version:
            causes.append(invalid(f"{path}.apiVersion", api_version, "version must not be empty"))
        if not kind:
            causes.append(invalid(f"{path}.kind", kind, "must not be empty"))
        if not ref.get("name"):
            causes.append(invalid(f"{path}.name", ref.get("name") or "", "must not be empty"))
        if not ref.get("uid"):
            causes.append(invalid(f"{path}.uid", ref.get("uid") or "", "must not be empty"))
        if (group, version, kind) == ("", "v1", "Event"):
            causes.append(Cause(INVALID, f"Invalid value: {go_value(ref)}: /v1, Kind=Event is "
                                         "disallowed from being an owner", path))
        if ref.get("controller") is True:
            this = f"{kind}/{ref.get('name') or ''}"
            if controller:
                causes.append(Cause(
                    INVALID,
                    "Invalid value: []v1.OwnerReference{…}: Only one reference can have "
                    f'Controller set to true. Found "true" in references for {controller} and '
                    f"{this}", path))
            else:
                controller = this
    return causes


ORPHAN_FINALIZER = "orphan"
FOREGROUND_FINALIZER = "foregroundDeletion"


def validate_finalizers(finalizers: Any, path: str) -> list[Cause]:
    causes: list[Cause] = []
    finalizers = [str(f) for f in as_list(finalizers)]
    for finalizer in finalizers:
        causes += [invalid(path, finalizer, msg) for msg in names.qualified_name(finalizer)]
    if ORPHAN_FINALIZER in finalizers and FOREGROUND_FINALIZER in finalizers:
        causes.append(invalid_go(path, finalizers,
                                 f"finalizer {ORPHAN_FINALIZER} and {FOREGROUND_FINALIZER} "
                                 "cannot be both set"))
    return causes


def _validate_common(meta: dict[str, Any], path: str) -> list[Cause]:
    causes: list[Cause] = []
    generation = meta.get("generation")
    if isinstance(generation, int) and generation < 0:
        causes.append(invalid(f"{path}.generation", generation,
                              "must be greater than or equal to 0"))
    causes += validate_labels(meta.get("labels"), f"{path}.labels")
    causes += validate_annotations(meta.get("annotations"), f"{path}.annotations")
    causes += validate_owner_references(meta.get("ownerReferences"), f"{path}.ownerReferences")
    causes += validate_finalizers(meta.get("finalizers"), f"{path}.finalizers")
    return causes


def validate_object_meta(meta: dict[str, Any], *, namespaced: bool, name_rule: NameRule,
                         is_create: bool, path: str = "metadata") -> list[Cause]:
    """Upstream ValidateObjectMeta; `name_rule` is the kind's name syntax (name_rule_for).

    Expects name generation to have happened. `generateName` is checked only on
    create: on update it was already accepted and has served its purpose.
    """
    causes: list[Cause] = []
    name = meta.get("name") or ""
    generate_name = meta.get("generateName") or ""
    if is_create and generate_name:
        causes += [invalid(f"{path}.generateName", generate_name, msg)
                   for msg in _generate_name_problems(generate_name, name_rule)]
    if not name:
        causes.append(required(f"{path}.name", "name or generateName is required"))
    else:
        causes += [invalid(f"{path}.name", name, msg) for msg in name_rule(name)]
    namespace = meta.get("namespace") or ""
    if namespaced:
        if not namespace:
            causes.append(required(f"{path}.namespace"))
        else:
            causes += [invalid(f"{path}.namespace", namespace, msg)
                       for msg in names.dns1123_label(namespace)]
    elif namespace:
        causes.append(forbidden(f"{path}.namespace", "not allowed on this type"))
    return causes + _validate_common(meta, path)


def validate_object_meta_update(new: dict[str, Any], old: dict[str, Any],
                                path: str = "metadata") -> list[Cause]:
    """Upstream ValidateObjectMetaUpdate: identity fields never change.

    Only the update-specific rules: the store also runs validate_object_meta on
    the new object, which covers labels, annotations, owners and finalizers. The
    resourceVersion precondition is the store's business (it fills it in for
    unconditional updates), so it is not checked here either.
    """
    causes: list[Cause] = []
    if old.get("deletionTimestamp"):
        added = sorted(set(as_list(new.get("finalizers"))) - set(as_list(old.get("finalizers"))))
        if added:
            shown = "[]string{" + ", ".join(f'"{f}"' for f in added) + "}"
            causes.append(forbidden(f"{path}.finalizers",
                                    "no new finalizers can be added if the object is being "
                                    f"deleted, found new finalizers {shown}"))
    new_generation = new.get("generation") or 0
    if isinstance(new_generation, int) and new_generation < (old.get("generation") or 0):
        causes.append(invalid(f"{path}.generation", new_generation, "must not be decremented"))
    for key in ("name", "namespace", "uid"):
        causes += immutable(f"{path}.{key}", new.get(key) or "", old.get(key) or "")
    for key in ("creationTimestamp", "deletionTimestamp"):
        if new.get(key) != old.get(key):
            value = go_time(new.get(key)) or "null"
            causes.append(Cause(INVALID, f"Invalid value: {value}: {FIELD_IMMUTABLE}",
                                f"{path}.{key}"))
    causes += immutable(f"{path}.deletionGracePeriodSeconds",
                        new.get("deletionGracePeriodSeconds"),
                        old.get("deletionGracePeriodSeconds"))
    return causes
