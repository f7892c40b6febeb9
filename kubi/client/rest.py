"""A small typed-by-catalogue Kubernetes client: every component's only way to the API.

Resources are named the way kubectl names them (`pods`, `deployments.apps`,
`leases.coordination.k8s.io`) and resolved through the resource catalogue to
their preferred version. Errors come back as `StatusError`, as the server sent them.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import yaml

from kubi.api.errors import Cause, StatusError
from kubi.api.resources import CATALOGUE, ResourceInfo
from kubi.client.transport import (
    ASGIApp,
    HTTPTransport,
    InProcessTransport,
    Query,
    RawResponse,
    Transport,
)

Obj = dict[str, Any]

PATCH_CONTENT_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}


@functools.cache
def resource(name: str) -> ResourceInfo:
    """`pods`, `deployments.apps` or `apps/v1/deployments` -> the served resource."""
    if "/" in name:
        *gv, plural = name.split("/")
        group, version = ("", gv[0]) if len(gv) == 1 else (gv[0], gv[1])
        found = CATALOGUE.by_path(group, version, plural)
        if found is None:
            raise KeyError(name)
        return found
    plural, _, group = name.partition(".")
    versions = CATALOGUE.group_versions().get(group, ())
    for version in versions:
        found = CATALOGUE.by_path(group, version, plural)
        if found is not None:
            return found
    raise KeyError(name)


def _as_info(res: ResourceInfo | str) -> ResourceInfo:
    return res if isinstance(res, ResourceInfo) else resource(res)


def path_for(info: ResourceInfo, namespace: str = "", name: str = "",
             subresource: str = "") -> str:
    base = f"/apis/{info.group}/{info.version}" if info.group else f"/api/{info.version}"
    if info.namespaced and namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{info.plural}"
    if name:
        base += f"/{name}"
        if subresource:
            base += f"/{subresource}"
    return base


def status_error(raw: RawResponse) -> StatusError:
    try:
        body = orjson.loads(raw.body)
    except orjson.JSONDecodeError:
        return StatusError(raw.status, "", raw.body.decode(errors="replace")[:500])
    if not isinstance(body, dict):
        return StatusError(raw.status, "", str(body)[:500])
    details = body.get("details") or {}
    causes = [Cause(c.get("reason", ""), c.get("message", ""), c.get("field", ""))
              for c in details.get("causes") or []]
    return StatusError(int(body.get("code") or raw.status), body.get("reason", ""),
                       body.get("message", ""), details.get("name", ""),
                       details.get("group", ""), details.get("kind", ""), causes,
                       details.get("retryAfterSeconds"))


class Client:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    @classmethod
    def from_kubeconfig(cls, path: str | Path) -> Client:
        config = yaml.safe_load(Path(path).read_text())
        context_name = config.get("current-context")
        context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"]
                       if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        ca_file = cluster.get("certificate-authority")
        if cluster.get("certificate-authority-data"):
            import base64
            import tempfile

            handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - must outlive this call
                "wb", suffix=".crt", delete=False)
            handle.write(base64.b64decode(cluster["certificate-authority-data"]))
            handle.close()
            ca_file = handle.name
        return cls(HTTPTransport(cluster["server"], user.get("token", ""), ca_file,
                                 bool(cluster.get("insecure-skip-tls-verify"))))

    @classmethod
    def in_process(cls, app: ASGIApp, token: str) -> Client:
        return cls(InProcessTransport(app, token))

    async def close(self) -> None:
        await self.transport.close()

    async def _call(self, method: str, path: str, query: Query | None = None,
                    body: Any = None, content_type: str = "application/json") -> Obj:
        data = None if body is None else (body if isinstance(body, bytes)
                                          else orjson.dumps(body))
        raw = await self.transport.request(method, path, query, data,
                                           content_type if data is not None else "")
        if raw.status >= 300:
            raise status_error(raw)
        result: Obj = orjson.loads(raw.body) if raw.body else {}
        return result

    # -- verbs --------------------------------------------------------------------

    async def get(self, res: ResourceInfo | str, name: str, namespace: str = "") -> Obj:
        return await self._call("GET", path_for(_as_info(res), namespace, name))

    async def list(self, res: ResourceInfo | str, namespace: str = "", *,
                   label_selector: str = "", field_selector: str = "", limit: int = 0,
                   continue_token: str = "", resource_version: str = "") -> Obj:
        """One List (a page when `limit` is set). Items carry apiVersion and kind."""
        info = _as_info(res)
        query: Query = {}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        if limit:
            query["limit"] = str(limit)
        if continue_token:
            query["continue"] = continue_token
        if resource_version:
            query["resourceVersion"] = resource_version
        listed = await self._call("GET", path_for(info, namespace), query)
        for item in listed.get("items") or []:
            item.setdefault("apiVersion", info.api_version)
            item.setdefault("kind", info.kind)
        return listed

    async def list_all(self, res: ResourceInfo | str, namespace: str = "", *,
                       label_selector: str = "", field_selector: str = "",
                       page: int = 500) -> tuple[builtins.list[Obj], str]:
        """Every item, following `continue`; returns (items, list resourceVersion)."""
        items: builtins.list[Obj] = []
        token = ""
        while True:
            listed = await self.list(res, namespace, label_selector=label_selector,
                                     field_selector=field_selector, limit=page,
                                     continue_token=token)
            items.extend(listed.get("items") or [])
            token = (listed.get("metadata") or {}).get("continue", "")
            if not token:
                return items, str(listed["metadata"].get("resourceVersion", ""))

    async def create(self, res: ResourceInfo | str, obj: Obj, namespace: str = "", *,
                     dry_run: bool = False) -> Obj:
        info = _as_info(res)
        namespace = namespace or (obj.get("metadata") or {}).get("namespace", "")
        query = {"dryRun": "All"} if dry_run else None
        return await self._call("POST", path_for(info, namespace), query, obj)

    async def update(self, res: ResourceInfo | str, obj: Obj, *,
                     subresource: str = "") -> Obj:
        info = _as_info(res)
        meta = obj["metadata"]
        return await self._call("PUT", path_for(info, meta.get("namespace", ""),
                                                meta["name"], subresource), None, obj)

    async def update_status(self, res: ResourceInfo | str, obj: Obj) -> Obj:
        return await self.update(res, obj, subresource="status")

    async def patch(self, res: ResourceInfo | str, name: str, patch: Any,
                    namespace: str = "", *, patch_type: str = "merge",
                    subresource: str = "") -> Obj:
        info = _as_info(res)
        return await self._call("PATCH", path_for(info, namespace, name, subresource), None,
                                patch, PATCH_CONTENT_TYPES[patch_type])

    async def delete(self, res: ResourceInfo | str, name: str, namespace: str = "", *,
                     grace_period: int | None = None, propagation: str | None = None,
                     uid: str | None = None, resource_version: str | None = None) -> Obj:
        options: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period is not None:
            options["gracePeriodSeconds"] = grace_period
        if propagation:
            options["propagationPolicy"] = propagation
        preconditions = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version))
                         if v}
        if preconditions:
            options["preconditions"] = preconditions
        return await self._call("DELETE", path_for(_as_info(res), namespace, name), None,
                                options)

    async def post(self, res: ResourceInfo | str, name: str, subresource: str, body: Obj,
                   namespace: str = "") -> Obj:
        """POST to a subresource: pods/binding, pods/eviction, serviceaccounts/token."""
        return await self._call("POST", path_for(_as_info(res), namespace, name, subresource),
                                None, body)

    async def watch(self, res: ResourceInfo | str, namespace: str = "", *,
                    resource_version: str = "", label_selector: str = "",
                    field_selector: str = "", timeout_seconds: int | None = None,
                    bookmarks: bool = True) -> AsyncIterator[tuple[str, Obj]]:
        """(type, object) events; an ERROR event arrives as a raised StatusError."""
        info = _as_info(res)
        query: Query = {"watch": "true"}
        if resource_version:
            query["resourceVersion"] = resource_version
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        if timeout_seconds:
            query["timeoutSeconds"] = str(timeout_seconds)
        if bookmarks:
            query["allowWatchBookmarks"] = "true"
        async for line in self.transport.stream("GET", path_for(info, namespace), query):
            event = orjson.loads(line)
            if event.get("kind") == "Status":
                raise status_error(RawResponse(int(event.get("code") or 500), {}, line))
            kind = event["type"]
            obj = event["object"]
            if kind == "ERROR":
                raise status_error(RawResponse(int(obj.get("code") or 500), {}, orjson.dumps(obj)))
            obj.setdefault("apiVersion", info.api_version)
            obj.setdefault("kind", info.kind)
            yield kind, obj
