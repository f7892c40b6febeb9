"""Subresources (status, scale, binding, eviction, token, finalize, node streams)
and the computed review resources (access reviews, token reviews)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kubi.api import errors
from kubi.api import meta as m
from kubi.apiserver.http import (
    Receive,
    Request,
    Response,
    Scope,
    Send,
    StreamResponse,
    object_response,
)
from kubi.apiserver.store import DeleteOptions

if TYPE_CHECKING:
    from kubi.apiserver.app import APIServer, Target

Obj = dict[str, Any]

STREAMING = ("log", "exec", "attach", "portforward")


async def handle(server: APIServer, request: Request, target: Target,
                 verb: str) -> Response | StreamResponse:
    sub = target.subresource
    if sub == "status" or sub == "ephemeralcontainers":
        return await _status(server, request, target, verb)
    if sub == "scale":
        return await _scale(server, request, target, verb)
    if sub == "binding":
        return await _binding(server, request, target)
    if sub == "eviction":
        return await _eviction(server, request, target)
    if sub == "token":
        return await _token(server, request, target)
    if sub == "finalize":
        return await _finalize(server, request, target)
    if sub in STREAMING:
        return await _streaming(server, request, target)
    raise errors.method_not_allowed()


async def _status(server: APIServer, request: Request, target: Target, verb: str) -> Response:
    store = server.store(target.info)
    if verb == "get":
        return server.respond(request, target, await store.get(target.namespace, target.name))
    if verb == "update":
        opts = server.write_options(request)
        obj = await server.read_object(request, target.info, opts)
        saved, _ = await store.update(target.namespace, target.name, obj, opts,
                                      subresource="status")
        return server.respond(request, target, saved, 200, opts.warnings)
    saved, _, opts = await server.patch_object(request, target, subresource="status")
    return server.respond(request, target, saved, 200, opts.warnings)


def _selector_text(obj: Obj) -> str:
    """Scale.status.selector: the label selector in its string form."""
    selector = (obj.get("spec") or {}).get("selector") or {}
    if obj.get("kind") == "ReplicationController":
        return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr.get("operator"), expr.get("key"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(sorted(values))})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def _scale_of(obj: Obj) -> Obj:
    meta = obj["metadata"]
    return {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                          "creationTimestamp") if k in meta},
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                   "selector": _selector_text(obj)},
    }


async def _scale(server: APIServer, request: Request, target: Target, verb: str) -> Response:
    from kubi.apiserver import patch as patching

    store = server.store(target.info)
    if verb == "get":
        return object_response(_scale_of(await store.get(target.namespace, target.name)))
    opts = server.write_options(request)
    body = await request.body()

    async def mutate(current: Obj) -> Obj:
        scale = _scale_of(current)
        if verb == "update":
            from kubi.apiserver.http import decode_body

            wanted = decode_body(body, request.content_type or "application/json")
            if not isinstance(wanted, dict):
                raise errors.bad_request("Scale must be an object")
            rv = (wanted.get("metadata") or {}).get("resourceVersion")
            if rv and rv != current["metadata"]["resourceVersion"]:
                raise errors.conflict(target.info.group, target.info.plural, target.name,
                                      "the object has been modified; please apply your "
                                      "changes to the latest version and try again")
        else:
            wanted = patching.apply_patch(request.content_type, scale, body, None)
        replicas = (wanted.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise errors.invalid_object("autoscaling", "Scale", target.name, [errors.invalid(
                "spec.replicas", replicas, "must be greater than or equal to 0")])
        current.setdefault("spec", {})["replicas"] = replicas
        return current

    saved = await store.guaranteed_update(target.namespace, target.name, mutate, opts)
    return object_response(_scale_of(saved), 200, warnings=opts.warnings)


async def _read_json(request: Request) -> Obj:
    from kubi.api import protobuf
    from kubi.apiserver.http import PROTOBUF, decode_body

    body = await request.body()
    if request.content_type == PROTOBUF:
        return protobuf.decode_body(body)
    decoded = decode_body(body, request.content_type or "application/json")
    if not isinstance(decoded, dict):
        raise errors.bad_request("the request body must be an object")
    return decoded


async def _binding(server: APIServer, request: Request, target: Target) -> Response:
    binding = await _read_json(request)
    node = ((binding.get("target") or {}).get("name")) or ""
    if not node:
        raise errors.invalid_object("", "Binding", target.name, [
            errors.required("target.name")])
    opts = server.write_options(request)
    store = server.store_for("", "pods")

    async def bind(pod: Obj) -> Obj:
        spec = pod.setdefault("spec", {})
        if "deletionTimestamp" in pod["metadata"]:
            raise errors.conflict("", "pods", target.name, "pod is being deleted, cannot be "
                                  "assigned to a host")
        if spec.get("nodeName"):
            raise errors.conflict("", "pods", target.name,
                                  f'pod {target.name} is already assigned to node '
                                  f'"{spec["nodeName"]}"')
        spec["nodeName"] = node
        status = pod.setdefault("status", {})
        conditions = [c for c in status.get("conditions") or []
                      if c.get("type") != "PodScheduled"]
        conditions.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                           "lastTransitionTime": m.rfc3339(m.now())})
        status["conditions"] = conditions
        return pod

    await store.guaranteed_update(target.namespace, target.name, bind, opts,
                                  subresource="binding")
    return object_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Success", "code": 201}, 201)


async def _eviction(server: APIServer, request: Request, target: Target) -> Response:
    eviction = await _read_json(request)
    options = eviction.get("deleteOptions") or {}
    grace = options.get("gracePeriodSeconds")
    store = server.store_for("", "pods")
    await store.delete(target.namespace, target.name, DeleteOptions(
        grace_period=int(grace) if grace is not None else None,
        dry_run=bool(options.get("dryRun"))))
    return object_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Success", "code": 201}, 201)


async def _token(server: APIServer, request: Request, target: Target) -> Response:
    review = await _read_json(request)
    sa = await server.store(target.info).get(target.namespace, target.name)
    spec = review.get("spec") or {}
    seconds = int(spec.get("expirationSeconds") or 3600)
    if seconds < 600:
        raise errors.invalid_object("authentication.k8s.io", "TokenRequest", target.name, [
            errors.invalid("spec.expirationSeconds", seconds,
                           "may not specify a duration less than 10 minutes")])
    token, exp = server.tokens.issue(target.namespace, target.name, sa["metadata"]["uid"],
                                     seconds, list(spec.get("audiences") or []))
    import datetime

    return object_response({
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": target.name, "namespace": target.namespace,
                     "creationTimestamp": None},
        "spec": {"audiences": spec.get("audiences") or [
            "https://kubernetes.default.svc.cluster.local"],
                 "expirationSeconds": seconds, "boundObjectRef": spec.get("boundObjectRef")},
        "status": {"token": token, "expirationTimestamp": m.rfc3339(
            datetime.datetime.fromtimestamp(exp, datetime.UTC))}}, 201)


async def _finalize(server: APIServer, request: Request, target: Target) -> Response:
    opts = server.write_options(request)
    obj = await server.read_object(request, target.info, opts)
    finalizers = (obj.get("spec") or {}).get("finalizers") or []

    async def set_finalizers(ns: Obj) -> Obj:
        ns.setdefault("spec", {})["finalizers"] = finalizers
        if not finalizers:
            ns["spec"].pop("finalizers")
        return ns

    store = server.store(target.info)
    saved = await store.guaranteed_update("", target.name, set_finalizers, opts,
                                          subresource="finalize")
    return server.respond(request, target, saved, 200, opts.warnings)


async def _streaming(server: APIServer, request: Request,
                     target: Target) -> Response | StreamResponse:
    """Logs, exec, attach and port-forward are served by the node agent (streaming.py)."""
    from kubi.apiserver import streaming

    if target.info.kind == "Pod" and target.subresource == "log":
        return await streaming.stream_logs(server, request, target)
    return await streaming.plain_upgrade(server, request, target)


def is_proxy(group: str, parts: list[str]) -> bool:
    """Whether a resource path (after /api/v1 or /apis/G/V) is a pod, service or node
    proxy: those take any path after `proxy`, every method and any Accept."""
    from kubi.apiserver import proxy

    return proxy.proxy_parts(group, parts)


async def proxy(server: APIServer, request: Request, parts: list[str]) -> Response:
    """pods/NAME/proxy/…, services/NAME/proxy/…, nodes/NAME/proxy/… (proxy.py)."""
    from kubi.apiserver import proxy as proxying

    return await proxying.serve_proxy(server, request, parts)


async def review(server: APIServer, request: Request, target: Target) -> Response:
    """SelfSubjectAccessReview & co: computed answers, never stored."""
    body = await _read_json(request)
    kind = target.info.kind
    spec = body.get("spec") or {}
    out: Obj = {"kind": kind, "apiVersion": target.info.api_version,
                "metadata": {"creationTimestamp": None}, "spec": spec}
    masters = "system:masters" in request.groups
    if kind == "SelfSubjectReview":
        out.pop("spec")
        out["status"] = {"userInfo": {"username": request.user,
                                      "groups": list(request.groups)}}
    elif kind == "TokenReview":
        user = server.tokens.authenticate(str(spec.get("token", "")))
        out["status"] = ({"authenticated": True, "user": {
            "username": user.name, "uid": user.uid, "groups": list(user.groups)},
            "audiences": spec.get("audiences") or []} if user else {"authenticated": False})
    elif kind == "SelfSubjectRulesReview":
        out["status"] = {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"],
                                            "resources": ["*"]}] if masters else [],
                         "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
                         if masters else [], "incomplete": False}
    else:
        # No RBAC enforcement yet: every authenticated request is allowed, so say so.
        out["status"] = {"allowed": True,
                         "reason": "kubi authorizes every authenticated user (RBAC "
                                   "enforcement is not enabled)"}
    return object_response(out, 201)


async def websocket(server: APIServer, scope: Scope, receive: Receive, send: Send) -> None:
    """exec/attach/portforward over WebSocket: relayed to the pod's node agent."""
    from kubi.apiserver import streaming

    await streaming.relay_websocket(server, scope, receive, send)
