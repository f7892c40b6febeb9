"""Strategies of the kinds that embed a pod template: ReplicaSet, Deployment,
StatefulSet, DaemonSet (apps/v1), ReplicationController and PodTemplate (v1),
Job and CronJob (batch/v1). Defaults as upstream's apps/v1, core/v1 and batch/v1
`defaults.go`; validation as `apps/validation`, `core/validation` and
`batch/validation`.
"""

from __future__ import annotations

import copy
import re
import zoneinfo
from typing import Any

from kubi.api import cron
from kubi.api.errors import Cause, forbidden, invalid, not_supported, required
from kubi.apiserver.registry import meta, podspec
from kubi.apiserver.registry.strategy import Obj, Strategy, register
from kubi.apiserver.selectors import validate_label_selector_dict

JOB_CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"
LEGACY_CONTROLLER_UID = "controller-uid"
LEGACY_JOB_NAME = "job-name"
CRONJOB_NAME_MAX = 52
_PERCENT_RE = re.compile(r"^[0-9]+%$")
_PERCENT_MSG = ("a valid percent string must be a numeric string followed by an ending '%' "
                "(e.g. '1%',  or '93%',  regex used for validation is '[0-9]+%')")


def _spec(obj: Obj) -> Obj:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = {}
        obj["spec"] = spec
    return spec


def _template(spec: Obj) -> Obj | None:
    template = spec.get("template")
    return template if isinstance(template, dict) else None


def _default_template(spec: Obj) -> None:
    template = _template(spec)
    if template is not None:
        podspec.default_pod_template(template)


def _template_spec(spec: Obj) -> Obj:
    template = _template(spec) or {}
    inner = template.get("spec")
    return inner if isinstance(inner, dict) else {}


def _template_labels(spec: Obj) -> dict[str, str]:
    labels = meta.dig(spec, "template", "metadata", "labels")
    return labels if isinstance(labels, dict) else {}


def _shown_labels(spec: Obj) -> str:
    """Template labels as upstream prints them; absent labels are a nil map."""
    labels = meta.dig(spec, "template", "metadata", "labels")
    return podspec.go_string_map(labels if isinstance(labels, dict) else None)


def _selector_causes(selector: Any, path: str, kind_word: str) -> list[Cause]:
    """Required, syntactically valid and non-empty (apps' strict selector checks)."""
    if selector is None:
        return [required(path, "")]
    if not isinstance(selector, dict):
        return [invalid(path, podspec.show_any(selector), "invalid label selector")]
    causes = validate_label_selector_dict(selector, path)
    if podspec.is_empty_selector(selector):
        causes.append(podspec.invalid_shown(path, podspec.go_label_selector(selector),
                                            f"empty selector is invalid for {kind_word}"))
    return causes


def _template_causes(spec: Obj, path: str, selector: Any, owner: str,
                     restart_allowed: list[str] | None = None) -> list[Cause]:
    """The template checks shared by the controllers that run pods forever."""
    template = spec.get("template")
    usable = selector if isinstance(selector, dict) else None
    causes: list[Cause] = []
    if usable is not None and podspec.selector_matches(usable, {}) is None:
        causes.append(podspec.invalid_shown(f"{path}.selector",
                                            podspec.go_label_selector(usable),
                                            "invalid label selector"))
        usable = None
    causes.extend(podspec.validate_pod_template(template, f"{path}.template", usable))
    if not isinstance(template, dict):
        return causes
    allowed = restart_allowed or ["Always"]
    restart = _template_spec(spec).get("restartPolicy", "")
    if restart not in allowed:
        causes.append(not_supported(f"{path}.template.spec.restartPolicy", restart, allowed))
    if owner and _template_spec(spec).get("activeDeadlineSeconds") is not None:
        causes.append(forbidden(f"{path}.template.spec.activeDeadlineSeconds",
                                f"activeDeadlineSeconds in {owner} is not Supported"))
    return causes


def _selector_immutable(new: Obj, old: Obj) -> list[Cause]:
    """apps/v1 made spec.selector immutable."""
    new_selector = _spec(new).get("selector")
    old_selector = _spec(old).get("selector")
    if new_selector == old_selector:
        return []
    return [podspec.invalid_shown("spec.selector", podspec.go_label_selector(new_selector),
                                  meta.FIELD_IMMUTABLE)]


def _int_or_percent(value: Any, path: str) -> list[Cause]:
    """Upstream's ValidatePositiveIntOrPercent and IsNotMoreThan100Percent."""
    if isinstance(value, str):
        if not _PERCENT_RE.match(value):
            return [invalid(path, value, _PERCENT_MSG)]
        if int(value[:-1]) > 100:
            return [invalid(path, value, "must not be greater than 100%")]
        return []
    if isinstance(value, int) and not isinstance(value, bool):
        return podspec.nonnegative(value, path)
    return [invalid(path, podspec.show_any(value), "must be an integer or percentage (e.g '5%')")]


def _int_or_percent_value(value: Any) -> int:
    if isinstance(value, str) and _PERCENT_RE.match(value):
        return int(value[:-1])
    return value if isinstance(value, int) else 0


class _WorkloadStrategy(Strategy):
    has_status = True
    tracks_generation = True


# --- ReplicaSet, Deployment -------------------------------------------------------------------


def _replica_set_spec_causes(spec: Obj, owner: str = "ReplicaSet") -> list[Cause]:
    causes = podspec.nonnegative(spec.get("replicas"), "spec.replicas")
    causes += podspec.nonnegative(spec.get("minReadySeconds"), "spec.minReadySeconds")
    selector = spec.get("selector")
    # Upstream's ReplicaSet validation says "deployment" here too.
    causes += _selector_causes(selector, "spec.selector", "deployment")
    causes += _template_causes(spec, "spec", selector, owner)
    return causes


@register("apps", "ReplicaSet")
class ReplicaSetStrategy(_WorkloadStrategy):
    def default(self, obj: Obj) -> None:
        spec = _spec(obj)
        spec.setdefault("replicas", 1)
        _default_template(spec)

    def validate(self, obj: Obj) -> list[Cause]:
        return _replica_set_spec_causes(_spec(obj))

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return self.validate(new) + _selector_immutable(new, old)


def _deployment_strategy_causes(strategy: Any) -> list[Cause]:
    path = "spec.strategy"
    if not isinstance(strategy, dict):
        return [required(f"{path}.type", "")]
    kind = strategy.get("type", "")
    rolling = strategy.get("rollingUpdate")
    if kind == "Recreate":
        if rolling is not None:
            return [forbidden(f"{path}.rollingUpdate",
                              "may not be specified when strategy `type` is 'Recreate'")]
        return []
    if kind == "RollingUpdate":
        if not isinstance(rolling, dict):
            return [required(f"{path}.rollingUpdate", "this should be defaulted and never be nil")]
        unavailable = rolling.get("maxUnavailable")
        surge = rolling.get("maxSurge")
        causes = _int_or_percent(unavailable, f"{path}.rollingUpdate.maxUnavailable")
        causes += _int_or_percent(surge, f"{path}.rollingUpdate.maxSurge")
        if _int_or_percent_value(unavailable) == 0 and _int_or_percent_value(surge) == 0:
            causes.append(invalid(f"{path}.rollingUpdate.maxUnavailable", unavailable,
                                  "may not be 0 when `maxSurge` is 0"))
        return causes
    return [not_supported(path, kind, ["Recreate", "RollingUpdate"])]


@register("apps", "Deployment")
class DeploymentStrategy(_WorkloadStrategy):
    def default(self, obj: Obj) -> None:
        spec = _spec(obj)
        spec.setdefault("replicas", 1)
        strategy = spec.setdefault("strategy", {})
        if isinstance(strategy, dict):
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.setdefault("rollingUpdate", {})
                if isinstance(rolling, dict):
                    rolling.setdefault("maxUnavailable", "25%")
                    rolling.setdefault("maxSurge", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        _default_template(spec)

    def validate(self, obj: Obj) -> list[Cause]:
        spec = _spec(obj)
        causes = podspec.nonnegative(spec.get("replicas"), "spec.replicas")
        selector = spec.get("selector")
        causes += _selector_causes(selector, "spec.selector", "deployment")
        causes += _template_causes(spec, "spec", selector, "ReplicaSet")
        causes += _deployment_strategy_causes(spec.get("strategy"))
        min_ready = spec.get("minReadySeconds", 0)
        causes += podspec.nonnegative(min_ready, "spec.minReadySeconds")
        causes += podspec.nonnegative(spec.get("revisionHistoryLimit"),
                                      "spec.revisionHistoryLimit")
        deadline = spec.get("progressDeadlineSeconds")
        if isinstance(deadline, int):
            causes += podspec.nonnegative(deadline, "spec.progressDeadlineSeconds")
            if isinstance(min_ready, int) and deadline <= min_ready:
                causes.append(invalid("spec.progressDeadlineSeconds", deadline,
                                      "must be greater than minReadySeconds"))
        return causes

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return self.validate(new) + _selector_immutable(new, old)

    def prepare_for_status_update(self, new: Obj, old: Obj) -> None:
        # Upstream resets only spec and labels here: the deployment controller
        # records `deployment.kubernetes.io/revision` through status writes.
        annotations = (new.get("metadata") or {}).get("annotations")
        super().prepare_for_status_update(new, old)
        if annotations is None:
            new["metadata"].pop("annotations", None)
        else:
            new["metadata"]["annotations"] = annotations


# --- StatefulSet, DaemonSet -------------------------------------------------------------------


def _default_claim_template(claim: Obj) -> None:
    claim.setdefault("apiVersion", "v1")
    claim.setdefault("kind", "PersistentVolumeClaim")
    claim_spec = claim.setdefault("spec", {})
    if isinstance(claim_spec, dict):
        claim_spec.setdefault("volumeMode", "Filesystem")
    status = claim.setdefault("status", {})
    if isinstance(status, dict):
        status.setdefault("phase", "Pending")


@register("apps", "StatefulSet")
class StatefulSetStrategy(_WorkloadStrategy):
    UPDATABLE = ("replicas", "ordinals", "template", "updateStrategy",
                 "persistentVolumeClaimRetentionPolicy", "minReadySeconds")

    def default(self, obj: Obj) -> None:
        spec = _spec(obj)
        spec.setdefault("podManagementPolicy", "OrderedReady")
        strategy = spec.setdefault("updateStrategy", {})
        if isinstance(strategy, dict):
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.setdefault("rollingUpdate", {})
                if isinstance(rolling, dict):
                    rolling.setdefault("partition", 0)
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        retention = spec.setdefault("persistentVolumeClaimRetentionPolicy", {})
        if isinstance(retention, dict):
            retention.setdefault("whenDeleted", "Retain")
            retention.setdefault("whenScaled", "Retain")
        for claim in spec.get("volumeClaimTemplates") or []:
            if isinstance(claim, dict):
                _default_claim_template(claim)
        _default_template(spec)

    def validate(self, obj: Obj) -> list[Cause]:
        spec = _spec(obj)
        causes: list[Cause] = []
        policy = spec.get("podManagementPolicy", "")
        if not policy:
            causes.append(required("spec.podManagementPolicy", ""))
        elif policy not in ("OrderedReady", "Parallel"):
            causes.append(invalid("spec.podManagementPolicy", policy,
                                  "must be 'OrderedReady' or 'Parallel'"))
        causes += self._update_strategy_causes(spec.get("updateStrategy"))
        retention = spec.get("persistentVolumeClaimRetentionPolicy")
        if isinstance(retention, dict):
            for key in ("whenDeleted", "whenScaled"):
                value = retention.get(key, "")
                if value not in ("Retain", "Delete"):
                    causes.append(not_supported(
                        f"spec.persistentVolumeClaimRetentionPolicy.{key}", value,
                        ["Retain", "Delete"]))
        causes += podspec.nonnegative(spec.get("replicas"), "spec.replicas")
        causes += podspec.nonnegative(spec.get("minReadySeconds"), "spec.minReadySeconds")
        causes += podspec.nonnegative(meta.dig(spec, "ordinals", "start"),
                                      "spec.ordinals.start")
        selector = spec.get("selector")
        causes += _selector_causes(selector, "spec.selector", "statefulset")
        causes += self._template_causes(spec, selector)
        return causes

    @staticmethod
    def _update_strategy_causes(strategy: Any) -> list[Cause]:
        path = "spec.updateStrategy"
        strategy = strategy if isinstance(strategy, dict) else {}
        kind = strategy.get("type", "")
        rolling = strategy.get("rollingUpdate")
        if not kind:
            return [required(path, "")]
        if kind == "OnDelete":
            if rolling is not None:
                return [podspec.invalid_shown(f"{path}.rollingUpdate", podspec.show_any(rolling),
                                              "only allowed for updateStrategy 'RollingUpdate'")]
            return []
        if kind == "RollingUpdate":
            if not isinstance(rolling, dict):
                return []
            causes = podspec.nonnegative(rolling.get("partition"),
                                         f"{path}.rollingUpdate.partition")
            if "maxUnavailable" in rolling:
                unavailable = rolling["maxUnavailable"]
                unavailable_path = f"{path}.rollingUpdate.maxUnavailable"
                causes += _int_or_percent(unavailable, unavailable_path)
                if _int_or_percent_value(unavailable) == 0:
                    causes.append(invalid(unavailable_path, unavailable, "cannot be 0"))
            return causes
        return [podspec.invalid_shown(path, podspec.show_any(strategy),
                                      "must be 'RollingUpdate' or 'OnDelete'")]

    @staticmethod
    def _template_causes(spec: Obj, selector: Any) -> list[Cause]:
        """Upstream checks only labels and a few fields of a StatefulSet's pod spec."""
        causes: list[Cause] = []
        template = spec.get("template")
        if not isinstance(template, dict):
            return [required("spec.template", "")]
        labels = _template_labels(spec)
        if isinstance(selector, dict) and not podspec.is_empty_selector(selector):
            if podspec.selector_matches(selector, labels) is False:
                causes.append(podspec.invalid_shown(
                    "spec.template.metadata.labels", _shown_labels(spec),
                    "`selector` does not match template `labels`"))
            elif podspec.selector_matches(selector, labels) is None:
                causes.append(podspec.invalid_shown(
                    "spec.selector", podspec.go_label_selector(selector), ""))
        causes += meta.validate_labels(labels, "spec.template.labels")
        causes += meta.validate_annotations(meta.dig(template, "metadata", "annotations"),
                                            "spec.template.annotations")
        restart = _template_spec(spec).get("restartPolicy", "")
        if restart != "Always":
            causes.append(not_supported("spec.template.spec.restartPolicy", restart, ["Always"]))
        if _template_spec(spec).get("activeDeadlineSeconds") is not None:
            causes.append(forbidden("spec.template.spec.activeDeadlineSeconds",
                                    "activeDeadlineSeconds in StatefulSet is not Supported"))
        return causes

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        causes = self.validate(new)
        new_rest = {k: v for k, v in _spec(new).items() if k not in self.UPDATABLE}
        old_rest = {k: v for k, v in _spec(old).items() if k not in self.UPDATABLE}
        if new_rest != old_rest:
            causes.append(forbidden(
                "spec", "updates to statefulset spec for fields other than 'replicas', "
                "'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' "
                "and 'minReadySeconds' are forbidden"))
        return causes


@register("apps", "DaemonSet")
class DaemonSetStrategy(_WorkloadStrategy):
    def default(self, obj: Obj) -> None:
        spec = _spec(obj)
        strategy = spec.setdefault("updateStrategy", {})
        if isinstance(strategy, dict):
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.setdefault("rollingUpdate", {})
                if isinstance(rolling, dict):
                    rolling.setdefault("maxUnavailable", 1)
                    rolling.setdefault("maxSurge", 0)
        spec.setdefault("revisionHistoryLimit", 10)
        _default_template(spec)

    def validate(self, obj: Obj) -> list[Cause]:
        spec = _spec(obj)
        selector = spec.get("selector")
        causes = validate_label_selector_dict(selector, "spec.selector") \
            if isinstance(selector, dict) else []
        labels = _template_labels(spec)
        # A missing selector selects nothing, so it never matches the template.
        matched = podspec.selector_matches(selector, labels) \
            if isinstance(selector, dict) or selector is None else False
        if matched is False:
            causes.append(podspec.invalid_shown("spec.template.metadata.labels",
                                                _shown_labels(spec),
                                                "`selector` does not match template `labels`"))
        if isinstance(selector, dict) and podspec.is_empty_selector(selector):
            causes.append(podspec.invalid_shown("spec.selector",
                                                podspec.go_label_selector(selector),
                                                "empty selector is invalid for daemonset"))
        causes += _template_causes(spec, "spec", None, "DaemonSet")
        causes += podspec.nonnegative(spec.get("minReadySeconds"), "spec.minReadySeconds")
        causes += self._update_strategy_causes(spec.get("updateStrategy"))
        causes += podspec.nonnegative(spec.get("revisionHistoryLimit"),
                                      "spec.revisionHistoryLimit")
        return causes

    @staticmethod
    def _update_strategy_causes(strategy: Any) -> list[Cause]:
        path = "spec.updateStrategy"
        strategy = strategy if isinstance(strategy, dict) else {}
        kind = strategy.get("type", "")
        if kind == "OnDelete":
            return []
        if kind != "RollingUpdate":
            return [not_supported(path, kind, ["RollingUpdate", "OnDelete"])]
        rolling = strategy.get("rollingUpdate")
        if not isinstance(rolling, dict):
            return [required(f"{path}.rollingUpdate", "")]
        unavailable = rolling.get("maxUnavailable", 0)
        surge = rolling.get("maxSurge", 0)
        causes = _int_or_percent(unavailable, f"{path}.rollingUpdate.maxUnavailable")
        causes += _int_or_percent(surge, f"{path}.rollingUpdate.maxSurge")
        has_unavailable = _int_or_percent_value(unavailable) != 0
        has_surge = _int_or_percent_value(surge) != 0
        if has_unavailable and has_surge:
            causes.append(invalid(f"{path}.rollingUpdate.maxSurge", surge,
                                  "may not be set when maxUnavailable is non-zero"))
        elif not has_unavailable and not has_surge:
            causes.append(required(f"{path}.rollingUpdate.maxUnavailable",
                                   "cannot be 0 when maxSurge is 0"))
        return causes

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return self.validate(new) + _selector_immutable(new, old)


# --- ReplicationController, PodTemplate (core/v1) ---------------------------------------------


@register("", "ReplicationController")
class ReplicationControllerStrategy(_WorkloadStrategy):
    def default(self, obj: Obj) -> None:
        spec = _spec(obj)
        labels = _template_labels(spec)
        if labels:
            # v1 fills an empty selector and empty object labels from the template's labels.
            if not spec.get("selector"):
                spec["selector"] = dict(labels)
            metadata = obj.setdefault("metadata", {})
            if not metadata.get("labels"):
                metadata["labels"] = dict(labels)
        spec.setdefault("replicas", 1)
        _default_template(spec)

    def validate(self, obj: Obj) -> list[Cause]:
        spec = _spec(obj)
        causes = podspec.nonnegative(spec.get("replicas"), "spec.replicas")
        causes += podspec.nonnegative(spec.get("minReadySeconds"), "spec.minReadySeconds")
        selector = spec.get("selector")
        if not selector:
            causes.append(required("spec.selector", ""))
        else:
            causes += meta.validate_labels(selector, "spec.selector")
        template = spec.get("template")
        if not isinstance(template, dict):
            causes.append(required("spec.template", ""))
            return causes
        match = {"matchLabels": selector} if isinstance(selector, dict) and selector else None
        causes += _template_causes(spec, "spec", match, "ReplicationController")
        return causes


@register("", "PodTemplate")
class PodTemplateStrategy(Strategy):
    """A PodTemplate's `template` plays the role of a spec (generation follows it)."""

    def default(self, obj: Obj) -> None:
        template = obj.get("template")
        if isinstance(template, dict):
            podspec.default_pod_template(template)

    def prepare_for_create(self, obj: Obj) -> None:
        obj["metadata"]["generation"] = 1

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        generation = old["metadata"].get("generation", 1)
        if new.get("template") != old.get("template"):
            generation += 1
        new["metadata"]["generation"] = generation

    def validate(self, obj: Obj) -> list[Cause]:
        return podspec.validate_pod_template(obj.get("template"), "template")


# --- Job, CronJob (batch/v1) ------------------------------------------------------------------


def _default_job_spec(spec: Obj) -> None:
    """SetDefaults_Job's spec part (the pod template is defaulted separately)."""
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("completionMode", "NonIndexed")
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = podspec.MAX_INT32 if spec.get("backoffLimitPerIndex") is not None \
            else 6
    spec.setdefault("suspend", False)
    if spec.get("podReplacementPolicy") is None:
        spec["podReplacementPolicy"] = "Failed" if spec.get("podFailurePolicy") is not None \
            else "TerminatingOrFailed"


def _job_spec_causes(spec: Obj, path: str) -> list[Cause]:
    """Upstream's validateJobSpec: the checks a Job and a CronJob's jobTemplate share."""
    causes: list[Cause] = []
    for key in ("parallelism", "completions", "activeDeadlineSeconds", "backoffLimit",
                "ttlSecondsAfterFinished", "backoffLimitPerIndex", "maxFailedIndexes"):
        causes += podspec.nonnegative(spec.get(key), f"{path}.{key}")
    mode = spec.get("completionMode")
    if mode is not None and mode not in ("NonIndexed", "Indexed"):
        causes.append(not_supported(f"{path}.completionMode", mode, ["NonIndexed", "Indexed"]))
    if mode == "Indexed" and spec.get("completions") is None:
        causes.append(required(f"{path}.completions", "when completion mode is Indexed"))
    replacement = spec.get("podReplacementPolicy")
    if replacement is not None:
        allowed = ["Failed"] if spec.get("podFailurePolicy") is not None else \
            ["TerminatingOrFailed", "Failed"]
        if replacement not in allowed:
            causes.append(not_supported(f"{path}.podReplacementPolicy", replacement, allowed))
    causes += podspec.validate_pod_template(spec.get("template"), f"{path}.template")
    restart = _template_spec(spec).get("restartPolicy", "")
    if restart not in ("OnFailure", "Never"):
        causes.append(not_supported(f"{path}.template.spec.restartPolicy", restart,
                                    ["OnFailure", "Never"]))
    return causes


@register("batch", "Job")
class JobStrategy(_WorkloadStrategy):
    def default(self, obj: Obj) -> None:
        spec = _spec(obj)
        _default_job_spec(spec)
        labels = _template_labels(spec)
        metadata = obj.setdefault("metadata", {})
        if labels and not metadata.get("labels"):
            metadata["labels"] = dict(labels)
        _default_template(spec)

    def prepare_for_create(self, obj: Obj) -> None:
        super().prepare_for_create(obj)
        spec = _spec(obj)
        if spec.get("manualSelector") is not True:
            self._generate_selector(obj)
        # Read back through defaulting, an unlabelled Job takes its template's labels.
        metadata = obj["metadata"]
        labels = _template_labels(spec)
        if labels and not metadata.get("labels"):
            metadata["labels"] = dict(labels)

    @staticmethod
    def _generate_selector(obj: Obj) -> None:
        """The selector and template labels that tie a Job to its pods by uid."""
        uid = str(obj["metadata"].get("uid", ""))
        name = str(obj["metadata"].get("name", ""))
        spec = _spec(obj)
        template = spec.setdefault("template", {})
        if not isinstance(template, dict):
            return
        metadata = template.setdefault("metadata", {})
        labels = metadata.get("labels")
        if not isinstance(labels, dict):
            labels = metadata["labels"] = {}
        labels.setdefault(JOB_CONTROLLER_UID, uid)
        labels.setdefault(JOB_NAME, name)
        labels.setdefault(LEGACY_CONTROLLER_UID, uid)
        labels.setdefault(LEGACY_JOB_NAME, name)
        if spec.get("selector") is None:
            spec["selector"] = {"matchLabels": {JOB_CONTROLLER_UID: uid}}

    def validate(self, obj: Obj) -> list[Cause]:
        spec = _spec(obj)
        causes = self._generated_selector_causes(obj)
        causes += _job_spec_causes(spec, "spec")
        selector = spec.get("selector")
        if selector is None:
            causes.append(required("spec.selector", ""))
        elif isinstance(selector, dict):
            causes += validate_label_selector_dict(selector, "spec.selector")
            labels = _template_labels(spec)
            if podspec.selector_matches(selector, labels) is False:
                causes.append(podspec.invalid_shown(
                    "spec.template.metadata.labels", _shown_labels(spec),
                    "`selector` does not match template `labels`"))
        return causes

    @staticmethod
    def _generated_selector_causes(obj: Obj) -> list[Cause]:
        spec = _spec(obj)
        if spec.get("manualSelector") is True or spec.get("selector") is None:
            return []
        uid = str(obj["metadata"].get("uid", ""))
        name = str(obj["metadata"].get("name", ""))
        causes: list[Cause] = []
        if not uid:
            causes.append(required("metadata.uid", ""))
        labels = _template_labels(spec)
        for key, expected in ((JOB_CONTROLLER_UID, uid), (JOB_NAME, name)):
            label_path = f"spec.template.metadata.labels[{key}]"
            if key not in labels:
                causes.append(required(label_path, expected))
            elif labels[key] != expected:
                causes.append(podspec.invalid_shown(label_path, _shown_labels(spec),
                                                    f"must be '{expected}'"))
        expected_labels = {JOB_CONTROLLER_UID: uid, JOB_NAME: name}
        if podspec.selector_matches(spec["selector"], expected_labels) is False:
            causes.append(podspec.invalid_shown("spec.selector",
                                                podspec.go_label_selector(spec["selector"]),
                                                "`selector` not auto-generated"))
        return causes

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        causes = self.validate(new)
        new_spec, old_spec = _spec(new), _spec(old)
        elastic = new_spec.get("completionMode") == "Indexed" and \
            new_spec.get("completions") == new_spec.get("parallelism")
        if not elastic:
            causes += meta.immutable("spec.completions", new_spec.get("completions"),
                                     old_spec.get("completions"))
        if new_spec.get("selector") != old_spec.get("selector"):
            causes.append(podspec.invalid_shown(
                "spec.selector", podspec.go_label_selector(new_spec.get("selector")),
                meta.FIELD_IMMUTABLE))
        causes += self._template_update_causes(new_spec, old_spec)
        for key in ("completionMode", "podFailurePolicy", "backoffLimitPerIndex"):
            causes += meta.immutable(f"spec.{key}", new_spec.get(key), old_spec.get(key))
        return causes

    @staticmethod
    def _template_update_causes(new_spec: Obj, old_spec: Obj) -> list[Cause]:
        """The template is immutable, except scheduling directives of a never-started
        suspended Job (here: while suspended)."""
        new_template = copy.deepcopy(new_spec.get("template"))
        old_template = old_spec.get("template")
        if new_spec.get("suspend") and isinstance(new_template, dict) and \
                isinstance(old_template, dict):
            new_pod_spec = meta.as_dict(new_template.get("spec"))
            old_pod_spec = meta.as_dict(old_template.get("spec"))
            for key in ("nodeSelector", "tolerations", "schedulingGates", "affinity"):
                if key in old_pod_spec:
                    new_pod_spec[key] = old_pod_spec[key]
                else:
                    new_pod_spec.pop(key, None)
            new_meta = meta.as_dict(new_template.get("metadata"))
            old_meta = meta.as_dict(old_template.get("metadata"))
            for key in ("labels", "annotations"):
                if key in old_meta:
                    new_meta[key] = old_meta[key]
                else:
                    new_meta.pop(key, None)
        if new_template == old_template:
            return []
        return [podspec.invalid_shown("spec.template", podspec.show_any(new_spec.get("template")),
                                      meta.FIELD_IMMUTABLE)]


def cron_schedule_error(schedule: str) -> str | None:
    """Why a standard cron schedule does not parse (robfig/cron wording), or None.

    The same parser the CronJob controller schedules with, so what the API accepts
    the controller can run.
    """
    try:
        cron.parse_standard(schedule)
    except cron.CronError as err:
        return str(err)
    return None


@register("batch", "CronJob")
class CronJobStrategy(_WorkloadStrategy):
    def default(self, obj: Obj) -> None:
        spec = _spec(obj)
        spec.setdefault("concurrencyPolicy", "Allow")
        spec.setdefault("suspend", False)
        spec.setdefault("successfulJobsHistoryLimit", 3)
        spec.setdefault("failedJobsHistoryLimit", 1)
        job_template = spec.get("jobTemplate")
        if isinstance(job_template, dict):
            job_metadata = job_template.setdefault("metadata", {})
            if isinstance(job_metadata, dict):
                job_metadata.setdefault("creationTimestamp", None)
            job_spec = job_template.get("spec")
            if isinstance(job_spec, dict):
                _default_template(job_spec)

    def validate(self, obj: Obj) -> list[Cause]:
        spec = _spec(obj)
        causes: list[Cause] = []
        name = str(obj.get("metadata", {}).get("name", ""))
        if len(name) > CRONJOB_NAME_MAX:
            causes.append(invalid("metadata.name", name,
                                  f"must be no more than {CRONJOB_NAME_MAX} characters"))
        schedule = spec.get("schedule")
        if not schedule:
            causes.append(required("spec.schedule", ""))
        elif isinstance(schedule, str):
            if "TZ" in schedule:
                causes.append(invalid("spec.schedule", schedule,
                                      "cannot use TZ or CRON_TZ in schedule, use timeZone field "
                                      "instead"))
            else:
                problem = cron_schedule_error(schedule)
                if problem:
                    causes.append(invalid("spec.schedule", schedule, problem))
        time_zone = spec.get("timeZone")
        if isinstance(time_zone, str):
            causes += self._time_zone_causes(time_zone)
        for key in ("startingDeadlineSeconds", "successfulJobsHistoryLimit",
                    "failedJobsHistoryLimit"):
            causes += podspec.nonnegative(spec.get(key), f"spec.{key}")
        policy = spec.get("concurrencyPolicy", "")
        if not policy:
            causes.append(required("spec.concurrencyPolicy", ""))
        elif policy not in ("Allow", "Forbid", "Replace"):
            causes.append(not_supported("spec.concurrencyPolicy", policy,
                                        ["Allow", "Forbid", "Replace"]))
        causes += self._job_template_causes(spec.get("jobTemplate"))
        return causes

    @staticmethod
    def _time_zone_causes(time_zone: str) -> list[Cause]:
        path = "spec.timeZone"
        if " " in time_zone:
            return [invalid(path, time_zone, "unknown time zone " + time_zone)]
        try:
            zoneinfo.ZoneInfo(time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return [invalid(path, time_zone, "unknown time zone " + time_zone)]
        return []

    @staticmethod
    def _job_template_causes(job_template: Any) -> list[Cause]:
        path = "spec.jobTemplate"
        if not isinstance(job_template, dict) or not isinstance(job_template.get("spec"), dict):
            return [required(f"{path}.spec.template.spec.containers", "")]
        job_spec = job_template["spec"]
        causes = _job_spec_causes(job_spec, f"{path}.spec")
        if job_spec.get("selector") is not None:
            causes.append(podspec.invalid_shown(f"{path}.spec.selector",
                                                podspec.go_label_selector(job_spec["selector"]),
                                                "`selector` will be auto-generated"))
        if job_spec.get("manualSelector") is True:
            causes.append(not_supported(f"{path}.spec.manualSelector", True, ["nil", "false"]))
        return causes
