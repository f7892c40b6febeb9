"""ControllerRevisions: the recorded templates of StatefulSets and DaemonSets.

A revision stores, in `data`, the strategic merge patch that puts its owner's pod
template back (`{"spec": {"template": {..., "$patch": "replace"}}}`), which is
what `kubectl rollout history` shows and `kubectl rollout undo` applies.
Semantics follow upstream's pkg/controller/history and the revision handling
in pkg/controller/statefulset and pkg/controller/daemon.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import orjson

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.api.labels import label_selector_matches, selector_to_string
from kubi.client.rest import Client
from kubi.controllers._pods import (
    adopt_patch,
    controller_ref,
    owner_reference,
    release_patch,
)

Obj = dict[str, Any]

CONTROLLER_REVISIONS = "controllerrevisions.apps"
# apps/v1 ControllerRevisionHashLabelKey: on pods (both kinds) and DaemonSet revisions.
REVISION_HASH_LABEL = "controller-revision-hash"
# pkg/controller/history ControllerRevisionHashLabel: on StatefulSet revisions.
HISTORY_HASH_LABEL = "controller.kubernetes.io/hash"

_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # util/rand: no vowels, no look-alikes
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
_MAX_PREFIX = 223  # keeps `<prefix>-<hash>` within 253 characters


# -- hashing -------------------------------------------------------------------------------


def fnv32(data: bytes) -> int:
    """FNV-1 32-bit (Go's fnv.New32), which upstream uses for revision names."""
    value = _FNV_OFFSET
    for byte in data:
        value = (value * _FNV_PRIME) & 0xFFFFFFFF
        value ^= byte
    return value


def fnv32a(data: bytes) -> int:
    """FNV-1a 32-bit (Go's fnv.New32a), which upstream's ComputeHash uses."""
    value = _FNV_OFFSET
    for byte in data:
        value ^= byte
        value = (value * _FNV_PRIME) & 0xFFFFFFFF
    return value


def safe_encode(text: str) -> str:
    """util/rand.SafeEncodeString: each byte mapped onto a vowel-free alphabet."""
    return "".join(_SAFE_ALPHABET[b % len(_SAFE_ALPHABET)] for b in text.encode())


def canonical_json(value: Any) -> bytes:
    """Sorted-key compact JSON, as Go's json.Marshal writes a map."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def hash_revision_data(data: Any, collision_count: int | None) -> str:
    """history.HashControllerRevision over the revision's data."""
    raw = canonical_json(data)
    if collision_count is not None:
        raw += str(collision_count).encode()
    return safe_encode(str(fnv32(raw)))


def compute_template_hash(template: Obj, collision_count: int | None) -> str:
    """controller.ComputeHash: the DaemonSet's template hash (a JSON digest here, not
    Go's struct dump, so values differ from upstream's but behave the same)."""
    raw = canonical_json(template)
    if collision_count is not None:
        raw += str(collision_count).encode()
    return safe_encode(str(fnv32a(raw)))


def revision_name(prefix: str, hash_value: str) -> str:
    return f"{prefix[:_MAX_PREFIX]}-{hash_value}"


# -- the stored patch ------------------------------------------------------------------------


def template_patch(owner: Obj) -> Obj:
    """The patch that restores `owner`'s pod template (upstream getPatch)."""
    template = m.deep_copy((owner.get("spec") or {}).get("template") or {})
    template["$patch"] = "replace"
    return {"spec": {"template": template}}


def revision_template(revision: Obj) -> Obj:
    """The pod template a revision records (its patch without the directive)."""
    template = m.deep_copy(((revision.get("data") or {}).get("spec") or {}).get("template")
                           or {})
    template.pop("$patch", None)
    return template


def apply_revision(owner: Obj, revision: Obj) -> Obj:
    """A copy of `owner` with the template recorded in `revision` (ApplyRevision)."""
    restored = m.deep_copy(owner)
    restored.setdefault("spec", {})["template"] = revision_template(revision)
    return restored


def template_matches(owner: Obj, revision: Obj) -> bool:
    """Whether `revision` records exactly `owner`'s current template."""
    return canonical_json(revision.get("data")) == canonical_json(template_patch(owner))


# -- revisions as values ---------------------------------------------------------------------


def new_revision(owner: Obj, data: Obj, number: int, labels: dict[str, str] | None,
                 collision_count: int | None, *, hash_label: str = HISTORY_HASH_LABEL,
                 hash_value: str | None = None,
                 annotations: dict[str, str] | None = None) -> Obj:
    """An unsaved ControllerRevision owned by `owner` (history.NewControllerRevision).

    The name is `<owner>-<hash>`; the hash is that of `data` unless given.
    """
    owner_meta = owner.get("metadata") or {}
    hash_value = hash_value or hash_revision_data(data, collision_count)
    metadata: Obj = {
        "name": revision_name(owner_meta.get("name", ""), hash_value),
        "labels": {**(labels or {}), hash_label: hash_value},
        "ownerReferences": [owner_reference(owner)],
    }
    if owner_meta.get("namespace"):
        metadata["namespace"] = owner_meta["namespace"]
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": metadata,
            "data": data, "revision": number}


def revision_number(revision: Obj) -> int:
    return int(revision.get("revision") or 0)


def _compare_revisions(a: Obj, b: Obj) -> int:
    """By number, then creation time, then name (history's byRevision)."""
    if revision_number(a) != revision_number(b):
        return -1 if revision_number(a) < revision_number(b) else 1
    meta_a, meta_b = a.get("metadata") or {}, b.get("metadata") or {}
    created_a = meta_a.get("creationTimestamp") or ""
    created_b = meta_b.get("creationTimestamp") or ""
    if created_a != created_b:
        return -1 if created_a < created_b else 1
    name_a, name_b = meta_a.get("name", ""), meta_b.get("name", "")
    return (name_a > name_b) - (name_a < name_b)


def sort_revisions(revisions: Iterable[Obj]) -> list[Obj]:
    return sorted(revisions, key=functools.cmp_to_key(_compare_revisions))


def equal_revision(a: Obj | None, b: Obj | None) -> bool:
    """Same recorded data (history.EqualRevision; our hashes are never numeric, so
    upstream's numeric-hash shortcut never applies)."""
    if a is None or b is None:
        return a is b
    return canonical_json(a.get("data")) == canonical_json(b.get("data"))


def find_equal_revisions(revisions: Iterable[Obj], needle: Obj) -> list[Obj]:
    return [r for r in revisions if equal_revision(r, needle)]


def next_revision(sorted_revisions: list[Obj]) -> int:
    return revision_number(sorted_revisions[-1]) + 1 if sorted_revisions else 1


def max_revision(revisions: Iterable[Obj]) -> int:
    return max((revision_number(r) for r in revisions), default=0)


def revisions_to_truncate(sorted_revisions: list[Obj], live: set[str],
                          limit: int) -> list[Obj]:
    """The oldest revisions not in use (`live` names) beyond `limit` kept ones."""
    history = [r for r in sorted_revisions if (r.get("metadata") or {}).get("name") not in live]
    excess = len(history) - max(limit, 0)
    return history[:excess] if excess > 0 else []


# -- revisions in the API ----------------------------------------------------------------------


class History:
    """ControllerRevisions of one owner, read and written through the API
    (upstream's realHistory)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def _current(self, owner: Obj, selector: Obj | None) -> list[Obj]:
        """Revisions of the owner's namespace matching `selector`, read from the API:
        revision numbers come from this list, so a cache a step behind would hand out
        the same number twice."""
        namespace = (owner.get("metadata") or {}).get("namespace", "")
        items, _ = await self.client.list_all(CONTROLLER_REVISIONS, namespace,
                                              label_selector=selector_to_string(selector))
        return [r for r in items
                if label_selector_matches(selector, (r.get("metadata") or {}).get("labels"))]

    async def list_revisions(self, owner: Obj, selector: Obj | None) -> list[Obj]:
        """Revisions matching `selector` that `owner` controls or nobody controls."""
        owner_uid = (owner.get("metadata") or {}).get("uid")
        found = []
        for revision in await self._current(owner, selector):
            ref = controller_ref(revision)
            if ref is None or ref.get("uid") == owner_uid:
                found.append(revision)
        return found

    async def claim_revisions(self, owner: Obj, selector: Obj | None
                              ) -> tuple[list[Obj], list[Obj], list[Obj]]:
        """(orphans to adopt, owned ones to release, owned and matching), as
        ClaimControllerRevisions decides."""
        owner_meta = owner.get("metadata") or {}
        deleting = bool(owner_meta.get("deletionTimestamp"))
        adopt: list[Obj] = []
        release: list[Obj] = []
        owned: list[Obj] = []
        namespace = owner_meta.get("namespace", "")
        items, _ = await self.client.list_all(CONTROLLER_REVISIONS, namespace)
        for revision in items:
            rev_meta = revision.get("metadata") or {}
            matches = label_selector_matches(selector, rev_meta.get("labels") or {})
            ref = controller_ref(revision)
            if ref is not None:
                if ref.get("uid") != owner_meta.get("uid"):
                    continue
                if matches:
                    owned.append(revision)
                elif not deleting:
                    release.append(revision)
            elif matches and not deleting and not rev_meta.get("deletionTimestamp"):
                adopt.append(revision)
        return adopt, release, owned

    async def adopt(self, owner: Obj, revision: Obj) -> Obj:
        meta = revision.get("metadata") or {}
        return await self.client.patch(CONTROLLER_REVISIONS, meta.get("name", ""),
                                       adopt_patch(owner, revision), meta.get("namespace", ""),
                                       patch_type="strategic")

    async def release(self, owner: Obj, revision: Obj) -> Obj | None:
        meta = revision.get("metadata") or {}
        try:
            return await self.client.patch(CONTROLLER_REVISIONS, meta.get("name", ""),
                                           release_patch(owner, revision),
                                           meta.get("namespace", ""), patch_type="strategic")
        except StatusError as err:
            if err.code in (404, 422):  # gone, or no longer ours: nothing to release
                return None
            raise

    async def create(self, owner: Obj, revision: Obj, collision_count: int,
                     hash_label: str = HISTORY_HASH_LABEL) -> tuple[Obj, int]:
        """Create `revision`, renaming it on a name collision with different data.

        Returns the stored revision and the (possibly raised) collision count.
        """
        owner_meta = owner.get("metadata") or {}
        namespace = owner_meta.get("namespace", "")
        while True:
            candidate = m.deep_copy(revision)
            hash_value = hash_revision_data(candidate.get("data"), collision_count)
            candidate["metadata"]["name"] = revision_name(owner_meta.get("name", ""),
                                                          hash_value)
            candidate["metadata"].setdefault("labels", {})[hash_label] = hash_value
            try:
                created = await self.client.create(CONTROLLER_REVISIONS, candidate, namespace)
                return created, collision_count
            except StatusError as err:
                if err.code != 409 or err.reason != "AlreadyExists":
                    raise
            existing = await self.client.get(CONTROLLER_REVISIONS,
                                             candidate["metadata"]["name"], namespace)
            if equal_revision(existing, candidate):
                return existing, collision_count
            collision_count += 1

    async def update_revision(self, revision: Obj, number: int) -> Obj:
        """Renumber `revision` (a rollback makes an old revision the newest)."""
        current = m.deep_copy(revision)
        meta = current.get("metadata") or {}
        for _ in range(5):
            if revision_number(current) == number:
                return current
            current["revision"] = number
            try:
                updated: Obj = await self.client.update(CONTROLLER_REVISIONS, current)
                return updated
            except StatusError as err:
                if err.code != 409:
                    raise
            current = await self.client.get(CONTROLLER_REVISIONS, meta.get("name", ""),
                                            meta.get("namespace", ""))
        raise StatusError(409, "Conflict", f"could not renumber revision {meta.get('name')}")

    async def delete(self, revision: Obj) -> None:
        meta = revision.get("metadata") or {}
        try:
            await self.client.delete(CONTROLLER_REVISIONS, meta.get("name", ""),
                                     meta.get("namespace", ""))
        except StatusError as err:
            if err.code != 404:
                raise
