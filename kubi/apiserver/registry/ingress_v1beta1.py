"""Ingress in the versions upstream removed in 1.22 (extensions/v1beta1,
networking.k8s.io/v1beta1), served as views of the networking.k8s.io/v1 resource.

All policy stays in the v1 strategy (`registry.cluster.IngressStrategy`): a v1beta1
object is converted to v1, the v1 strategy defaults, prepares or validates it, and
the result is written back in the object's own version, so errors carry upstream's
(internal, v1-shaped) field paths. Strategies are looked up by (group, kind) for
all versions, so the networking.k8s.io entry is replaced by this one, which passes
v1 objects straight through and converts only the v1beta1 ones.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from kubi.api.errors import Cause
from kubi.api.resources import CATALOGUE, ResourceInfo
from kubi.apiserver import conversion
from kubi.apiserver.registry.cluster import IngressStrategy
from kubi.apiserver.registry.strategy import Obj, Strategy, register

INGRESS_V1 = "networking.k8s.io/v1"
# Served Ingress versions by apiVersion: the v1 one and the legacy ones.
_INGRESS_VERSIONS: dict[str, ResourceInfo] = {
    r.api_version: r for r in CATALOGUE.resources if r.kind == "Ingress"}


def _legacy_version(obj: Obj) -> str | None:
    """The object's apiVersion if it is a v1beta1 one (None for v1 or unknown)."""
    version = obj.get("apiVersion")
    if isinstance(version, str) and version != INGRESS_V1 and version in _INGRESS_VERSIONS:
        return version
    return None


def as_v1(obj: Obj) -> Obj:
    """`obj` in networking.k8s.io/v1 form (the same dict when it already is)."""
    if _legacy_version(obj) is None:
        return obj
    return conversion.to_version(obj, _INGRESS_VERSIONS[INGRESS_V1]) or obj


def _run_in_v1(obj: Obj, step: Callable[[Obj], None]) -> None:
    """Run a mutating v1 strategy step on a v1beta1 `obj`, changing `obj` in place.

    Only the top-level fields the step changed are rewritten (in `obj`'s version);
    the rest stays exactly as the client wrote it, so a re-apply of an unchanged
    manifest is a no-op. The metadata dict is kept: the store holds a reference to
    it across the strategy steps.
    """
    version = _legacy_version(obj)
    if version is None:
        step(obj)
        return
    before = as_v1(obj)
    after = copy.deepcopy(before)
    step(after)
    if after == before:
        return
    back = conversion.to_version(after, _INGRESS_VERSIONS[version]) or after
    for key in list(obj):
        if key not in after and key in before:
            del obj[key]
    for key, value in back.items():
        if key in before and before[key] == after.get(key):
            continue
        if key == "metadata" and isinstance(obj.get("metadata"), dict):
            obj["metadata"].clear()
            obj["metadata"].update(value)
        else:
            obj[key] = value


@register("networking.k8s.io", "Ingress")
@register("extensions", "Ingress")
class LegacyIngressStrategy(Strategy):
    """Runs the v1 Ingress strategy on any served Ingress version."""

    v1 = IngressStrategy()
    tracks_generation = IngressStrategy.tracks_generation
    allow_create_on_update = IngressStrategy.allow_create_on_update
    has_status = IngressStrategy.has_status
    validates_meta = IngressStrategy.validates_meta

    def default(self, obj: Obj) -> None:
        # v1beta1's own default (a missing pathType is ImplementationSpecific) is
        # applied by the conversion to v1, so every v1 reader and the validation see it.
        _run_in_v1(obj, self.v1.default)

    def prepare_for_create(self, obj: Obj) -> None:
        _run_in_v1(obj, self.v1.prepare_for_create)

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        old_v1 = as_v1(old)
        _run_in_v1(new, lambda v1_new: self.v1.prepare_for_update(v1_new, old_v1))

    def prepare_for_status_update(self, new: Obj, old: Obj) -> None:
        old_v1 = as_v1(old)
        _run_in_v1(new, lambda v1_new: self.v1.prepare_for_status_update(v1_new, old_v1))

    def validate(self, obj: Obj) -> list[Cause]:
        return self.v1.validate(as_v1(obj))

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return self.v1.validate_update(as_v1(new), as_v1(old))

    def validate_status_update(self, new: Obj, old: Obj) -> list[Cause]:
        return self.v1.validate_status_update(as_v1(new), as_v1(old))

    def warnings(self, obj: Obj) -> list[str]:
        return self.v1.warnings(as_v1(obj))
