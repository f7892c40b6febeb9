"""The OpenAPI documents the API server publishes: `/openapi/v3` and `/openapi/v2`.

kubectl reads them to decide whether the server validates fields itself (the
`fieldValidation` parameter on PATCH operations), to compute strategic merge
patches (patch extensions on the schemas) and for `kubectl explain`. The paths
come from our resource catalogue; the schemas are upstream's definitions from
`kubi.api.schemas`, turned back from JSON Schema into OpenAPI form.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from kubi.api import schemas
from kubi.api.resources import RESOURCES, ResourceInfo, Subresource

Schema = dict[str, Any]

OPENAPI_VERSION = "3.0.0"
INFO = {"title": "Kubernetes", "version": "v1.32.0"}

_V3_REF = "#/components/schemas/"
_V2_REF = "#/definitions/"
_JSON_SCHEMA_REF = "#/$defs/"

_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
STATUS = _META + "Status"
DELETE_OPTIONS = _META + "DeleteOptions"
PATCH = _META + "Patch"
WATCH_EVENT = _META + "WatchEvent"
API_RESOURCE_LIST = _META + "APIResourceList"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"

# kubernetes-validate keeps only `oneOf` for these two; upstream publishes strings.
_SCALAR_DEFINITIONS: dict[str, Schema] = {
    INT_OR_STRING: {
        "description": "IntOrString is a type that can hold an int32 or a string.  When used in "
        "JSON or YAML marshalling and unmarshalling, it produces or consumes the inner type.  "
        "This allows you to have, for example, a JSON field that can accept a name or number.",
        "format": "int-or-string",
        "type": "string",
    },
    QUANTITY: {
        "description": "Quantity is a fixed-point representation of a number. It provides "
        "convenient marshaling/unmarshaling in JSON and YAML, in addition to String() and "
        "AsInt64() accessors.\n\nThe serialization format is:\n\n``` <quantity>        ::= "
        "<signedNumber><suffix>\n```\n\nExamples: 1.5 will be serialized as \"1500m\", "
        "1.5Gi will be serialized as \"1536Mi\"",
        "type": "string",
    },
}

# Stores that answer DELETE with the deleted object rather than a Status.
_DELETE_RETURNS_OBJECT = {
    ("", "pods"),
    ("", "services"),
    ("", "persistentvolumes"),
    ("", "persistentvolumeclaims"),
    ("", "serviceaccounts"),
}

_OBJECT_MEDIA = ("application/json", "application/yaml", "application/vnd.kubernetes.protobuf")
_STREAM_MEDIA = (
    "application/json",
    "application/json;stream=watch",
    "application/vnd.kubernetes.protobuf",
    "application/vnd.kubernetes.protobuf;stream=watch",
    "application/yaml",
)
_PATCH_MEDIA = (
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
_LOG_MEDIA = ("text/plain", "application/json", "application/yaml",
              "application/vnd.kubernetes.protobuf")
_ANY_MEDIA = ("*/*",)


# ---------------------------------------------------------------------------
# Parameters (upstream's names, places, types and descriptions)


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    description: str
    location: str = "query"
    required: bool = False


_FIELD_VALIDATION_DOC = (
    "fieldValidation instructs the server on how to handle objects in the request "
    "(POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This "
    "will ignore any unknown fields that are silently dropped from the object, and will ignore "
    "all but the last duplicate field that the decoder encounters. This is the default behavior "
    "prior to v1.23. - Warn: This will send a warning via the standard warning response header "
    "for each unknown field that is dropped from the object, and for each duplicate field that "
    "is encountered. The request will still succeed if there are no other errors, and will only "
    "persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will "
    "fail the request with a BadRequest error if any unknown fields would be dropped from the "
    "object, or if any duplicate fields are present. The error returned from the server will "
    "contain all unknown and duplicate fields encountered."
)
_FIELD_MANAGER_DOC = (
    "fieldManager is a name associated with the actor or entity that is making these changes. "
    "The value must be less than or 128 characters long, and only contain printable characters, "
    "as defined by https://golang.org/pkg/unicode/#IsPrint."
)

P_PRETTY = Param("pretty", "string", "If 'true', then the output is pretty printed. Defaults to "
                 "'false' unless the user-agent indicates a browser or command-line HTTP tool "
                 "(curl and wget).")
P_NAMESPACE = Param("namespace", "string",
                    "object name and auth scope, such as for teams and projects", "path", True)
P_DRY_RUN = Param("dryRun", "string", "When present, indicates that modifications should not be "
                  "persisted. An invalid or unrecognized dryRun directive will result in an error "
                  "response and no further processing of the request. Valid values are: - All: "
                  "all dry run stages will be processed")
P_FIELD_MANAGER = Param("fieldManager", "string", _FIELD_MANAGER_DOC)
P_PATCH_FIELD_MANAGER = Param("fieldManager", "string", _FIELD_MANAGER_DOC + " This field is "
                              "required for apply requests (application/apply-patch) but optional "
                              "for non-apply patch types (JsonPatch, MergePatch, "
                              "StrategicMergePatch).")
P_FIELD_VALIDATION = Param("fieldValidation", "string", _FIELD_VALIDATION_DOC)
P_FORCE = Param("force", "boolean", "Force is going to \"force\" Apply requests. It means user "
                "will re-acquire conflicting fields owned by other people. Force flag must be "
                "unset for non-apply patch requests.")
P_GRACE = Param("gracePeriodSeconds", "integer", "The duration in seconds before the object "
                "should be deleted. Value must be non-negative integer. The value zero indicates "
                "delete immediately. If this value is nil, the default grace period for the "
                "specified type will be used. Defaults to a per object value if not specified. "
                "zero means delete immediately.")
P_IGNORE_STORE_READ_ERROR = Param(
    "ignoreStoreReadErrorWithClusterBreakingPotential", "boolean", "if set to true, it will "
    "trigger an unsafe deletion of the resource in case the normal deletion flow fails with a "
    "corrupt object error. The default value is false, and the user must opt in to enable it")
P_ORPHAN = Param("orphanDependents", "boolean", "Deprecated: please use the PropagationPolicy, "
                 "this field will be deprecated in 1.7. Should the dependent objects be orphaned. "
                 "If true/false, the \"orphan\" finalizer will be added to/removed from the "
                 "object's finalizers list. Either this field or PropagationPolicy may be set, "
                 "but not both.")
P_PROPAGATION = Param("propagationPolicy", "string", "Whether and how garbage collection will be "
                      "performed. Either this field or OrphanDependents may be set, but not "
                      "both. Acceptable values are: 'Orphan' - orphan the dependents; "
                      "'Background' - allow the garbage collector to delete the dependents in "
                      "the background; 'Foreground' - a cascading policy that deletes all "
                      "dependents in the foreground.")
P_BOOKMARKS = Param("allowWatchBookmarks", "boolean", "allowWatchBookmarks requests watch events "
                    "with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore "
                    "this flag and bookmarks are sent at the server's discretion. If this is not "
                    "a watch, this field is ignored.")
P_CONTINUE = Param("continue", "string", "The continue option should be set when retrieving "
                   "more results from the server. Since this value is server defined, clients "
                   "may only use the continue value from a previous query result with identical "
                   "query parameters (except for the value of continue).")
P_FIELD_SELECTOR = Param("fieldSelector", "string", "A selector to restrict the list of returned "
                         "objects by their fields. Defaults to everything.")
P_LABEL_SELECTOR = Param("labelSelector", "string", "A selector to restrict the list of returned "
                         "objects by their labels. Defaults to everything.")
P_LIMIT = Param("limit", "integer", "limit is a maximum number of responses to return for a list "
                "call. If more items exist, the server will set the `continue` field on the list "
                "metadata to a value that can be used with the same initial query to retrieve "
                "the next set of results.")
P_RESOURCE_VERSION = Param("resourceVersion", "string", "resourceVersion sets a constraint on "
                           "what resource versions a request may be served from. See "
                           "https://kubernetes.io/docs/reference/using-api/api-concepts/"
                           "#resource-versions for details.\n\nDefaults to unset")
P_RESOURCE_VERSION_MATCH = Param("resourceVersionMatch", "string", "resourceVersionMatch "
                                 "determines how resourceVersion is applied to list calls. See "
                                 "https://kubernetes.io/docs/reference/using-api/api-concepts/"
                                 "#resource-versions for details.\n\nDefaults to unset")
P_SEND_INITIAL_EVENTS = Param("sendInitialEvents", "boolean", "`sendInitialEvents=true` may be "
                              "set together with `watch=true`. In that case, the watch stream "
                              "will begin with synthetic events to produce the current state of "
                              "objects in the collection.")
P_TIMEOUT = Param("timeoutSeconds", "integer", "Timeout for the list/watch call. This limits the "
                  "duration of the call, regardless of any activity or inactivity.")
P_WATCH = Param("watch", "boolean", "Watch for changes to the described resources and return "
                "them as a stream of add, update, and remove notifications. Specify "
                "resourceVersion.")

LIST_PARAMS = (P_BOOKMARKS, P_CONTINUE, P_FIELD_SELECTOR, P_LABEL_SELECTOR, P_LIMIT,
               P_RESOURCE_VERSION, P_RESOURCE_VERSION_MATCH, P_SEND_INITIAL_EVENTS, P_TIMEOUT,
               P_WATCH)
WRITE_PARAMS = (P_DRY_RUN, P_FIELD_MANAGER, P_FIELD_VALIDATION)
PATCH_PARAMS = (P_DRY_RUN, P_PATCH_FIELD_MANAGER, P_FIELD_VALIDATION, P_FORCE)
DELETE_PARAMS = (P_DRY_RUN, P_GRACE, P_IGNORE_STORE_READ_ERROR, P_ORPHAN, P_PROPAGATION)
DELETE_COLLECTION_PARAMS = (P_CONTINUE, P_DRY_RUN, P_FIELD_SELECTOR, P_GRACE,
                            P_IGNORE_STORE_READ_ERROR, P_LABEL_SELECTOR, P_LIMIT, P_ORPHAN,
                            P_PROPAGATION, P_RESOURCE_VERSION, P_RESOURCE_VERSION_MATCH,
                            P_SEND_INITIAL_EVENTS, P_TIMEOUT)


def _flag(name: str, type_: str, what: str) -> Param:
    return Param(name, type_, what)


_STREAM_FLAGS = (
    _flag("container", "string", "The container in which to execute the command. Defaults to "
          "only container if there is only one container in the pod."),
    _flag("stderr", "boolean", "Redirect the standard error stream of the pod for this call."),
    _flag("stdin", "boolean", "Redirect the standard input stream of the pod for this call. "
          "Defaults to false."),
    _flag("stdout", "boolean", "Redirect the standard output stream of the pod for this call."),
    _flag("tty", "boolean", "TTY if true indicates that a tty will be allocated for the exec "
          "call. Defaults to false."),
)
# Query parameters of connect subresources, from the options structs upstream decodes.
_CONNECT_PARAMS: dict[str, tuple[Param, ...]] = {
    "attach": _STREAM_FLAGS,
    "exec": (_flag("command", "string", "Command is the remote command to execute. argv "
                   "array. Not executed within a shell."), *_STREAM_FLAGS),
    "portforward": (_flag("ports", "integer", "List of ports to forward Required when using "
                          "WebSockets"),),
    "proxy": (_flag("path", "string", "Path is the URL path to use for the current proxy "
                    "request to pod."),),
}
_LOG_PARAMS = (
    _flag("container", "string", "The container for which to stream logs. Defaults to only "
          "container if there is one container in the pod."),
    _flag("follow", "boolean", "Follow the log stream of the pod. Defaults to false."),
    _flag("insecureSkipTLSVerifyBackend", "boolean", "insecureSkipTLSVerifyBackend indicates "
          "that the apiserver should not confirm the validity of the serving certificate of the "
          "backend it is connecting to."),
    _flag("limitBytes", "integer", "If set, the number of bytes to read from the server before "
          "terminating the log output."),
    _flag("previous", "boolean", "Return previous terminated container logs. Defaults to "
          "false."),
    _flag("sinceSeconds", "integer", "A relative time in seconds before the current time from "
          "which to show logs."),
    _flag("stream", "string", "Specify which container log stream to return to the client. "
          "Acceptable values are \"All\", \"Stdout\" and \"Stderr\". If not specified, \"All\" "
          "is used, and both stdout and stderr are returned interleaved."),
    _flag("tailLines", "integer", "If set, the number of lines from the end of the logs to "
          "show."),
    _flag("timestamps", "boolean", "If true, add an RFC3339 or RFC3339Nano timestamp at the "
          "beginning of every line of log output. Defaults to false."),
)
_CONNECT_METHODS = {"get": "get", "create": "post", "update": "put", "delete": "delete",
                    "patch": "patch"}


# ---------------------------------------------------------------------------
# A format-neutral model of the paths, rendered as v3 or v2 below.

STRING_BODY = "<string>"  # a response that is raw text, not a definition


@dataclass
class Operation:
    method: str
    operation_id: str
    description: str
    action: str
    gvk: dict[str, str] | None
    tag: str
    params: list[Param] = field(default_factory=list)
    body: str | None = None
    body_required: bool = True
    body_media: tuple[str, ...] = _ANY_MEDIA
    # status code -> (description, definition name or STRING_BODY)
    responses: dict[str, tuple[str, str]] = field(default_factory=dict)
    produces: tuple[str, ...] = _OBJECT_MEDIA


@dataclass
class PathItem:
    path_params: list[Param]
    operations: list[Operation] = field(default_factory=list)


def _camel_group(group: str) -> str:
    """`rbac.authorization.k8s.io` -> `RbacAuthorization`, `` -> `Core`."""
    if not group:
        return "Core"
    trimmed = group.removesuffix(".k8s.io")
    return "".join(part[:1].upper() + part[1:] for part in trimmed.split("."))


def _tag(group: str, version: str) -> str:
    camel = _camel_group(group)
    return f"{camel[:1].lower()}{camel[1:]}_{version}"


def _gv_prefix(group: str, version: str) -> str:
    return f"/apis/{group}/{version}" if group else f"/api/{version}"


def _gvk(group: str, version: str, kind: str) -> dict[str, str]:
    return {"group": group, "kind": kind, "version": version}


def _must_definition(group: str, version: str, kind: str) -> str:
    name = schemas.definition_name(group, version, kind)
    if name is None:
        raise LookupError(f"no upstream schema for {group}/{version} {kind}")
    return name


def _ok(definition: str, *codes: str) -> dict[str, tuple[str, str]]:
    text = {"200": "OK", "201": "Created", "202": "Accepted"}
    return {code: (text[code], definition) for code in codes}


class _PathBuilder:
    """Collects the paths of one group-version from the catalogue."""

    def __init__(self, group: str, version: str) -> None:
        self.group = group
        self.version = version
        self.gv = _camel_group(group) + version[:1].upper() + version[1:]
        self.tag = _tag(group, version)
        self.prefix = _gv_prefix(group, version)
        self.paths: dict[str, PathItem] = {}

    def add(self, path: str, path_params: list[Param], op: Operation) -> None:
        item = self.paths.setdefault(path, PathItem(path_params))
        item.operations.append(op)

    def op(self, method: str, op_id: str, description: str, action: str,
           gvk: dict[str, str] | None, **extra: Any) -> Operation:
        return Operation(method, op_id, description, action, gvk, self.tag, **extra)

    def build(self, resources: list[ResourceInfo]) -> dict[str, PathItem]:
        self.add(self.prefix + "/", [], self.op(
            "get", f"get{self.gv}APIResources", "get available resources", "", None,
            responses=_ok(API_RESOURCE_LIST, "200")))
        for r in resources:
            self.resource(r)
        return self.paths

    def resource(self, r: ResourceInfo) -> None:
        kind_def = _must_definition(r.group, r.version, r.kind)
        gvk = _gvk(r.group, r.version, r.kind)
        scope = "Namespaced" if r.namespaced else ""
        ns_base = f"{self.prefix}/namespaces/{{namespace}}" if r.namespaced else self.prefix
        collection = f"{ns_base}/{r.plural}"
        item = f"{collection}/{{name}}"
        ns_params = [P_NAMESPACE] if r.namespaced else []
        name_param = Param("name", "string", f"name of the {r.kind}", "path", True)
        coll_params = [*ns_params, P_PRETTY]
        item_params = [name_param, *ns_params, P_PRETTY]
        base_id = f"{self.gv}{scope}{r.kind}"
        verbs = set(r.verbs)

        if "list" in verbs:
            list_def = _must_definition(r.group, r.version, r.kind + "List")
            self.add(collection, coll_params, self.op(
                "get", f"list{base_id}", f"list or watch objects of kind {r.kind}", "list", gvk,
                params=list(LIST_PARAMS), responses=_ok(list_def, "200"),
                produces=_STREAM_MEDIA))
            if r.namespaced:
                self.add(f"{self.prefix}/{r.plural}", [*LIST_PARAMS, P_PRETTY], self.op(
                    "get", f"list{self.gv}{r.kind}ForAllNamespaces",
                    f"list or watch objects of kind {r.kind}", "list", gvk,
                    responses=_ok(list_def, "200"), produces=_STREAM_MEDIA))
        if "watch" in verbs:
            self.watch_paths(r, gvk, scope, ns_params, name_param)
        if "create" in verbs:
            self.add(collection, coll_params, self.op(
                "post", f"create{base_id}", f"create a {r.kind}", "post", gvk,
                params=list(WRITE_PARAMS), body=kind_def,
                responses=_ok(kind_def, "200", "201", "202")))
        if "deletecollection" in verbs:
            self.add(collection, coll_params, self.op(
                "delete", f"delete{self.gv}Collection{scope}{r.kind}",
                f"delete collection of {r.kind}", "deletecollection", gvk,
                params=list(DELETE_COLLECTION_PARAMS), body=DELETE_OPTIONS,
                body_required=False, responses=_ok(STATUS, "200")))
        if "get" in verbs:
            self.add(item, item_params, self.op(
                "get", f"read{base_id}", f"read the specified {r.kind}", "get", gvk,
                responses=_ok(kind_def, "200")))
        if "update" in verbs:
            self.add(item, item_params, self.op(
                "put", f"replace{base_id}", f"replace the specified {r.kind}", "put", gvk,
                params=list(WRITE_PARAMS), body=kind_def,
                responses=_ok(kind_def, "200", "201")))
        if "patch" in verbs:
            self.add(item, item_params, self.op(
                "patch", f"patch{base_id}", f"partially update the specified {r.kind}", "patch",
                gvk, params=list(PATCH_PARAMS), body=PATCH, body_media=_PATCH_MEDIA,
                responses=_ok(kind_def, "200", "201")))
        if "delete" in verbs:
            returned = kind_def if (r.group, r.plural) in _DELETE_RETURNS_OBJECT else STATUS
            self.add(item, item_params, self.op(
                "delete", f"delete{base_id}", f"delete a {r.kind}", "delete", gvk,
                params=list(DELETE_PARAMS), body=DELETE_OPTIONS, body_required=False,
                responses=_ok(returned, "200", "202")))
        for sub in r.subresources:
            self.subresource(r, sub, item, item_params, base_id)

    def watch_paths(self, r: ResourceInfo, gvk: dict[str, str], scope: str,
                    ns_params: list[Param], name_param: Param) -> None:
        ns_base = (f"{self.prefix}/watch/namespaces/{{namespace}}" if r.namespaced
                   else f"{self.prefix}/watch")
        deprecated = "deprecated: use the 'watch' parameter with a list operation instead"
        self.add(f"{ns_base}/{r.plural}", [*LIST_PARAMS, *ns_params, P_PRETTY], self.op(
            "get", f"watch{self.gv}{scope}{r.kind}List",
            f"watch individual changes to a list of {r.kind}. {deprecated}.", "watchlist", gvk,
            responses=_ok(WATCH_EVENT, "200"), produces=_STREAM_MEDIA))
        self.add(f"{ns_base}/{r.plural}/{{name}}",
                 [*LIST_PARAMS, name_param, *ns_params, P_PRETTY], self.op(
            "get", f"watch{self.gv}{scope}{r.kind}",
            f"watch changes to an object of kind {r.kind}. {deprecated}, filtered to a single "
            "item with the 'fieldSelector' parameter.", "watch", gvk,
            responses=_ok(WATCH_EVENT, "200"), produces=_STREAM_MEDIA))
        if r.namespaced:
            self.add(f"{self.prefix}/watch/{r.plural}", [*LIST_PARAMS, P_PRETTY], self.op(
                "get", f"watch{self.gv}{r.kind}ListForAllNamespaces",
                f"watch individual changes to a list of {r.kind}. {deprecated}.", "watchlist",
                gvk, responses=_ok(WATCH_EVENT, "200"), produces=_STREAM_MEDIA))

    def subresource(self, r: ResourceInfo, sub: Subresource, item: str,
                    item_params: list[Param], base_id: str) -> None:
        path = f"{item}/{sub.name}"
        group, version, kind = (sub.group, sub.version, sub.kind) if sub.kind else (
            r.group, r.version, r.kind)
        if sub.kind and not sub.group and not sub.version:
            group, version = r.group, r.version
        gvk = _gvk(group, version, kind)
        title = sub.name[:1].upper() + sub.name[1:]
        op_id = f"{base_id}{title}"
        name_param = Param("name", "string", f"name of the {kind}", "path", True)
        params = [name_param, *item_params[1:]]
        if kind.endswith("Options"):
            self.connect(r, sub, path, params, gvk, title)
            return
        if sub.name == "log":
            self.add(path, params, self.op(
                "get", f"read{op_id}", f"read log of the specified {r.kind}", "get", gvk,
                params=list(_LOG_PARAMS), responses=_ok(STRING_BODY, "200"),
                produces=_LOG_MEDIA))
            return
        definition = _must_definition(group, version, kind)
        what = f"{sub.name} of the specified {r.kind}"
        for verb in sub.verbs:
            if verb == "get":
                self.add(path, params, self.op(
                    "get", f"read{op_id}", f"read {what}", "get", gvk,
                    responses=_ok(definition, "200")))
            elif verb == "update":
                self.add(path, params, self.op(
                    "put", f"replace{op_id}", f"replace {what}", "put", gvk,
                    params=list(WRITE_PARAMS), body=definition,
                    responses=_ok(definition, "200", "201")))
            elif verb == "patch":
                self.add(path, params, self.op(
                    "patch", f"patch{op_id}", f"partially update {what}", "patch", gvk,
                    params=list(PATCH_PARAMS), body=PATCH, body_media=_PATCH_MEDIA,
                    responses=_ok(definition, "200", "201")))
            elif verb == "create":
                self.add(path, params, self.op(
                    "post", f"create{op_id}", f"create {sub.name} of a {r.kind}", "post", gvk,
                    params=list(WRITE_PARAMS), body=definition,
                    responses=_ok(definition, "200", "201", "202")))

    def connect(self, r: ResourceInfo, sub: Subresource, path: str, params: list[Param],
                gvk: dict[str, str], title: str) -> None:
        scope = "Namespaced" if r.namespaced else ""
        methods = [_CONNECT_METHODS[v] for v in sorted(sub.verbs) if v in _CONNECT_METHODS]
        if sub.name == "proxy":
            methods += ["head", "options"]
        query = list(_CONNECT_PARAMS.get(sub.name, ()))
        # Connect endpoints take no `pretty`: their answers are streams, not objects.
        base = [p for p in params if p.name != "pretty"]
        variants = [(path, base, query, "")]
        if sub.name == "proxy":
            path_param = Param("path", "string", "path to the resource", "path", True)
            variants.append((f"{path}/{{path}}", [*base, path_param], [], "WithPath"))
        for target, path_params, op_params, suffix in variants:
            for method in sorted(methods):
                verb = method[:1].upper() + method[1:]
                self.add(target, path_params, self.op(
                    method, f"connect{self.gv}{verb}{scope}{r.kind}{title}{suffix}",
                    f"connect {method.upper()} requests to {sub.name} of {r.kind}", "connect",
                    gvk, params=list(op_params), responses=_ok(STRING_BODY, "200"),
                    produces=_ANY_MEDIA))


def _hoist_shared_params(item: PathItem) -> list[Param]:
    """Parameters every operation of a path takes go to the path, as upstream's builder does."""
    shared = list(item.path_params)
    if len(item.operations) == 0:
        return shared
    names = {p.name for p in shared}
    first, *rest = item.operations
    for param in list(first.params):
        if param.name in names:
            continue
        if all(any(q == param for q in op.params) for op in rest):
            shared.append(param)
            names.add(param.name)
            for op in item.operations:
                op.params = [q for q in op.params if q != param]
    return sorted(shared, key=lambda p: p.name)


@functools.cache
def _group_paths() -> dict[tuple[str, str], dict[str, PathItem]]:
    by_gv: dict[tuple[str, str], list[ResourceInfo]] = {}
    for r in RESOURCES:
        by_gv.setdefault((r.group, r.version), []).append(r)
    built: dict[tuple[str, str], dict[str, PathItem]] = {}
    for (group, version), resources in by_gv.items():
        paths = _PathBuilder(group, version).build(resources)
        for item in paths.values():
            item.path_params = _hoist_shared_params(item)
        built[(group, version)] = paths
    return built


# ---------------------------------------------------------------------------
# Schemas: upstream definitions, from JSON Schema back to OpenAPI.

_SCHEMA_MAPS = ("properties",)
_SCHEMA_VALUES = ("items", "additionalProperties", "not")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")


def _convert(schema: Schema, ref_prefix: str, wrap_refs: bool, in_properties: str = "") -> Schema:
    """One JSON-Schema-ified upstream schema in OpenAPI form.

    `wrap_refs` puts a `$ref` that has siblings (a description) inside `allOf`, as
    OpenAPI 3.0 ignores siblings of `$ref` and upstream's v3 documents do this.
    """
    out: Schema = {}
    for key, value in schema.items():
        if key == "$ref":
            continue
        if key == "type" and isinstance(value, list):
            kept = [t for t in value if t != "null"]
            out[key] = kept[0] if len(kept) == 1 else kept
        elif key == "enum" and in_properties in ("apiVersion", "kind"):
            continue  # added by the JSON Schema generator, not upstream
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _convert(sub, ref_prefix, wrap_refs, name)
                        for name, sub in value.items()}
        elif key in _SCHEMA_VALUES and isinstance(value, dict):
            out[key] = _convert(value, ref_prefix, wrap_refs)
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_convert(sub, ref_prefix, wrap_refs) for sub in value]
        else:
            out[key] = value
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = ref_prefix + ref.removeprefix(_JSON_SCHEMA_REF)
        if wrap_refs and out:
            return {"allOf": [{"$ref": target}], **out}
        return {"$ref": target, **out}
    return out


def _referenced(schema: Any, found: set[str]) -> None:
    """Definition names a raw (JSON Schema) schema refers to."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str):
            found.add(ref.removeprefix(_JSON_SCHEMA_REF))
        for value in schema.values():
            if isinstance(value, dict | list):
                _referenced(value, found)
    elif isinstance(schema, list):
        for value in schema:
            _referenced(value, found)


@functools.cache
def _direct_refs() -> dict[str, frozenset[str]]:
    refs: dict[str, frozenset[str]] = {}
    for name, schema in schemas.definitions().items():
        found: set[str] = set()
        _referenced(schema, found)
        refs[name] = frozenset(found)
    return refs


def _closure(roots: set[str]) -> list[str]:
    direct = _direct_refs()
    seen: set[str] = set()
    pending = [name for name in roots if name != STRING_BODY]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        if name not in direct:
            raise LookupError(f"definition {name} is not among upstream's schemas")
        seen.add(name)
        pending.extend(direct[name] - seen)
    return sorted(seen)


@functools.cache
def _converted(ref_prefix: str, wrap_refs: bool) -> dict[str, Schema]:
    converted = {name: _convert(schema, ref_prefix, wrap_refs)
                 for name, schema in schemas.definitions().items()}
    converted.update(_SCALAR_DEFINITIONS)
    return converted


def _used_definitions(paths: dict[str, PathItem]) -> set[str]:
    used: set[str] = set()
    for item in paths.values():
        for op in item.operations:
            if op.body:
                used.add(op.body)
            used.update(definition for _, definition in op.responses.values())
    return used


# ---------------------------------------------------------------------------
# Rendering


def _v3_param(p: Param) -> Schema:
    out: Schema = {"description": p.description, "in": p.location, "name": p.name}
    if p.required:
        out["required"] = True
    out["schema"] = {"type": p.type, "uniqueItems": True}
    return out


def _v3_body_schema(definition: str) -> Schema:
    if definition == STRING_BODY:
        return {"type": "string"}
    return {"$ref": _V3_REF + definition}


def _v3_operation(op: Operation) -> Schema:
    out: Schema = {"description": op.description, "operationId": op.operation_id}
    if op.params:
        out["parameters"] = [_v3_param(p) for p in sorted(op.params, key=lambda p: p.name)]
    if op.body:
        body: Schema = {"content": {media: {"schema": _v3_body_schema(op.body)}
                                    for media in op.body_media}}
        if op.body_required:
            body["required"] = True
        out["requestBody"] = body
    responses: Schema = {}
    for code, (text, definition) in op.responses.items():
        responses[code] = {"content": {media: {"schema": _v3_body_schema(definition)}
                                       for media in op.produces},
                           "description": text}
    responses["401"] = {"description": "Unauthorized"}
    out["responses"] = responses
    out["tags"] = [op.tag]
    if op.action:
        out["x-kubernetes-action"] = op.action
    if op.gvk is not None:
        out["x-kubernetes-group-version-kind"] = op.gvk
    return out


def _v3_paths(paths: dict[str, PathItem]) -> Schema:
    rendered: Schema = {}
    for path, item in sorted(paths.items()):
        entry: Schema = {op.method: _v3_operation(op) for op in item.operations}
        if item.path_params:
            entry["parameters"] = [_v3_param(p) for p in item.path_params]
        rendered[path] = entry
    return rendered


def _v2_param(p: Param) -> Schema:
    out: Schema = {"description": p.description, "in": p.location, "name": p.name}
    if p.required:
        out["required"] = True
    out["type"] = p.type
    out["uniqueItems"] = True
    return out


def _v2_schema(definition: str) -> Schema:
    if definition == STRING_BODY:
        return {"type": "string"}
    return {"$ref": _V2_REF + definition}


def _v2_operation(op: Operation) -> Schema:
    out: Schema = {"consumes": list(op.body_media), "description": op.description,
                   "operationId": op.operation_id}
    params = [_v2_param(p) for p in sorted(op.params, key=lambda p: p.name)]
    if op.body:
        body: Schema = {"in": "body", "name": "body", "schema": _v2_schema(op.body)}
        if op.body_required:
            body["required"] = True
        params.insert(0, body)
    if params:
        out["parameters"] = params
    out["produces"] = list(op.produces)
    responses: Schema = {code: {"description": text, "schema": _v2_schema(definition)}
                         for code, (text, definition) in op.responses.items()}
    responses["401"] = {"description": "Unauthorized"}
    out["responses"] = responses
    out["schemes"] = ["https"]
    out["tags"] = [op.tag]
    if op.action:
        out["x-kubernetes-action"] = op.action
    if op.gvk is not None:
        out["x-kubernetes-group-version-kind"] = op.gvk
    return out


def _v2_paths(paths: dict[str, PathItem]) -> Schema:
    rendered: Schema = {}
    for path, item in sorted(paths.items()):
        entry: Schema = {op.method: _v2_operation(op) for op in item.operations}
        if item.path_params:
            entry["parameters"] = [_v2_param(p) for p in item.path_params]
        rendered[path] = entry
    return rendered


_BEARER = {"description": "Bearer Token authentication", "in": "header",
           "name": "authorization", "type": "apiKey"}


def _dump(document: Schema) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def _index_key(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


@functools.cache
def _v3_documents() -> dict[tuple[str, str], tuple[bytes, str]]:
    """Every group-version's document with its content hash, built once."""
    definitions = _converted(_V3_REF, True)
    documents: dict[tuple[str, str], tuple[bytes, str]] = {}
    for gv, paths in _group_paths().items():
        names = _closure(_used_definitions(paths))
        document = {
            "components": {
                "schemas": {name: definitions[name] for name in names},
                "securitySchemes": {"BearerToken": _BEARER},
            },
            "info": INFO,
            "openapi": OPENAPI_VERSION,
            "paths": _v3_paths(paths),
        }
        body = _dump(document)
        documents[gv] = (body, hashlib.sha512(body).hexdigest().upper())
    return documents


def v3_document(group: str, version: str) -> bytes | None:
    """The OpenAPI v3 document of one group-version (JSON), None if we don't serve it."""
    found = _v3_documents().get((group, version))
    return found[0] if found else None


def v3_etag(group: str, version: str) -> str:
    """The content hash the index advertises for a group-version's document."""
    found = _v3_documents().get((group, version))
    if found is None:
        raise KeyError(f"no OpenAPI v3 document for {_index_key(group, version)}")
    return found[1]


def v3_index() -> dict[str, Any]:
    """`GET /openapi/v3`: where each group-version's document is, with its hash."""
    return {"paths": {
        _index_key(group, version): {
            "serverRelativeURL": f"/openapi/v3/{_index_key(group, version)}?hash={digest}",
        }
        for (group, version), (_, digest) in _v3_documents().items()
    }}


def v3_lookup(path: str) -> bytes | None:
    """The document for an index key such as `api/v1` or `apis/apps/v1`, or None."""
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "api":
        return v3_document("", parts[1])
    if len(parts) == 3 and parts[0] == "apis" and parts[1]:
        return v3_document(parts[1], parts[2])
    return None


@functools.cache
def v2_document() -> bytes:
    """The swagger 2.0 document of everything we serve (JSON)."""
    all_paths: dict[str, PathItem] = {}
    for paths in _group_paths().values():
        all_paths.update(paths)
    definitions = _converted(_V2_REF, False)
    names = _closure(_used_definitions(all_paths))
    document = {
        "definitions": {name: definitions[name] for name in names},
        "info": INFO,
        "paths": _v2_paths(all_paths),
        "security": [{"BearerToken": []}],
        "securityDefinitions": {"BearerToken": _BEARER},
        "swagger": "2.0",
    }
    return _dump(document)
