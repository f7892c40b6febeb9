"""Per-resource policy, as upstream's registry strategies.

A strategy is stateless and does no I/O: it defaults, prepares and validates an
object. The generic store (`kubi.apiserver.store`) fixes the order of the steps:

    create: default -> prepare_for_create -> validate (+ object meta) -> warnings
    update: default -> prepare_for_update -> validate_update (+ meta) -> warnings
    status: prepare_for_status_update -> validate_status_update

Objects are plain JSON dicts in the served API version (camelCase keys).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from kubi.api.errors import Cause

Obj = dict[str, Any]


class Strategy:
    """Defaults for every resource; subclasses override what their kind needs."""

    # Resources whose spec changes bump metadata.generation (upstream: those with a
    # status subresource and a spec).
    tracks_generation: bool = False
    # A PUT of a missing object creates it (upstream: true for a few kinds only).
    allow_create_on_update: bool = False
    # The resource has a status subresource: status is written only through it.
    has_status: bool = False
    # Upstream checks object metadata for every kind but core/v1 Events.
    validates_meta: bool = True

    def default(self, obj: Obj) -> None:
        """Fill in upstream's defaults, in place."""

    def prepare_for_create(self, obj: Obj) -> None:
        if self.has_status:
            obj.pop("status", None)
        if self.tracks_generation:
            obj["metadata"]["generation"] = 1

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        if self.has_status:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        if self.tracks_generation:
            generation = old["metadata"].get("generation", 1)
            if new.get("spec") != old.get("spec"):
                generation += 1
            new["metadata"]["generation"] = generation

    def prepare_for_status_update(self, new: Obj, old: Obj) -> None:
        """A status write keeps everything but status (and metadata it may not touch)."""
        for key, value in old.items():
            if key not in ("status", "metadata"):
                new[key] = value
        for key in list(new):
            if key not in old and key not in ("status", "metadata", "apiVersion", "kind"):
                del new[key]
        for meta_key in ("labels", "annotations", "finalizers", "ownerReferences"):
            if meta_key in old["metadata"]:
                new["metadata"][meta_key] = old["metadata"][meta_key]
            else:
                new["metadata"].pop(meta_key, None)
        if "generation" in old["metadata"]:
            new["metadata"]["generation"] = old["metadata"]["generation"]

    def validate(self, obj: Obj) -> list[Cause]:
        return []

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return self.validate(new)

    def validate_status_update(self, new: Obj, old: Obj) -> list[Cause]:
        return []

    def warnings(self, obj: Obj) -> list[str]:
        return []


_STRATEGIES: dict[tuple[str, str], Strategy] = {}
_DEFAULT = Strategy()

S = TypeVar("S", bound=type[Strategy])


def register(group: str, *kinds: str) -> Callable[[S], S]:
    """Class decorator: this strategy serves `kinds` of `group` (all versions)."""

    def wrap(cls: S) -> S:
        for kind in kinds:
            _STRATEGIES[(group, kind)] = cls()
        return cls

    return wrap


def strategy_for(group: str, kind: str) -> Strategy:
    return _STRATEGIES.get((group, kind), _DEFAULT)
