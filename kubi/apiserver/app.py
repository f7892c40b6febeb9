"""The API server as an ASGI application: authentication, routing, verbs.

Paths follow upstream exactly:
    /api/v1/[namespaces/{ns}/]{resource}[/{name}[/{subresource}]]
    /apis/{group}/{version}/[namespaces/{ns}/]{resource}[/{name}[/{subresource}]]
Each request becomes a `Target` (resource, namespace, name, subresource) and is
served by the verb handler over the resource's generic store.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from kubi.api import errors, protobuf
from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.api.resources import CATALOGUE, ResourceInfo
from kubi.apiserver import (
    conversion,
    discovery,
    fieldcheck,
    openapi,
    patch,
    selectors,
    subresources,
    tables,
)
from kubi.apiserver import registry as _registry  # noqa: F401 - registers strategies
from kubi.apiserver.admission import IMMORTAL_NAMESPACES, ClusterAdmission
from kubi.apiserver.http import (
    JSON,
    PROTOBUF,
    YAML,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    StreamResponse,
    check_acceptable,
    decode_body,
    object_response,
    status_response,
)
from kubi.apiserver.registry.strategy import strategy_for
from kubi.apiserver.store import DeleteOptions, Store, WriteOptions
from kubi.apiserver.tokens import ANONYMOUS, TokenAuthority, User
from kubi.storage.interface import Backend

log = logging.getLogger("kubi.apiserver")

Obj = dict[str, Any]

VERSION_INFO = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.0+kubi",
    "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
    "buildDate": "2026-11-27T00:00:00Z", "goVersion": "go1.23.0", "compiler": "gc",
    "platform": "linux/amd64",
}
PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")
BOOKMARK_INTERVAL = 60.0
DEFAULT_WATCH_TIMEOUT = 1800
WATCH_CHUNK_EVENTS = 256  # most events sent in one chunk of a watch response
ENCODED_EVENTS_KEPT = 4096
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json", "application/apply-patch+yaml")


@dataclass
class Target:
    info: ResourceInfo
    namespace: str
    name: str
    subresource: str


# The server process keeps millions of long-lived JSON containers (stores' watch caches,
# informer caches of the components beside it); with CPython's default thresholds
# (700, 10, 10) the collector ran young collections every few decoded objects and full
# ones costing seconds, a quarter of the loop's time at 10,000 pods.
GC_THRESHOLDS = (10_000, 50, 100)


def tune_gc() -> None:
    """Collect less often (never lowering thresholds someone raised further)."""
    current = gc.get_threshold()
    gc.set_threshold(*(max(a, b) for a, b in zip(current, GC_THRESHOLDS, strict=True)))


class APIServer:
    def __init__(self, backend: Backend, tokens: TokenAuthority,
                 service_cidr: str = "10.43.0.0/16",
                 disabled_admission: frozenset[str] = frozenset()) -> None:
        self.backend = backend
        self.tokens = tokens
        self._stores: dict[str, Store] = {}
        self._encoded_events: dict[int, tuple[Obj, str, bytes]] = {}
        self.admission = ClusterAdmission(
            self.store_for, service_cidr,
            service_accounts="ServiceAccount" not in disabled_admission)
        self.ready = False
        self._closing: asyncio.Event | None = None

    @property
    def closing(self) -> asyncio.Event:
        """Set on shutdown: long-running streams end so the server can stop at once."""
        if self._closing is None:
            self._closing = asyncio.Event()
        return self._closing

    # -- stores -------------------------------------------------------------------

    def store_for(self, group: str, plural: str) -> Store:
        info = next(r for r in CATALOGUE.resources if r.group == group and r.plural == plural)
        return self.store(info)

    def store(self, info: ResourceInfo) -> Store:
        key = f"{info.api_version}/{info.plural}"
        store = self._stores.get(key)
        if store is None:
            store = Store(self.backend, info, strategy_for(info.group, info.kind),
                          self.admission)
            self._stores[key] = store
        return store

    # -- ASGI ---------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            await subresources.websocket(self, scope, receive, send)
            return
        request = Request.from_scope(scope, receive)
        try:
            response = await self.handle(request)
        except StatusError as err:
            response = status_response(err)
        except Exception as exc:  # an unexpected bug must still answer as upstream would
            log.exception("internal error serving %s %s", request.method, request.path)
            response = status_response(errors.internal(f"Internal error occurred: {exc}"))
        await response.send(send)

    def authenticate(self, request: Request) -> User:
        header = request.headers.get("authorization", "")
        if not header:
            return ANONYMOUS
        scheme, _, token = header.partition(" ")
        user = self.tokens.authenticate(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise StatusError(401, "Unauthorized", "Unauthorized")
        return user

    async def handle(self, request: Request) -> Response | StreamResponse:
        user = self.authenticate(request)
        request.user, request.groups = user.name, user.groups
        path = request.path.rstrip("/") or "/"
        if path in PUBLIC_PATHS or path.startswith(("/livez/", "/readyz/", "/healthz/")):
            return self._public(path)
        if user is ANONYMOUS:
            raise errors.forbidden_request(
                f'forbidden: User "system:anonymous" cannot {request.method.lower()} path '
                f'"{request.path}"')
        if path.startswith("/openapi/"):
            return self._openapi(request, path)
        parts = path.strip("/").split("/")
        if parts[0] == "api":
            if len(parts) == 1:
                return self._discovery(request, core=True)
            if parts[1] != "v1":
                raise self._path_not_found()
            if len(parts) == 2:
                return _raw(discovery.api_resource_list("", "v1"))
            return await self._resource(request, "", "v1", parts[2:])
        if parts[0] == "apis":
            if len(parts) == 1:
                return self._discovery(request, core=False)
            if len(parts) == 2:
                body = discovery.api_group(parts[1])
                if body is None:
                    raise self._path_not_found()
                return _raw(body)
            if len(parts) == 3:
                body = discovery.api_resource_list(parts[1], parts[2])
                if body is None:
                    raise self._path_not_found()
                return _raw(body)
            return await self._resource(request, parts[1], parts[2], parts[3:])
        raise self._path_not_found()

    @staticmethod
    def _path_not_found() -> StatusError:
        return StatusError(404, "NotFound", "the server could not find the requested resource")

    def _public(self, path: str) -> Response:
        if path == "/version":
            return Response(200, orjson.dumps(VERSION_INFO))
        if not self.ready:
            return Response(500, b"[-]storage not ready\nhealthz check failed", "text/plain")
        return Response(200, b"ok", "text/plain")

    def _discovery(self, request: Request, core: bool) -> Response:
        content_type = discovery.wants_aggregated(request.accept)
        if content_type:
            body = discovery.aggregated(core, content_type)
            tag = discovery.etag(body)
            if request.headers.get("if-none-match") == tag:
                return Response(304, b"", content_type, [("etag", tag)])
            return Response(200, body, content_type, [("etag", tag), ("vary", "Accept")])
        return _raw(discovery.api_versions() if core else discovery.api_group_list())

    def _openapi(self, request: Request, path: str) -> Response:
        if path == "/openapi/v2":
            return Response(200, openapi.v2_document(), JSON)
        if path == "/openapi/v3":
            return Response(200, orjson.dumps(openapi.v3_index()), JSON)
        rest = path.removeprefix("/openapi/v3/")
        parts = rest.split("/")
        if parts[0] == "api" and len(parts) == 2:
            group, version = "", parts[1]
        elif parts[0] == "apis" and len(parts) == 3:
            group, version = parts[1], parts[2]
        else:
            raise self._path_not_found()
        doc = openapi.v3_document(group, version)
        if doc is None:
            raise self._path_not_found()
        headers = [("etag", f'"{openapi.v3_etag(group, version)}"')]
        if request.param("hash"):
            headers.append(("cache-control", "public, immutable"))
        return Response(200, doc, JSON, headers)

    # -- routing ------------------------------------------------------------------

    def _target(self, group: str, version: str, parts: list[str]) -> Target:
        namespace = ""
        if len(parts) >= 3 and parts[0] == "namespaces":
            # namespaces/{ns}/{resource}... unless it is the namespace's own subresource
            namespace = parts[1]
            ns_info = CATALOGUE.by_path(group, version, "namespaces")
            if not (group == "" and len(parts) == 3 and ns_info is not None
                    and ns_info.subresource(parts[2]) is not None):
                parts = parts[2:]
            else:
                return Target(ns_info, "", parts[1], parts[2])
        info = CATALOGUE.by_path(group, version, parts[0])
        if info is None or len(parts) > 3:
            raise self._path_not_found()
        if namespace and not info.namespaced:
            raise self._path_not_found()
        name = parts[1] if len(parts) > 1 else ""
        sub = parts[2] if len(parts) > 2 else ""
        if sub and info.subresource(sub) is None:
            raise self._path_not_found()
        return Target(info, namespace, name, sub)

    async def _resource(self, request: Request, group: str, version: str,
                        parts: list[str]) -> Response | StreamResponse:
        if subresources.is_proxy(group, parts):  # takes any path after it
            return await subresources.proxy(self, request, parts)
        legacy_watch = parts[0] == "watch"
        if legacy_watch:
            parts = parts[1:]
            request.query["watch"] = ["true"]
            if not parts:
                raise self._path_not_found()
        target = self._target(group, version, parts)
        check_acceptable(request.accept)
        if not target.info.deprecation:
            return await self._serve(request, target, group, parts)
        # Deprecated versions warn on every answer, errors included, as upstream.
        try:
            response: Response | StreamResponse = await self._serve(request, target, group,
                                                                    parts)
        except StatusError as err:
            response = status_response(err)
        response.headers.append(("warning", f'299 - "{target.info.deprecation}"'))
        return response

    async def _serve(self, request: Request, target: Target, group: str,
                     parts: list[str]) -> Response | StreamResponse:
        method = request.method
        info = target.info
        verb = _verb(method, target, request)
        allowed = (info.subresource(target.subresource).verbs  # type: ignore[union-attr]
                   if target.subresource else info.verbs)
        if verb not in allowed and not (verb == "list" and "list" in info.verbs):
            raise errors.method_not_allowed()
        if target.subresource:
            return await subresources.handle(self, request, target, verb)
        if verb == "create" and not info.persisted:
            return await subresources.review(self, request, target)
        if verb == "watch":
            return await self.watch(request, target)
        handler: Callable[[Request, Target], Awaitable[Response]] = {
            "get": self.get, "list": self.list, "create": self.create,
            "update": self.update, "patch": self.patch, "delete": self.delete,
            "deletecollection": self.delete_collection,
        }[verb]
        return await handler(request, target)

    # -- body decoding ------------------------------------------------------------

    async def read_object(self, request: Request, info: ResourceInfo,
                          opts: WriteOptions) -> Obj:
        body = await request.body()
        content_type = request.content_type
        if content_type == PROTOBUF:
            obj = protobuf.decode_body(body)
        elif content_type in (JSON, YAML, "", "text/yaml"):
            obj = decode_body(body, content_type or JSON)
        else:
            raise errors.unsupported_media_type(request.headers.get("content-type", ""))
        return self.check_object(obj, info, request, opts)

    def check_object(self, obj: Any, info: ResourceInfo, request: Request,
                     opts: WriteOptions) -> Obj:
        if not isinstance(obj, dict):
            raise errors.bad_request(
                "Object 'Kind' is missing in the request body: expected an object")
        api_version = obj.get("apiVersion") or info.api_version
        kind = obj.get("kind") or info.kind
        if not isinstance(api_version, str) or not isinstance(kind, str):
            raise errors.bad_request("apiVersion and kind must be strings")
        if kind != info.kind:
            raise errors.bad_request(
                f'{kind} in version "{api_version.rsplit("/", 1)[-1]}" cannot be handled as a '
                f"{info.kind}: the kind in the data ({kind}) does not match the expected "
                f"kind ({info.kind})")
        if api_version != info.api_version:
            converted = conversion.to_version(obj, info)
            if converted is None:
                raise errors.bad_request(
                    f"the API version in the data ({api_version}) does not match the expected "
                    f"API version ({info.api_version})")
            obj = converted
        obj["apiVersion"], obj["kind"] = info.api_version, info.kind
        if not isinstance(obj.get("metadata", {}), dict):
            raise errors.bad_request(
                f'{kind} in version "{info.version}" cannot be handled as a {kind}: '
                f"json: cannot unmarshal into Go struct field {kind}.metadata of type "
                f"v1.ObjectMeta")
        validation = request.param("fieldValidation") or "Warn"
        if validation not in ("Strict", "Warn", "Ignore"):
            raise errors.bad_request(
                f"fieldValidation must be one of Strict, Warn or Ignore, not {validation!r}")
        opts.warnings.extend(fieldcheck.enforce(obj, info.group, info.version, info.kind,
                                                validation))
        return obj

    @staticmethod
    def write_options(request: Request) -> WriteOptions:
        dry_run = request.query.get("dryRun", [])
        for value in dry_run:
            if value != "All":
                raise errors.bad_request(
                    f'Invalid dryRun value "{value}": supported values: "All"')
        return WriteOptions(dry_run=bool(dry_run), field_manager=request.param("fieldManager"))

    # -- output -------------------------------------------------------------------

    def respond(self, request: Request, target: Target, obj: Obj, status: int = 200,
                warnings: list[str] | None = None) -> Response:
        obj = conversion.to_version(obj, target.info) or obj
        table = _table_request(request.accept)
        if table:
            body = tables.table(target.info.plural, target.info.group, [obj], now=m.now(),
                                include_object=request.param("includeObject") or "Metadata",
                                list_meta={"resourceVersion": obj["metadata"].get(
                                    "resourceVersion", "")})
            return object_response(body, status, warnings=warnings)
        return object_response(obj, status, request.accept, warnings)

    # -- verbs --------------------------------------------------------------------

    async def get(self, request: Request, target: Target) -> Response:
        obj = await self.store(target.info).get(target.namespace, target.name)
        return self.respond(request, target, obj)

    def _selectors(self, request: Request, info: ResourceInfo
                   ) -> tuple[selectors.LabelSelector | None, selectors.FieldSelector | None]:
        label_text = request.param("labelSelector")
        field_text = request.param("fieldSelector")
        labels = selectors.parse_label_selector(label_text) if label_text else None
        fields = (selectors.parse_field_selector(field_text, info.group, info.kind)
                  if field_text else None)
        return labels, fields

    async def list(self, request: Request, target: Target) -> Response:
        info = target.info
        labels, fields = self._selectors(request, info)
        limit = request.int_param("limit") or 0
        result = await self.store(info).list(
            target.namespace, labels=labels, fields=fields, limit=max(limit, 0),
            continue_token=request.param("continue"),
            resource_version=request.param("resourceVersion"),
            resource_version_match=request.param("resourceVersionMatch"))
        list_meta: Obj = {"resourceVersion": result.resource_version}
        if result.continue_token:
            list_meta["continue"] = result.continue_token
        items = [conversion.to_version(o, info) or o for o in result.items]
        table = _table_request(request.accept)
        if table:
            body = tables.table(info.plural, info.group, items, now=m.now(),
                                include_object=request.param("includeObject") or "Metadata",
                                list_meta=list_meta)
            return object_response(body)
        for item in items:
            item.pop("apiVersion", None)
            item.pop("kind", None)
        return object_response({"kind": f"{info.kind}List", "apiVersion": info.api_version,
                                "metadata": list_meta, "items": items}, 200, request.accept)

    async def watch(self, request: Request, target: Target) -> StreamResponse:
        info = target.info
        labels, fields = self._selectors(request, info)
        if target.name:
            name_selector = selectors.parse_field_selector(f"metadata.name={target.name}",
                                                           info.group, info.kind)
            fields = name_selector if fields is None else selectors.parse_field_selector(
                f"{request.param('fieldSelector')},metadata.name={target.name}",
                info.group, info.kind)
        timeout = request.int_param("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT
        bookmarks = request.flag("allowWatchBookmarks")
        send_initial = request.param("sendInitialEvents") == "true" or None
        table = _table_request(request.accept)
        include = request.param("includeObject") or "Metadata"
        store = self.store(info)
        events = store.watch(target.namespace, request.param("resourceVersion"),
                             labels=labels, fields=fields, send_initial=send_initial)

        async def stream() -> AsyncIterator[bytes]:
            first_row = True
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            queue: asyncio.Queue[tuple[str, Obj] | StatusError | None] = asyncio.Queue()

            async def pump() -> None:
                try:
                    async for item in events:
                        await queue.put(item)
                except StatusError as err:
                    await queue.put(err)
                finally:
                    await queue.put(None)

            task = asyncio.create_task(pump())
            closing: asyncio.Future[Any] = asyncio.ensure_future(self.closing.wait())
            getter: asyncio.Future[Any] | None = None
            try:
                while True:
                    remaining = deadline - loop.time()
                    if remaining <= 0 or closing.done():
                        return
                    if getter is None and not queue.empty():
                        items = [queue.get_nowait()]
                    else:
                        # asyncio.wait, not wait_for: 3.11's wait_for can swallow a cancel.
                        if getter is None:
                            getter = asyncio.ensure_future(queue.get())
                        done, _ = await asyncio.wait({getter, closing},
                                                     timeout=min(remaining, BOOKMARK_INTERVAL),
                                                     return_when=asyncio.FIRST_COMPLETED)
                        if closing in done:
                            return
                        if not done:
                            if bookmarks and loop.time() < deadline:
                                rv = str(await self.backend.current_revision())
                                yield _event("BOOKMARK", _bookmark(info, rv))
                            continue
                        items = [getter.result()]
                        getter = None
                    # What is already queued goes out in the same chunk.
                    while len(items) < WATCH_CHUNK_EVENTS and not queue.empty():
                        items.append(queue.get_nowait())
                    lines: list[bytes] = []
                    finished = False
                    for item in items:
                        if item is None:
                            finished = True
                            break
                        if isinstance(item, StatusError):
                            lines.append(_event("ERROR", item.to_status()))
                            finished = True
                            break
                        kind, obj = item
                        if kind == "BOOKMARK":
                            if bookmarks:
                                mark = _bookmark(info, obj["metadata"]["resourceVersion"])
                                mark["metadata"].update(
                                    {k: v for k, v in obj["metadata"].items()
                                     if k == "annotations"})
                                lines.append(_event("BOOKMARK", mark))
                            continue
                        converted = conversion.to_version(obj, info) or obj
                        if table:
                            row_table = tables.table(
                                info.plural, info.group, [converted], now=m.now(),
                                include_object=include,
                                list_meta={"resourceVersion": converted["metadata"]
                                           .get("resourceVersion", "")})
                            if not first_row:
                                row_table["columnDefinitions"] = []
                            first_row = False
                            lines.append(_event(kind, row_table))
                        elif converted is obj:
                            lines.append(self._encoded_event(kind, obj))
                        else:
                            lines.append(_event(kind, converted))
                    if lines:
                        yield b"".join(lines)
                    if finished:
                        return
            finally:
                closing.cancel()
                if getter is not None:
                    getter.cancel()
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                with contextlib.suppress(Exception):
                    await events.aclose()  # type: ignore[attr-defined]

        return StreamResponse(200, stream(), JSON)

    def _encoded_event(self, kind: str, obj: Obj) -> bytes:
        """A watch event's line, encoded once for all the watches that send this object
        (the store shares one decoded object per event between its watchers)."""
        found = self._encoded_events.get(id(obj))
        if found is not None and found[0] is obj and found[1] == kind:
            return found[2]
        line = _event(kind, obj)
        encoded = self._encoded_events
        encoded[id(obj)] = (obj, kind, line)  # holding obj keeps its id from being reused
        if len(encoded) > ENCODED_EVENTS_KEPT:
            del encoded[next(iter(encoded))]
        return line

    async def create(self, request: Request, target: Target) -> Response:
        if target.name:
            raise errors.method_not_allowed()
        opts = self.write_options(request)
        obj = await self.read_object(request, target.info, opts)
        namespace = target.namespace
        body_ns = m.namespace_of(obj)
        if target.info.namespaced:
            if not namespace:
                namespace = body_ns or "default"
            if body_ns and body_ns != namespace:
                raise errors.bad_request("the namespace of the provided object does not match "
                                         "the namespace sent on the request")
        created = await self.store(target.info).create(namespace, obj, opts)
        return self.respond(request, target, created, 201, opts.warnings)

    async def update(self, request: Request, target: Target) -> Response:
        if not target.name:
            raise errors.method_not_allowed()
        opts = self.write_options(request)
        obj = await self.read_object(request, target.info, opts)
        saved, created = await self.store(target.info).update(
            target.namespace, target.name, obj, opts)
        return self.respond(request, target, saved, 201 if created else 200, opts.warnings)

    async def patch(self, request: Request, target: Target) -> Response:
        saved, created, opts = await self.patch_object(request, target)
        return self.respond(request, target, saved, 201 if created else 200, opts.warnings)

    async def patch_object(self, request: Request, target: Target,
                           subresource: str = "") -> tuple[Obj, bool, WriteOptions]:
        """Apply a PATCH body to the stored object (shared with /status)."""
        content_type = request.content_type
        if content_type not in PATCH_TYPES:
            raise errors.unsupported_media_type(request.headers.get("content-type", ""))
        opts = self.write_options(request)
        body = await request.body()
        info = target.info
        store = self.store(info)
        schema = _schema(info)
        validation = request.param("fieldValidation") or "Warn"

        if content_type == "application/apply-patch+yaml":
            applied = decode_body(body, content_type)
            kv = await store.get_kv(target.namespace, target.name)
            if kv is None:
                if subresource:
                    raise store.not_found(target.name)
                obj = self.check_object(applied, info, request, opts)
                m.metadata(obj).setdefault("name", target.name)
                return await store.create(target.namespace, obj, opts), True, opts

        async def mutate(current: Obj) -> Obj:
            current = conversion.to_version(current, info) or current
            if content_type == "application/apply-patch+yaml":
                result = patch.strategic_merge_patch(current, decode_body(body, content_type),
                                                     schema)
            else:
                result = patch.apply_patch(content_type, current, body, schema)
            checked = self.check_object(result, info, request, WriteOptions())
            if validation == "Ignore":
                return checked
            return checked

        saved = await store.guaranteed_update(target.namespace, target.name, mutate, opts,
                                              subresource=subresource)
        return saved, False, opts

    async def delete(self, request: Request, target: Target) -> Response:
        if not target.name:
            raise errors.method_not_allowed()
        info = target.info
        options = await self._delete_options(request)
        if info.group == "" and info.kind == "Namespace" and target.name in IMMORTAL_NAMESPACES:
            raise errors.forbidden_request(
                f'namespaces "{target.name}" is forbidden: this namespace may not be deleted')
        obj, deleted = await self.store(info).delete(target.namespace, target.name, options)
        if deleted and not _returns_deleted_object(info):
            return object_response({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": target.name, "group": info.group, "kind": info.plural,
                            "uid": obj["metadata"].get("uid", "")}})
        # Upstream answers 202 only for a pending delete that asked orphanDependents=false.
        pending = not deleted and options.orphan_dependents is False
        return self.respond(request, target, obj, 202 if pending else 200)

    async def _delete_options(self, request: Request) -> DeleteOptions:
        body = await request.body()
        raw: Obj = {}
        if body.strip():
            if request.content_type == PROTOBUF:
                raw = protobuf.decode_body(body)
            else:
                decoded = decode_body(body, request.content_type or JSON)
                if not isinstance(decoded, dict):
                    raise errors.bad_request("DeleteOptions must be an object")
                raw = decoded
        grace = raw.get("gracePeriodSeconds")
        if grace is None and request.param("gracePeriodSeconds"):
            grace = request.int_param("gracePeriodSeconds")
        propagation = raw.get("propagationPolicy") or request.param("propagationPolicy") or None
        orphan = raw.get("orphanDependents")
        if orphan is None and request.param("orphanDependents"):
            orphan = request.param("orphanDependents") == "true"
        if orphan is True:
            propagation = propagation or "Orphan"
        if propagation not in (None, "Orphan", "Background", "Foreground"):
            raise errors.invalid_object("", "DeleteOptions", "", [errors.not_supported(
                "propagationPolicy", propagation, ["Foreground", "Background", "Orphan"])])
        preconditions = raw.get("preconditions") or {}
        dry_run = raw.get("dryRun") or request.query.get("dryRun") or []
        if any(v != "All" for v in dry_run):
            raise errors.bad_request('Invalid dryRun value: supported values: "All"')
        return DeleteOptions(
            grace_period=int(grace) if grace is not None else None, propagation=propagation,
            precondition_uid=preconditions.get("uid"),
            precondition_rv=preconditions.get("resourceVersion"), dry_run=bool(dry_run),
            orphan_dependents=orphan if isinstance(orphan, bool) else None)

    async def delete_collection(self, request: Request, target: Target) -> Response:
        info = target.info
        labels, fields = self._selectors(request, info)
        options = await self._delete_options(request)
        store = self.store(info)
        listed = await store.list(target.namespace, labels=labels, fields=fields)
        deleted: list[Obj] = []
        for item in listed.items:
            meta = item["metadata"]
            try:
                obj, _ = await store.delete(meta.get("namespace", ""), meta["name"], options)
                deleted.append(obj)
            except StatusError as err:
                if err.code != 404:
                    raise
        return object_response({"kind": f"{info.kind}List", "apiVersion": info.api_version,
                                "metadata": {"resourceVersion": listed.resource_version},
                                "items": deleted})


def _verb(method: str, target: Target, request: Request) -> str:
    collection = not target.name
    if method == "GET":
        if request.flag("watch"):
            return "watch"
        if target.subresource:
            return "get"
        return "list" if collection else "get"
    if method == "POST":
        return "create"
    if method == "PUT":
        return "update"
    if method == "PATCH":
        return "patch"
    if method == "DELETE":
        return "deletecollection" if collection else "delete"
    raise errors.method_not_allowed()


def _table_request(accept: str) -> bool:
    for part in accept.split(","):
        params = [p.strip() for p in part.split(";")]
        if "as=Table" in params and "g=meta.k8s.io" in params:
            return True
        if params[0] in (JSON, "*/*", YAML):
            return False
    return False


def _raw(body: bytes | None) -> Response:
    if body is None:
        raise StatusError(404, "NotFound", "the server could not find the requested resource")
    return Response(200, body, JSON)


def _event(kind: str, obj: Any) -> bytes:
    return orjson.dumps({"type": kind, "object": obj}) + b"\n"


def _bookmark(info: ResourceInfo, rv: str) -> Obj:
    return {"kind": info.kind, "apiVersion": info.api_version,
            "metadata": {"resourceVersion": rv}}


def _schema(info: ResourceInfo) -> dict[str, Any] | None:
    from kubi.api import schemas

    return schemas.for_kind(info.group, info.version, info.kind)


def _returns_deleted_object(info: ResourceInfo) -> bool:
    """Upstream stores of these kinds answer a delete with the object, not a Status."""
    return info.group == "" and info.kind in ("Pod", "Namespace", "Service", "ServiceAccount",
                                              "PersistentVolume", "PersistentVolumeClaim")
