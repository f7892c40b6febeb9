"""Pure helpers of the Deployment controller: template hashes, revisions and their
annotations, rolling-update arithmetic, conditions and status.

Semantics follow upstream's pkg/controller/deployment/util/deployment_util.go and
the hashing in pkg/controller/controller_utils.go (ComputeHash). Objects are JSON
dicts; every function that changes one says so and works in place.
"""

from __future__ import annotations

import copy
import datetime
import functools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from kubi.api import meta as m

Obj = dict[str, Any]

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
ROLLBACK_TO = "deprecated.deployment.rollback.to"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# Annotations that belong to the object they are on, never copied between a
# Deployment and its ReplicaSets.
SKIPPED_ANNOTATIONS = frozenset({LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS,
                                 MAX_REPLICAS, ROLLBACK_TO})
MAX_REVISION_HISTORY_CHARS = 2000
MAX_INT32 = 2 ** 31 - 1

# Condition types and reasons (upstream util constants).
PROGRESSING = "Progressing"
AVAILABLE = "Available"
REPLICA_FAILURE = "ReplicaFailure"
REPLICA_SET_UPDATED = "ReplicaSetUpdated"
FAILED_RS_CREATE = "ReplicaSetCreateError"
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
MIN_REPLICAS_AVAILABLE = "MinimumReplicasAvailable"
MIN_REPLICAS_UNAVAILABLE = "MinimumReplicasUnavailable"

RECREATE = "Recreate"
ROLLING_UPDATE = "RollingUpdate"

# upstream rand.SafeEncodeString: no vowels, no look-alike characters.
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193


# -- small accessors ------------------------------------------------------------------------


def spec_of(obj: Obj) -> Obj:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def status_of(obj: Obj) -> Obj:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def annotations_of(obj: Obj) -> dict[str, str]:
    annotations = (obj.get("metadata") or {}).get("annotations")
    return annotations if isinstance(annotations, dict) else {}


def replicas(obj: Obj) -> int:
    """spec.replicas; the API server defaults it to 1."""
    value = spec_of(obj).get("replicas", 1)
    return int(value) if value is not None else 1


def status_count(obj: Obj | None, name: str) -> int:
    if obj is None:
        return 0
    return int(status_of(obj).get(name) or 0)


def uid_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def creation_time(obj: Obj) -> str:
    # RFC 3339 in UTC with second precision sorts correctly as text.
    return str((obj.get("metadata") or {}).get("creationTimestamp") or "")


# -- template hashing and comparison -----------------------------------------------------------


def _normalized(value: Any) -> Any:
    """Drop nulls and empty maps/lists: Go's semantic equality treats nil and empty alike."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            item = _normalized(item)
            if item is None or item == {} or item == []:
                continue
            out[key] = item
        return out
    if isinstance(value, list):
        return [_normalized(item) for item in value]
    return value


def _without_hash_label(template: Obj | None) -> Any:
    template = copy.deepcopy(template or {})
    labels = (template.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return _normalized(template)


def fnv32a(data: bytes, start: int = _FNV32_OFFSET) -> int:
    value = start
    for byte in data:
        value = ((value ^ byte) * _FNV32_PRIME) & 0xFFFFFFFF
    return value


def safe_encode(text: str) -> str:
    return "".join(_SAFE_ALPHABET[ord(ch) % len(_SAFE_ALPHABET)] for ch in text)


def compute_hash(template: Obj | None, collision_count: int | None) -> str:
    """The pod-template-hash: FNV-32a over a canonical dump of the template (its own
    hash label ignored), then the collision count's little-endian bytes, printed in
    decimal and mapped onto the safe alphabet (upstream controller.ComputeHash)."""
    data = orjson.dumps(_without_hash_label(template), option=orjson.OPT_SORT_KEYS)
    value = fnv32a(data)
    if collision_count is not None:
        value = fnv32a((collision_count & 0xFFFFFFFF).to_bytes(4, "little"), value)
    return safe_encode(str(value))


def equal_ignore_hash(template1: Obj | None, template2: Obj | None) -> bool:
    """Whether two pod templates are the same but for the pod-template-hash label."""
    return bool(_without_hash_label(template1) == _without_hash_label(template2))


# -- int-or-percent arithmetic -----------------------------------------------------------------


def scaled_value(value: Any, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent; ValueError for a string that is no percent."""
    if isinstance(value, bool):
        raise ValueError(f"invalid value for IntOrString: invalid type: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if not value.endswith("%"):
            raise ValueError(
                "invalid value for IntOrString: invalid type: string is not a percentage")
        try:
            percent = int(value[:-1])
        except ValueError as err:
            raise ValueError(f"invalid value for IntOrString: {value!r}") from err
        scaled = percent * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    raise ValueError("invalid value for IntOrString: invalid type: neither int nor percentage")


def is_rolling_update(deployment: Obj) -> bool:
    return (spec_of(deployment).get("strategy") or {}).get("type") == ROLLING_UPDATE


def _rolling_params(deployment: Obj) -> Obj:
    rolling = (spec_of(deployment).get("strategy") or {}).get("rollingUpdate")
    return rolling if isinstance(rolling, dict) else {}


def resolve_fenceposts(max_surge: Any, max_unavailable: Any, desired: int) -> tuple[int, int]:
    """(surge, unavailable): surge rounds up, unavailable down; never both zero."""
    surge = scaled_value(0 if max_surge is None else max_surge, desired, True)
    unavailable = scaled_value(0 if max_unavailable is None else max_unavailable, desired,
                               False)
    if surge == 0 and unavailable == 0:
        # Rounding may resolve both to zero; surge might be blocked by quota, so allow one.
        unavailable = 1
    return surge, unavailable


def max_surge(deployment: Obj) -> int:
    if not is_rolling_update(deployment):
        return 0
    rolling = _rolling_params(deployment)
    surge, _ = resolve_fenceposts(rolling.get("maxSurge"), rolling.get("maxUnavailable"),
                                  replicas(deployment))
    return surge


def max_unavailable(deployment: Obj) -> int:
    desired = replicas(deployment)
    if not is_rolling_update(deployment) or desired == 0:
        return 0
    rolling = _rolling_params(deployment)
    _, unavailable = resolve_fenceposts(rolling.get("maxSurge"), rolling.get("maxUnavailable"),
                                        desired)
    return min(unavailable, desired)


# -- replica set collections -------------------------------------------------------------------


def _compare_creation(a: Obj, b: Obj) -> int:
    """Older first; equal times by name (controller.ReplicaSetsByCreationTimestamp)."""
    ta, tb = creation_time(a), creation_time(b)
    if ta != tb:
        return -1 if ta < tb else 1
    na, nb = m.name_of(a), m.name_of(b)
    return (na > nb) - (na < nb)


def by_creation(rss: Iterable[Obj]) -> list[Obj]:
    return sorted(rss, key=functools.cmp_to_key(_compare_creation))


def by_size_older(rss: Iterable[Obj]) -> list[Obj]:
    """Larger first; equal sizes older first (used when scaling down)."""
    def compare(a: Obj, b: Obj) -> int:
        if replicas(a) != replicas(b):
            return -1 if replicas(a) > replicas(b) else 1
        return _compare_creation(a, b)
    return sorted(rss, key=functools.cmp_to_key(compare))


def by_size_newer(rss: Iterable[Obj]) -> list[Obj]:
    """Larger first; equal sizes newer first (used when scaling up)."""
    def compare(a: Obj, b: Obj) -> int:
        if replicas(a) != replicas(b):
            return -1 if replicas(a) > replicas(b) else 1
        return -_compare_creation(a, b)
    return sorted(rss, key=functools.cmp_to_key(compare))


def filter_active(rss: Iterable[Obj | None]) -> list[Obj]:
    return [rs for rs in rss if rs is not None and replicas(rs) > 0]


def total_replicas(rss: Iterable[Obj | None]) -> int:
    return sum(replicas(rs) for rs in rss if rs is not None)


def total_status(rss: Iterable[Obj | None], name: str) -> int:
    return sum(status_count(rs, name) for rs in rss if rs is not None)


def find_new_replica_set(deployment: Obj, rss: Iterable[Obj]) -> Obj | None:
    """The oldest ReplicaSet whose template equals the Deployment's (ignoring the hash)."""
    template = spec_of(deployment).get("template")
    for rs in by_creation(rss):
        if equal_ignore_hash(spec_of(rs).get("template"), template):
            return rs
    return None


def find_old_replica_sets(deployment: Obj, rss: list[Obj]) -> list[Obj]:
    new_rs = find_new_replica_set(deployment, rss)
    new_uid = uid_of(new_rs) if new_rs is not None else None
    return [rs for rs in rss if uid_of(rs) != new_uid]


def find_active_or_latest(new_rs: Obj | None, old_rss: list[Obj]) -> Obj | None:
    """The only active ReplicaSet; with none active, the new one or else the newest old one."""
    if new_rs is None and not old_rss:
        return None
    newest_first = list(reversed(by_creation(old_rss)))
    active = filter_active([*newest_first, new_rs])
    if not active:
        return new_rs if new_rs is not None else newest_first[0]
    return active[0] if len(active) == 1 else None


# -- revisions and annotations -----------------------------------------------------------------


def revision(obj: Obj) -> int:
    """The revision annotation (0 when absent); ValueError when it is not a number."""
    raw = annotations_of(obj).get(REVISION)
    if raw is None:
        return 0
    return int(raw)


def _revision_or_none(obj: Obj) -> int | None:
    try:
        return revision(obj)
    except ValueError:
        return None


def max_revision(rss: Iterable[Obj]) -> int:
    found = [_revision_or_none(rs) for rs in rss]
    return max((r for r in found if r is not None), default=0)


def last_revision(rss: Iterable[Obj]) -> int:
    """The second highest revision: the one `rollbackTo: 0` means."""
    highest, second = 0, 0
    for rs in rss:
        value = _revision_or_none(rs)
        if value is None:
            continue
        if value >= highest:
            highest, second = value, highest
        elif value > second:
            second = value
    return second


def by_revision(rss: Iterable[Obj]) -> list[Obj]:
    """Lowest revision first; equal revisions by creation time."""
    def compare(a: Obj, b: Obj) -> int:
        ra, rb = _revision_or_none(a) or 0, _revision_or_none(b) or 0
        if ra != rb:
            return -1 if ra < rb else 1
        return _compare_creation(a, b)
    return sorted(rss, key=functools.cmp_to_key(compare))


def _annotations(obj: Obj) -> dict[str, str]:
    meta = m.metadata(obj)
    annotations = meta.get("annotations")
    if not isinstance(annotations, dict):
        annotations = {}
        meta["annotations"] = annotations
    return annotations


def copy_annotations_to_replica_set(deployment: Obj, rs: Obj) -> bool:
    """Copy the Deployment's own annotations onto `rs` (in place); True if any changed."""
    target = _annotations(rs)
    changed = False
    for key, value in annotations_of(deployment).items():
        if key in SKIPPED_ANNOTATIONS or target.get(key) == value:
            continue
        target[key] = value
        changed = True
    return changed


def set_replicas_annotations(rs: Obj, desired: int, maximum: int) -> bool:
    annotations = _annotations(rs)
    changed = False
    for key, value in ((DESIRED_REPLICAS, str(desired)), (MAX_REPLICAS, str(maximum))):
        if annotations.get(key) != value:
            annotations[key] = value
            changed = True
    return changed


def replicas_annotations_need_update(rs: Obj, desired: int, maximum: int) -> bool:
    annotations = annotations_of(rs)
    return (annotations.get(DESIRED_REPLICAS) != str(desired)
            or annotations.get(MAX_REPLICAS) != str(maximum))


def _int_annotation(rs: Obj, key: str) -> int | None:
    raw = annotations_of(rs).get(key)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def desired_replicas_annotation(rs: Obj) -> int | None:
    return _int_annotation(rs, DESIRED_REPLICAS)


def max_replicas_annotation(rs: Obj) -> int | None:
    return _int_annotation(rs, MAX_REPLICAS)


def set_new_replica_set_annotations(deployment: Obj, rs: Obj, new_revision: str,
                                    exists: bool) -> bool:
    """Bring the new ReplicaSet's annotations up to date (in place); True if changed.

    Copies the Deployment's annotations, raises the revision to `new_revision` when
    it is lower (remembering the old one in revision-history: a rollback to it), and
    on a ReplicaSet about to be created sets desired/max replicas.
    """
    changed = copy_annotations_to_replica_set(deployment, rs)
    annotations = _annotations(rs)
    old_raw = annotations.get(REVISION)
    try:
        old_revision = int(old_raw) if old_raw else 0
        new_value = int(new_revision)
    except ValueError:
        return False
    if old_revision < new_value:
        annotations[REVISION] = new_revision
        changed = True
        if old_raw is not None:
            _remember_revision(annotations, old_raw)
    if not exists and set_replicas_annotations(rs, replicas(deployment),
                                               replicas(deployment) + max_surge(deployment)):
        changed = True
    return changed


def _remember_revision(annotations: dict[str, str], old_revision: str) -> None:
    history = annotations.get(REVISION_HISTORY, "")
    if not history:
        annotations[REVISION_HISTORY] = old_revision
        return
    kept = history.split(",")
    total = len(history) + len(old_revision) + 1
    # Forget the oldest entries while the list would be too long.
    while total > MAX_REVISION_HISTORY_CHARS and kept:
        total -= len(kept.pop(0)) + 1
    if total <= MAX_REVISION_HISTORY_CHARS:
        annotations[REVISION_HISTORY] = ",".join([*kept, old_revision])


def set_deployment_revision(deployment: Obj, value: str) -> bool:
    annotations = _annotations(deployment)
    if annotations.get(REVISION) == value:
        return False
    annotations[REVISION] = value
    return True


def set_deployment_annotations_to(deployment: Obj, rs: Obj) -> None:
    """Roll the Deployment's annotations back to those of `rs` (keeping its own ones)."""
    kept = {k: v for k, v in annotations_of(deployment).items() if k in SKIPPED_ANNOTATIONS}
    for key, value in annotations_of(rs).items():
        if key not in SKIPPED_ANNOTATIONS:
            kept[key] = value
    m.metadata(deployment)["annotations"] = kept


def template_from_replica_set(rs: Obj) -> Obj:
    """The ReplicaSet's pod template without its hash label, for a rollback."""
    template = copy.deepcopy(spec_of(rs).get("template") or {})
    labels = (template.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return template


# -- scaling arithmetic ------------------------------------------------------------------------


def new_rs_new_replicas(deployment: Obj, all_rss: list[Obj], new_rs: Obj) -> int:
    """How big the new ReplicaSet may be now (upstream NewRSNewReplicas)."""
    strategy = (spec_of(deployment).get("strategy") or {}).get("type")
    desired = replicas(deployment)
    if strategy == ROLLING_UPDATE:
        surge = scaled_value(_rolling_params(deployment).get("maxSurge", 0), desired, True)
        current = total_replicas(all_rss)
        ceiling = desired + surge
        if current >= ceiling:
            return replicas(new_rs)
        grow = min(ceiling - current, desired - replicas(new_rs))
        return replicas(new_rs) + grow
    if strategy == RECREATE:
        return desired
    raise ValueError(f"deployment type {strategy} isn't supported")


def is_saturated(deployment: Obj, rs: Obj | None) -> bool:
    if rs is None:
        return False
    desired = replicas(deployment)
    return (replicas(rs) == desired and desired_replicas_annotation(rs) == desired
            and status_count(rs, "availableReplicas") == desired)


def _replica_set_fraction(rs: Obj, deployment: Obj) -> int:
    if replicas(deployment) == 0:
        return -replicas(rs)
    deployment_replicas = replicas(deployment) + max_surge(deployment)
    annotated = max_replicas_annotation(rs)
    if annotated is None:
        annotated = status_count(deployment, "replicas")
    if annotated == 0:
        return 0  # never scale proportionally from nothing
    size = replicas(rs) * deployment_replicas / annotated
    rounded = math.floor(size + 0.5) if size >= 0 else -math.floor(-size + 0.5)
    return int(rounded) - replicas(rs)


def replica_set_proportion(rs: Obj, deployment: Obj, to_add: int, added: int) -> int:
    """This ReplicaSet's share of `to_add` more (or fewer) replicas, `added` handed out."""
    if replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = _replica_set_fraction(rs, deployment)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


# -- conditions --------------------------------------------------------------------------------


def new_condition(condition_type: str, status: str, reason: str, message: str,
                  now: datetime.datetime | None = None) -> Obj:
    stamp = m.rfc3339(now or m.now())
    return {"type": condition_type, "status": status, "lastUpdateTime": stamp,
            "lastTransitionTime": stamp, "reason": reason, "message": message}


def get_condition(status: Obj, condition_type: str) -> Obj | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == condition_type:
            return dict(condition)
    return None


def set_condition(status: Obj, condition: Obj) -> None:
    """Upstream SetDeploymentCondition: same status and reason is a no-op; same status
    keeps the transition time; the condition moves to the end of the list."""
    current = get_condition(status, condition["type"])
    if (current is not None and current.get("status") == condition["status"]
            and current.get("reason") == condition.get("reason")):
        return
    condition = dict(condition)
    if current is not None and current.get("status") == condition["status"]:
        condition["lastTransitionTime"] = current.get("lastTransitionTime")
    kept = [c for c in status.get("conditions") or [] if c.get("type") != condition["type"]]
    status["conditions"] = [*kept, condition]


def remove_condition(status: Obj, condition_type: str) -> None:
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != condition_type]
    if conditions:
        status["conditions"] = conditions
    else:
        status.pop("conditions", None)


def has_progress_deadline(deployment: Obj) -> bool:
    deadline = spec_of(deployment).get("progressDeadlineSeconds")
    return deadline is not None and deadline != MAX_INT32


def has_revision_history_limit(deployment: Obj) -> bool:
    limit = spec_of(deployment).get("revisionHistoryLimit")
    return limit is not None and limit != MAX_INT32


# -- status ------------------------------------------------------------------------------------


def deployment_complete(deployment: Obj, status: Obj) -> bool:
    desired = replicas(deployment)
    return (int(status.get("updatedReplicas") or 0) == desired
            and int(status.get("replicas") or 0) == desired
            and int(status.get("availableReplicas") or 0) == desired
            and int(status.get("observedGeneration") or 0)
            >= int((deployment.get("metadata") or {}).get("generation") or 0))


def deployment_progressing(deployment: Obj, new_status: Obj) -> bool:
    """Whether the new status shows any progress over the Deployment's current one."""
    old = status_of(deployment)

    def count(status: Obj, name: str) -> int:
        return int(status.get(name) or 0)

    old_old = count(old, "replicas") - count(old, "updatedReplicas")
    new_old = count(new_status, "replicas") - count(new_status, "updatedReplicas")
    return (count(new_status, "updatedReplicas") > count(old, "updatedReplicas")
            or new_old < old_old
            or count(new_status, "readyReplicas") > count(old, "readyReplicas")
            or count(new_status, "availableReplicas") > count(old, "availableReplicas"))


def deployment_timed_out(deployment: Obj, new_status: Obj,
                         now: datetime.datetime | None = None) -> bool:
    if not has_progress_deadline(deployment):
        return False
    condition = get_condition(new_status, PROGRESSING)
    if condition is None or condition.get("reason") == NEW_RS_AVAILABLE:
        return False
    if condition.get("reason") == TIMED_OUT:
        return True
    since = condition.get("lastUpdateTime")
    if not since:
        return False
    deadline = m.parse_time(since) + datetime.timedelta(
        seconds=int(spec_of(deployment)["progressDeadlineSeconds"]))
    return deadline < (now or m.now())


def calculate_status(all_rss: Sequence[Obj | None], new_rs: Obj | None, deployment: Obj) -> Obj:
    """The Deployment's status from its ReplicaSets, with the Available condition.

    Zero counts are left out, as the API serializes them (omitempty)."""
    available = total_status(all_rss, "availableReplicas")
    unavailable = max(total_replicas(all_rss) - available, 0)
    counts = {
        "observedGeneration": int((deployment.get("metadata") or {}).get("generation") or 0),
        "replicas": total_status(all_rss, "replicas"),
        "updatedReplicas": total_status([new_rs], "replicas"),
        "readyReplicas": total_status(all_rss, "readyReplicas"),
        "availableReplicas": available,
        "unavailableReplicas": unavailable,
    }
    status: Obj = {k: v for k, v in counts.items() if v}
    old_status = status_of(deployment)
    if old_status.get("collisionCount") is not None:
        status["collisionCount"] = old_status["collisionCount"]
    conditions = [dict(c) for c in old_status.get("conditions") or []]
    if conditions:
        status["conditions"] = conditions
    if available >= replicas(deployment) - max_unavailable(deployment):
        set_condition(status, new_condition(AVAILABLE, "True", MIN_REPLICAS_AVAILABLE,
                                            "Deployment has minimum availability."))
    else:
        set_condition(status, new_condition(AVAILABLE, "False", MIN_REPLICAS_UNAVAILABLE,
                                            "Deployment does not have minimum availability."))
    return status


def replica_failure_condition(all_rss: list[Obj], new_rs: Obj | None) -> Obj | None:
    """A ReplicaSet's ReplicaFailure condition as a Deployment condition (new RS first)."""
    ordered = ([new_rs] if new_rs is not None else []) + [
        rs for rs in all_rss if new_rs is None or uid_of(rs) != uid_of(new_rs)]
    for rs in ordered:
        for condition in status_of(rs).get("conditions") or []:
            if condition.get("type") == REPLICA_FAILURE:
                stamp = condition.get("lastTransitionTime")
                return {"type": REPLICA_FAILURE, "status": condition.get("status", ""),
                        "lastUpdateTime": stamp,
                        "lastTransitionTime": stamp, "reason": condition.get("reason", ""),
                        "message": condition.get("message", "")}
    return None
