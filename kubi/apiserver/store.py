"""The generic store: one per stored resource, over the storage backend.

It fixes the order of upstream's registry steps (default, prepare, validate,
admit, write) for every verb, owns resourceVersion/uid/generation/deletion
bookkeeping, and turns storage outcomes into API errors. Policy per kind lives
in the strategies; checks that need to read other objects live in admission.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from kubi.api import errors
from kubi.api import meta as m
from kubi.api.errors import Cause, StatusError
from kubi.api.resources import ResourceInfo
from kubi.apiserver import conversion
from kubi.apiserver.registry import meta as meta_validation
from kubi.apiserver.registry.strategy import Strategy
from kubi.apiserver.selectors import FieldSelector, LabelSelector
from kubi.storage.interface import Backend, CompactedError, KeyExistsError, KeyValue

Obj = dict[str, Any]
Mutator = Callable[[Obj], Awaitable[Obj]]

CONFLICT_DETAIL = "the object has been modified; please apply your changes to the latest " \
    "version and try again"
MAX_RETRIES = 16


@dataclass
class WriteOptions:
    dry_run: bool = False
    field_manager: str = ""
    warnings: list[str] = field(default_factory=list)


@dataclass
class DeleteOptions:
    grace_period: int | None = None
    propagation: str | None = None
    precondition_uid: str | None = None
    precondition_rv: str | None = None
    dry_run: bool = False
    orphan_dependents: bool | None = None


@dataclass
class ListResult:
    items: list[Obj]
    resource_version: str
    continue_token: str = ""
    remaining: int | None = None


class Admission:
    """Checks and side effects that need the rest of the cluster (I/O allowed).

    The default admits everything; the API server installs its chain.
    """

    async def admit_create(self, info: ResourceInfo, obj: Obj, opts: WriteOptions) -> None:
        return None

    async def admit_update(self, info: ResourceInfo, new: Obj, old: Obj,
                           opts: WriteOptions) -> None:
        return None

    async def released(self, info: ResourceInfo, obj: Obj) -> None:
        """The object is gone: free what was allocated for it."""
        return None


def encode_continue(revision: int, start_key: str) -> str:
    token = orjson.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": start_key})
    return base64.urlsafe_b64encode(token).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = orjson.loads(raw)
        return int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise errors.bad_request(f"continue key is not valid: {exc}") from exc


EXPIRED_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted between "
    "the time the first chunk was returned and now may show up in the list.")


def _decode(kv: KeyValue) -> Obj:
    obj: Obj = orjson.loads(kv.value)
    obj["metadata"]["resourceVersion"] = str(kv.mod_revision)
    return obj


def _encode(obj: Obj) -> bytes:
    meta = obj["metadata"]
    rv = meta.pop("resourceVersion", None)
    try:
        return orjson.dumps(obj)
    finally:
        if rv is not None:
            meta["resourceVersion"] = rv


class WatchCache:
    """Recently watched values, decoded once for all the watchers of a store (as
    upstream's cacher decodes an event once, not once per watch). The objects are
    shared: whoever receives one must not change it."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._objects: dict[tuple[str, int], Obj] = {}

    def decoded(self, kv: KeyValue) -> Obj:
        key = (kv.key, kv.mod_revision)
        obj = self._objects.get(key)
        if obj is None:
            obj = _decode(kv)
            objects = self._objects
            objects[key] = obj
            if len(objects) > self.size:
                del objects[next(iter(objects))]  # the oldest
        return obj


class Store:
    def __init__(self, backend: Backend, info: ResourceInfo, strategy: Strategy,
                 admission: Admission) -> None:
        self.backend = backend
        self.info = info
        self.strategy = strategy
        self.admission = admission
        self._watch_cache = WatchCache()

    # -- helpers -----------------------------------------------------------------

    def key(self, namespace: str, name: str) -> str:
        return self.info.storage_key(namespace, name)

    def prefix(self, namespace: str) -> str:
        if self.info.namespaced and namespace:
            return f"{self.info.storage_prefix}{namespace}/"
        return self.info.storage_prefix

    def not_found(self, name: str) -> StatusError:
        return errors.not_found(self.info.group, self.info.plural, name)

    def _invalid(self, name: str, causes: list[Cause]) -> StatusError:
        return errors.invalid_object(self.info.group, self.info.kind, name, causes)

    def _meta_causes(self, meta: Obj, is_create: bool) -> list[Cause]:
        if not self.strategy.validates_meta:
            return []
        return meta_validation.validate_object_meta(
            meta, namespaced=self.info.namespaced,
            name_rule=meta_validation.name_rule_for(self.info.group, self.info.kind),
            is_create=is_create)

    def _validate_create(self, obj: Obj) -> None:
        meta = obj["metadata"]
        causes = self._meta_causes(meta, True)
        causes += self.strategy.validate(obj)
        if causes:
            raise self._invalid(m.name_of(obj) or str(meta.get("generateName", "")), causes)

    def _validate_update(self, new: Obj, old: Obj, status_only: bool) -> None:
        causes = self._meta_causes(new["metadata"], False)
        causes += meta_validation.validate_object_meta_update(new["metadata"], old["metadata"])
        if status_only:
            causes += self.strategy.validate_status_update(new, old)
        else:
            causes += self.strategy.validate_update(new, old)
        if causes:
            raise self._invalid(m.name_of(new), causes)

    def _in_version(self, obj: Obj) -> Obj:
        """Objects are stored in the version written; writes work in this store's version."""
        return conversion.to_version(obj, self.info) or obj

    # -- reads -------------------------------------------------------------------

    async def get_kv(self, namespace: str, name: str) -> KeyValue | None:
        _, kv = await self.backend.get(self.key(namespace, name))
        return kv

    async def get(self, namespace: str, name: str) -> Obj:
        kv = await self.get_kv(namespace, name)
        if kv is None:
            raise self.not_found(name)
        return _decode(kv)

    async def list(self, namespace: str, *, labels: LabelSelector | None = None,
                   fields: FieldSelector | None = None, limit: int = 0,
                   continue_token: str = "", resource_version: str = "",
                   resource_version_match: str = "") -> ListResult:
        prefix = self.prefix(namespace)
        revision = 0
        start_key = prefix
        if continue_token:
            revision, start = decode_continue(continue_token)
            if not start.startswith(prefix):
                start = prefix + start
            start_key = start
        elif resource_version and resource_version_match == "Exact":
            revision = _parse_rv(resource_version)
        filtering = (labels is not None and not labels.empty()) or fields is not None
        items: list[Obj] = []
        served = 0
        while True:
            want = 0 if not limit else (limit - len(items)) + (1 if not filtering else 0)
            if filtering and limit:
                want = max(want, 100)
            try:
                served, kvs, more = await self.backend.list(prefix, start_key, want, revision)
            except CompactedError as exc:
                if continue_token:
                    raise errors.gone(EXPIRED_CONTINUE) from exc
                raise errors.gone(f"too old resource version: {revision} "
                                  f"({exc.compact_revision})") from exc
            revision = served
            last_key = ""
            for kv in kvs:
                if limit and len(items) == limit:
                    # One more exists beyond the page.
                    return ListResult(items, str(served), encode_continue(served, kv.key))
                last_key = kv.key
                obj = _decode(kv)
                if labels is not None and not labels.matches(
                        obj["metadata"].get("labels") or {}):
                    continue
                if fields is not None and not fields.matches(obj):
                    continue
                items.append(obj)
            if not more or not kvs:
                return ListResult(items, str(served))
            start_key = last_key + "\x00"
            if limit and len(items) == limit:
                return ListResult(items, str(served), encode_continue(served, start_key))

    # -- writes ------------------------------------------------------------------

    async def create(self, namespace: str, obj: Obj, opts: WriteOptions) -> Obj:
        meta = m.metadata(obj)
        if self.info.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise errors.internal("resourceVersion should not be set on objects to be created")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = str(meta["generateName"]) + m.random_suffix()
        meta["uid"] = m.new_uid()
        meta["creationTimestamp"] = m.rfc3339(m.now())
        for system_field in ("deletionTimestamp", "deletionGracePeriodSeconds", "generation",
                             "selfLink"):
            meta.pop(system_field, None)
        self.strategy.default(obj)
        self.strategy.prepare_for_create(obj)
        self._validate_create(obj)
        opts.warnings.extend(self.strategy.warnings(obj))
        await self.admission.admit_create(self.info, obj, opts)
        if opts.dry_run:
            return obj
        try:
            revision = await self.backend.create(self.key(namespace, meta["name"]), _encode(obj))
        except KeyExistsError as exc:
            await self.admission.released(self.info, obj)
            raise errors.already_exists(self.info.group, self.info.plural, meta["name"]) from exc
        meta["resourceVersion"] = str(revision)
        return obj

    async def update(self, namespace: str, name: str, new: Obj, opts: WriteOptions,
                     *, subresource: str = "") -> tuple[Obj, bool]:
        """PUT. Returns (object, created)."""
        meta = m.metadata(new)
        if meta.get("name") and meta["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL "
                f"({name})")
        meta["name"] = name
        precondition = str(meta.get("resourceVersion") or "")
        if precondition:
            _parse_rv(precondition)

        async def replace(current: Obj) -> Obj:
            if precondition and precondition != current["metadata"]["resourceVersion"]:
                raise errors.conflict(self.info.group, self.info.plural, name, CONFLICT_DETAIL)
            return m.deep_copy(new)

        kv = await self.get_kv(namespace, name)
        if kv is None:
            if subresource or not self.strategy.allow_create_on_update:
                raise self.not_found(name)
            if precondition:
                raise self.not_found(name)
            meta.pop("resourceVersion", None)
            return await self.create(namespace, new, opts), True
        return await self.guaranteed_update(namespace, name, replace, opts,
                                            subresource=subresource, first=kv), False

    async def guaranteed_update(self, namespace: str, name: str, mutate: Mutator,
                                opts: WriteOptions, *, subresource: str = "",
                                first: KeyValue | None = None) -> Obj:
        """Read-modify-write with compare-and-swap, retried on races."""
        key = self.key(namespace, name)
        kv = first
        for _ in range(MAX_RETRIES):
            if kv is None:
                kv = await self.get_kv(namespace, name)
                if kv is None:
                    raise self.not_found(name)
            old = self._in_version(_decode(kv))
            new = await mutate(m.deep_copy(old))
            self._prepare_update(new, old, namespace, subresource)
            opts.warnings.extend(self.strategy.warnings(new))
            if not subresource:
                await self.admission.admit_update(self.info, new, old, opts)
            if _same(new, old):
                return old
            if opts.dry_run:
                return new
            if _finalized(new):
                revision, _, ok = await self.backend.delete(key, kv.mod_revision)
                if ok:
                    await self.admission.released(self.info, new)
                    new["metadata"]["resourceVersion"] = str(revision)
                    return new
                kv = None
                continue
            revision, current, ok = await self.backend.update(key, _encode(new), kv.mod_revision)
            if ok:
                new["metadata"]["resourceVersion"] = str(revision)
                return new
            if current is None:
                raise self.not_found(name)
            kv = current
        raise errors.conflict(self.info.group, self.info.plural, name, CONFLICT_DETAIL)

    def _prepare_update(self, new: Obj, old: Obj, namespace: str, subresource: str) -> None:
        meta = m.metadata(new)
        old_meta = old["metadata"]
        meta["name"] = old_meta["name"]
        if self.info.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise errors.bad_request("the namespace of the provided object does not match "
                                         "the namespace sent on the request")
            meta["namespace"] = namespace
        # System fields the client may leave out are kept, as upstream fills them.
        for system_field in ("uid", "creationTimestamp"):
            if not meta.get(system_field):
                meta[system_field] = old_meta[system_field]
        for system_field in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            if system_field in old_meta:
                meta[system_field] = old_meta[system_field]
            else:
                meta.pop(system_field, None)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if subresource == "binding":
            return  # upstream's BindingREST writes storage directly, bypassing the pod strategy
        if subresource == "status":
            self.strategy.prepare_for_status_update(new, old)
        elif subresource == "finalize":
            # Upstream's namespace finalizeStrategy: spec.finalizers comes from the
            # request (the main update path would restore it), status is kept.
            if "status" in old:
                new["status"] = m.deep_copy(old["status"])
        else:
            self.strategy.default(new)
            self.strategy.prepare_for_update(new, old)
        if "deletionTimestamp" in old_meta:
            # Once deleting, finalizers may only be removed.
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise self._invalid(meta["name"], [errors.forbidden(
                    "metadata.finalizers",
                    f"no new finalizers can be added if the object is being deleted, found "
                    f"new finalizers {sorted(added)}")])
        self._validate_update(new, old, subresource == "status")

    async def delete(self, namespace: str, name: str, opts: DeleteOptions) -> tuple[Obj, bool]:
        """Returns (object, deleted now). A pending delete returns the updated object."""
        key = self.key(namespace, name)
        for _ in range(MAX_RETRIES):
            kv = await self.get_kv(namespace, name)
            if kv is None:
                raise self.not_found(name)
            obj = _decode(kv)
            meta = obj["metadata"]
            if opts.precondition_uid and opts.precondition_uid != meta.get("uid"):
                raise errors.conflict(
                    self.info.group, self.info.plural, name,
                    f"Precondition failed: UID in precondition: {opts.precondition_uid}, "
                    f"UID in object meta: {meta.get('uid')}")
            if opts.precondition_rv and opts.precondition_rv != meta["resourceVersion"]:
                raise errors.conflict(
                    self.info.group, self.info.plural, name,
                    f"Precondition failed: ResourceVersion in precondition: "
                    f"{opts.precondition_rv}, ResourceVersion in object meta: "
                    f"{meta['resourceVersion']}")
            pending = self._pending_deletion(obj, opts)
            if pending is not None:
                if opts.dry_run or _same(pending, obj):
                    return pending, False
                revision, _, ok = await self.backend.update(key, _encode(pending),
                                                            kv.mod_revision)
                if not ok:
                    continue
                pending["metadata"]["resourceVersion"] = str(revision)
                return pending, False
            if opts.dry_run:
                return obj, True
            revision, _, ok = await self.backend.delete(key, kv.mod_revision)
            if ok:
                await self.admission.released(self.info, obj)
                return obj, True
        raise errors.conflict(self.info.group, self.info.plural, name, CONFLICT_DETAIL)

    def _pending_deletion(self, obj: Obj, opts: DeleteOptions) -> Obj | None:
        """The object as it must be stored while its deletion waits, or None to delete now."""
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        grace = self._grace_period(obj, opts)
        if opts.propagation == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        elif opts.propagation == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if self.info.kind == "Namespace" and self.info.group == "":
            if not (obj.get("spec") or {}).get("finalizers") and not finalizers:
                return None
            pending = m.deep_copy(obj)
            pending["metadata"].setdefault("deletionTimestamp", m.rfc3339(m.now()))
            pending["metadata"]["deletionGracePeriodSeconds"] = 0
            pending.setdefault("status", {})["phase"] = "Terminating"
            if finalizers:
                pending["metadata"]["finalizers"] = finalizers
            return pending
        if not finalizers and not grace:
            return None
        pending = m.deep_copy(obj)
        pmeta = pending["metadata"]
        if "deletionTimestamp" in pmeta:
            # Already deleting: only a shorter grace period changes anything.
            old_grace = int(pmeta.get("deletionGracePeriodSeconds") or 0)
            if grace is not None and grace < old_grace:
                if grace == 0 and not finalizers:
                    return None
                pmeta["deletionGracePeriodSeconds"] = grace
                pmeta["deletionTimestamp"] = m.rfc3339(
                    m.now() + _seconds(grace))
            pmeta["finalizers"] = finalizers or pmeta.get("finalizers", [])
            if not pmeta["finalizers"]:
                pmeta.pop("finalizers")
            return pending
        pmeta["deletionTimestamp"] = m.rfc3339(m.now() + _seconds(grace or 0))
        pmeta["deletionGracePeriodSeconds"] = grace or 0
        if finalizers:
            pmeta["finalizers"] = finalizers
        return pending

    def _grace_period(self, obj: Obj, opts: DeleteOptions) -> int | None:
        """Graceful deletion applies to pods that a node still has to stop."""
        if not (self.info.kind == "Pod" and self.info.group == ""):
            return None
        spec = obj.get("spec") or {}
        phase = (obj.get("status") or {}).get("phase")
        if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            return None
        if opts.grace_period is not None:
            return max(opts.grace_period, 0)
        grace = spec.get("terminationGracePeriodSeconds")
        return 30 if grace is None else int(grace)

    # -- watch -------------------------------------------------------------------

    async def watch(self, namespace: str, resource_version: str, *,
                    labels: LabelSelector | None = None,
                    fields: FieldSelector | None = None,
                    send_initial: bool | None = None) -> AsyncIterator[tuple[str, Obj]]:
        """Yield (type, object) as upstream's watch: ADDED/MODIFIED/DELETED/BOOKMARK."""
        prefix = self.prefix(namespace)

        def matches(obj: Obj) -> bool:
            if labels is not None and not labels.matches(obj["metadata"].get("labels") or {}):
                return False
            return fields is None or fields.matches(obj)

        if resource_version in ("", "0") or send_initial:
            listed = await self.list(namespace, labels=labels, fields=fields,
                                     resource_version=resource_version)
            for obj in listed.items:
                yield "ADDED", obj
            if send_initial:
                yield "BOOKMARK", {"metadata": {
                    "resourceVersion": listed.resource_version,
                    "annotations": {"k8s.io/initial-events-end": "true"}}}
            start = int(listed.resource_version) + 1
        else:
            start = _parse_rv(resource_version) + 1
        # Without selectors every object matches: the previous value need not be read.
        selective = labels is not None or fields is not None
        decoded = self._watch_cache.decoded
        try:
            async for batch in self.backend.watch(prefix, start):
                for event in batch:
                    # Shared with every other watcher of this store: never mutated.
                    obj = decoded(event.kv)
                    if event.type == "DELETE":
                        if not selective or matches(obj):
                            yield "DELETED", obj
                        continue
                    now_matches = not selective or matches(obj)
                    if event.prev_kv is None:
                        if now_matches:
                            yield "ADDED", obj
                    elif not selective or matches(decoded(event.prev_kv)):
                        if now_matches:
                            yield "MODIFIED", obj
                        else:
                            yield "DELETED", obj
                    elif now_matches:
                        yield "ADDED", obj
        except CompactedError as exc:
            raise errors.gone(f"too old resource version: {start - 1} "
                              f"({exc.compact_revision})") from exc


def _parse_rv(value: str) -> int:
    try:
        rv = int(value)
        if rv < 0:
            raise ValueError(value)
        return rv
    except ValueError as exc:
        raise errors.bad_request(f'invalid resource version "{value}"') from exc


def _seconds(n: int) -> Any:
    import datetime

    return datetime.timedelta(seconds=n)


def _same(a: Obj, b: Obj) -> bool:
    return orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        b, option=orjson.OPT_SORT_KEYS)


def _finalized(obj: Obj) -> bool:
    """An update completes a pending delete once nothing holds it (upstream's
    shouldDeleteDuringUpdate): no finalizers left and no grace period still running."""
    meta = obj["metadata"]
    return ("deletionTimestamp" in meta and not meta.get("finalizers")
            and int(meta.get("deletionGracePeriodSeconds") or 0) == 0 and not (
                obj.get("kind") == "Namespace" and (obj.get("spec") or {}).get("finalizers")))
