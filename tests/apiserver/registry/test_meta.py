"""Name syntax (registry.names) and object-metadata validation (registry.meta)."""

from __future__ import annotations

from kubi.api.errors import Cause, cause_text
from kubi.apiserver.registry import names
from kubi.apiserver.registry.meta import (
    name_rule_for,
    validate_object_meta,
    validate_object_meta_update,
)

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
QUALIFIED_NAME_PART_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


def texts(causes: list[Cause]) -> list[str]:
    return [cause_text(c) for c in causes]


# -- names ---------------------------------------------------------------------------------


def test_dns1123_subdomain() -> None:
    assert names.dns1123_subdomain("example.com") == []
    assert names.dns1123_subdomain("a" * 253) == []
    assert names.dns1123_subdomain("Example") == [SUBDOMAIN_MSG]
    assert names.dns1123_subdomain("a" * 254) == ["must be no more than 253 characters"]
    assert names.dns1123_subdomain("-a") == [SUBDOMAIN_MSG]
    assert names.dns1123_subdomain("a.") == [SUBDOMAIN_MSG]
    # Go's `$` does not match before a trailing newline; neither may ours.
    assert names.dns1123_subdomain("abc\n") == [SUBDOMAIN_MSG]


def test_dns1123_label() -> None:
    assert names.dns1123_label("my-name") == []
    assert names.dns1123_label("123-abc") == []
    assert names.dns1123_label("a.b") == ["must not contain dots"]
    assert names.dns1123_label("A") == [LABEL_MSG]
    assert names.dns1123_label("a" * 64) == ["must be no more than 63 characters"]


def test_dns1035_label() -> None:
    assert names.dns1035_label("echo") == []
    assert names.dns1035_label("1echo") == [DNS1035_MSG]
    assert names.dns1035_label("echo-") == [DNS1035_MSG]


def test_qualified_name() -> None:
    assert names.qualified_name("app") == []
    assert names.qualified_name("example.com/MyName") == []
    assert names.qualified_name("-app") == [QUALIFIED_NAME_PART_MSG]
    assert names.qualified_name("/app") == ["prefix part must be non-empty"]
    assert names.qualified_name("Example.com/app") == ["prefix part " + SUBDOMAIN_MSG]
    assert names.qualified_name("a/") == ["name part must be non-empty", QUALIFIED_NAME_PART_MSG]
    assert names.qualified_name("a" * 64) == ["name part must be no more than 63 characters"]
    (only,) = names.qualified_name("a/b/c")
    assert only.startswith("a qualified name must consist of alphanumeric characters")
    assert only.endswith("with an optional DNS subdomain prefix and '/' (e.g. "
                         "'example.com/MyName')")


def test_label_value() -> None:
    assert names.label_value("") == []
    assert names.label_value("summer") == []
    assert names.label_value("-x") == [LABEL_VALUE_MSG]
    assert names.label_value("a" * 64) == ["must be no more than 63 characters"]


def test_iana_svc_name() -> None:
    assert names.iana_svc_name("http") == []
    assert names.iana_svc_name("http--x") == ["must not contain consecutive hyphens"]
    assert names.iana_svc_name("123") == ["must contain at least one letter (a-z)"]
    assert names.iana_svc_name("-http") == ["must not begin or end with a hyphen"]
    assert names.iana_svc_name("HTTP") == [
        "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
        "must contain at least one letter (a-z)"]
    assert names.iana_svc_name("abcdefghijklmnop") == ["must be no more than 15 characters"]


def test_path_segment_name() -> None:
    assert names.path_segment_name("system:controller:foo") == []
    assert names.path_segment_name("..") == ["may not be '..'"]
    assert names.path_segment_name("a/b%") == ["may not contain '/'", "may not contain '%'"]


def test_config_map_key() -> None:
    assert names.config_map_key("app.properties") == []
    assert names.config_map_key("..data") == ["must not start with '..'"]
    (bad,) = names.config_map_key("a b")
    assert bad.startswith("a valid config key must consist of alphanumeric characters")


# -- object meta ---------------------------------------------------------------------------


def create(meta: dict[str, object], *, namespaced: bool = True,
           group: str = "", kind: str = "ConfigMap") -> list[str]:
    return texts(validate_object_meta(meta, namespaced=namespaced,
                                      name_rule=name_rule_for(group, kind), is_create=True))


def test_valid_meta_passes() -> None:
    assert create({"name": "echo", "namespace": "default", "labels": {"app": "echo"},
                   "annotations": {"Example.com/Note": "x"}, "finalizers": ["example.com/f"],
                   "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                        "name": "rs", "uid": "u1", "controller": True}]}) == []


def test_name_required() -> None:
    assert create({"namespace": "default"}) == [
        "metadata.name: Required value: name or generateName is required"]


def test_name_rule_per_kind() -> None:
    assert create({"name": "Bad", "namespace": "default"}) == [
        f'metadata.name: Invalid value: "Bad": {SUBDOMAIN_MSG}']
    assert create({"name": "a.b"}, namespaced=False, kind="Namespace") == [
        'metadata.name: Invalid value: "a.b": must not contain dots']
    assert create({"name": "1svc", "namespace": "default"}, kind="Service") == [
        f'metadata.name: Invalid value: "1svc": {DNS1035_MSG}']
    assert create({"name": "system:auth", "namespace": "default"},
                  group="rbac.authorization.k8s.io", kind="Role") == []


def test_generate_name_may_end_with_dash() -> None:
    assert create({"generateName": "echo-", "name": "echo-x7k2p", "namespace": "default"}) == []
    assert create({"generateName": "Echo-", "name": "echo-x7k2p", "namespace": "default"}) == [
        f'metadata.generateName: Invalid value: "Echo-": {SUBDOMAIN_MSG}']


def test_namespace_required_or_forbidden() -> None:
    assert create({"name": "x"}) == ["metadata.namespace: Required value"]
    assert create({"name": "x", "namespace": "Default"})[0].startswith(
        'metadata.namespace: Invalid value: "Default": a lowercase RFC 1123 label')
    assert create({"name": "x", "namespace": "default"}, namespaced=False, kind="Node") == [
        "metadata.namespace: Forbidden: not allowed on this type"]


def test_labels_keys_and_values() -> None:
    assert create({"name": "x", "namespace": "d", "labels": {"-k": "ok", "k": "-v"}}) == [
        f'metadata.labels: Invalid value: "-k": {QUALIFIED_NAME_PART_MSG}',
        f'metadata.labels: Invalid value: "-v": {LABEL_VALUE_MSG}',
    ]


def test_annotations_keys_and_size() -> None:
    assert create({"name": "x", "namespace": "d", "annotations": {"a b": ""}}) == [
        f'metadata.annotations: Invalid value: "a b": {QUALIFIED_NAME_PART_MSG}']
    big = {"a": "x" * (256 * 1024)}
    assert create({"name": "x", "namespace": "d", "annotations": big}) == [
        "metadata.annotations: Too long: may not be more than 262144 bytes"]
    fits = {"a": "x" * (256 * 1024 - 1)}
    assert create({"name": "x", "namespace": "d", "annotations": fits}) == []


def test_owner_references() -> None:
    assert create({"name": "x", "namespace": "d", "ownerReferences": [{}]}) == [
        'metadata.ownerReferences.apiVersion: Invalid value: "": version must not be empty',
        'metadata.ownerReferences.kind: Invalid value: "": must not be empty',
        'metadata.ownerReferences.name: Invalid value: "": must not be empty',
        'metadata.ownerReferences.uid: Invalid value: "": must not be empty',
    ]
    two = [{"apiVersion": "v1", "kind": "A", "name": "a", "uid": "1", "controller": True},
           {"apiVersion": "v1", "kind": "B", "name": "b", "uid": "2", "controller": True}]
    (text,) = create({"name": "x", "namespace": "d", "ownerReferences": two})
    assert text.endswith('Only one reference can have Controller set to true. Found "true" in '
                         "references for A/a and B/b")
    event = [{"apiVersion": "v1", "kind": "Event", "name": "e", "uid": "1"}]
    (text,) = create({"name": "x", "namespace": "d", "ownerReferences": event})
    assert text.endswith("/v1, Kind=Event is disallowed from being an owner")


def test_finalizers() -> None:
    assert create({"name": "x", "namespace": "d", "finalizers": ["a/b/c"]})[0].startswith(
        'metadata.finalizers: Invalid value: "a/b/c": a qualified name must consist')
    assert create({"name": "x", "namespace": "d",
                   "finalizers": ["orphan", "foregroundDeletion"]}) == [
        'metadata.finalizers: Invalid value: []string{"orphan", "foregroundDeletion"}: '
        "finalizer orphan and foregroundDeletion cannot be both set"]


def test_update_identity_is_immutable() -> None:
    old = {"name": "x", "namespace": "d", "uid": "u1", "generation": 2,
           "creationTimestamp": "2024-05-01T10:00:00Z"}
    assert texts(validate_object_meta_update(dict(old), old)) == []
    new = dict(old, name="y", namespace="e", uid="u2", generation=1,
               creationTimestamp="2024-05-02T10:00:00Z")
    assert texts(validate_object_meta_update(new, old)) == [
        'metadata.generation: Invalid value: 1: must not be decremented',
        'metadata.name: Invalid value: "y": field is immutable',
        'metadata.namespace: Invalid value: "e": field is immutable',
        'metadata.uid: Invalid value: "u2": field is immutable',
        "metadata.creationTimestamp: Invalid value: 2024-05-02 10:00:00 +0000 UTC: "
        "field is immutable",
    ]


def test_no_new_finalizers_while_deleting() -> None:
    old = {"name": "x", "deletionTimestamp": "2024-05-01T10:00:00Z", "finalizers": ["a.io/x"]}
    new = dict(old, finalizers=["a.io/x", "b.io/y"])
    assert texts(validate_object_meta_update(new, old)) == [
        'metadata.finalizers: Forbidden: no new finalizers can be added if the object is being '
        'deleted, found new finalizers []string{"b.io/y"}']
    assert texts(validate_object_meta_update(dict(old, finalizers=[]), old)) == []
