"""Label and field selectors: upstream's syntax, matching, and error texts."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from kubi.api.errors import FORBIDDEN, INVALID, REQUIRED, StatusError
from kubi.apiserver.selectors import (
    FieldSelector,
    LabelSelector,
    format_label_selector,
    format_labels,
    label_selector_from_dict,
    parse_field_selector,
    parse_label_selector,
    selectable_fields,
    validate_label_selector_dict,
)


def bad(fn: Callable[..., object], *args: object) -> StatusError:
    with pytest.raises(StatusError) as info:
        fn(*args)
    assert info.value.code == 400
    assert info.value.reason == "BadRequest"
    return info.value


# -- label selector syntax ----------------------------------------------------------


def test_parse_all_operator_forms() -> None:
    sel = parse_label_selector("app=echo,tier in (b,a),!x,env!=prod,y")
    # Requirements are sorted by key, in-sets printed sorted, as upstream's String().
    assert str(sel) == "app=echo,env!=prod,tier in (a,b),!x,y"
    assert sel.matches({"app": "echo", "tier": "a", "y": ""})
    assert sel.matches({"app": "echo", "tier": "b", "y": "1", "env": "dev"})
    assert not sel.matches({"app": "echo", "tier": "c", "y": "1"})
    assert not sel.matches({"app": "echo", "tier": "a", "y": "1", "x": "1"})
    assert not sel.matches({"app": "echo", "tier": "a", "y": "1", "env": "prod"})
    assert not sel.matches({"app": "echo", "tier": "a"})


def test_double_equals_notin_and_whitespace() -> None:
    sel = parse_label_selector("  a == 1 , b notin ( x , y ) ")
    assert str(sel) == "a==1,b notin (x,y)"
    assert sel.matches({"a": "1"})
    assert sel.matches({"a": "1", "b": "z"})
    assert not sel.matches({"a": "1", "b": "x"})
    assert not sel.matches({})


def test_not_equals_matches_missing_key() -> None:
    assert parse_label_selector("env!=prod").matches({})


def test_empty_selector_matches_everything() -> None:
    sel = parse_label_selector("")
    assert sel.empty()
    assert sel.matches({})
    assert sel.matches(None)
    assert not parse_label_selector("a").empty()


def test_empty_values() -> None:
    assert parse_label_selector("a=").matches({"a": ""})
    assert not parse_label_selector("a=").matches({"a": "x"})
    sel = parse_label_selector("x in (a,,b)")
    assert str(sel) == "x in (,a,b)"
    assert sel.matches({"x": ""})
    assert str(parse_label_selector("a in ()")) == "a in ()"


def test_keywords_are_values_in_value_position() -> None:
    sel = parse_label_selector("in in (in,notin)")
    assert sel.matches({"in": "notin"})


def test_greater_and_less_than() -> None:
    sel = parse_label_selector("a>5,b<3")
    assert sel.matches({"a": "6", "b": "2"})
    assert not sel.matches({"a": "5", "b": "2"})
    assert not sel.matches({"a": "x", "b": "2"})
    err = bad(parse_label_selector, "a>x")
    assert err.message == ('unable to parse requirement: values[0]: Invalid value: "x": for '
                           "'Gt', 'Lt' operators, the value must be an integer")


def test_prefixed_keys() -> None:
    sel = parse_label_selector("app.kubernetes.io/name=web")
    assert sel.matches({"app.kubernetes.io/name": "web"})
    assert sel.requires_exact_match("app.kubernetes.io/name") == "web"
    assert sel.requires_exact_match("other") is None


@pytest.mark.parametrize(("text", "message"), [
    ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
    ("a=b=c", "found '=', expected: ',' or 'end of string'"),
    ("x in a", "unable to parse requirement: found 'a' expected: '('"),
    ("!a=b", "found '=', expected: ',' or 'end of string'"),
    ("a,", "found '', expected: identifier after ','"),
    (",", "found ',', expected: !, identifier, or 'end of string'"),
    ("x in (a", "unable to parse requirement: found '', expected: ',' or ')'"),
    ("x in (a b)", "unable to parse requirement: found 'b', expected: ',' or ')'"),
])
def test_syntax_errors(text: str, message: str) -> None:
    assert bad(parse_label_selector, text).message == message


def test_invalid_key_and_value_messages() -> None:
    err = bad(parse_label_selector, "-bad=1")
    assert err.message == (
        'unable to parse requirement: <nil>: Invalid value: "-bad": name part must consist of '
        "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
        "character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
        "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
    err = bad(parse_label_selector, "a=-x-")
    assert err.message.startswith(
        'unable to parse requirement: values[0][a]: Invalid value: "-x-": a valid label must '
        "be an empty string")
    err = bad(parse_label_selector, "Bad_Prefix/a=1")
    assert "prefix part a lowercase RFC 1123 subdomain" in err.message


# -- metav1.LabelSelector -------------------------------------------------------------


def test_dict_none_selects_nothing_and_empty_selects_everything() -> None:
    assert not label_selector_from_dict(None).matches({})
    assert not label_selector_from_dict(None).matches({"a": "b"})
    assert label_selector_from_dict({}).matches({"a": "b"})
    assert label_selector_from_dict({"matchLabels": {}, "matchExpressions": []}).empty()


def test_dict_match_labels_and_expressions() -> None:
    sel = label_selector_from_dict({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["fe", "be"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "zone", "operator": "Exists"},
            {"key": "env", "operator": "NotIn", "values": ["prod"]},
        ],
    })
    assert str(sel) == "app=web,!canary,env notin (prod),tier in (be,fe),zone"
    assert sel.matches({"app": "web", "tier": "fe", "zone": "a"})
    assert not sel.matches({"app": "web", "tier": "fe", "zone": "a", "canary": "1"})
    assert not sel.matches({"app": "web", "tier": "fe"})
    assert not sel.matches({"app": "web", "tier": "fe", "zone": "a", "env": "prod"})


def test_dict_errors() -> None:
    err = bad(label_selector_from_dict, {"matchExpressions": [{"key": "a", "operator": "Is"}]})
    assert err.message == '"Is" is not a valid label selector operator'
    err = bad(label_selector_from_dict, {"matchExpressions": [{"key": "a", "operator": "In"}]})
    assert err.message == ("values: Invalid value: []string(nil): for 'in', 'notin' operators, "
                           "values set can't be empty")
    err = bad(label_selector_from_dict, {"matchLabels": {"a": "b c"}})
    assert err.message.startswith('values[0][a]: Invalid value: "b c": ')


def test_format_helpers() -> None:
    assert format_label_selector(None) == "<none>"
    assert format_label_selector({}) == "<none>"
    assert format_label_selector({"matchLabels": {"b": "2", "a": "1"}}) == "a=1,b=2"
    assert format_label_selector({"matchExpressions": [{"key": "a", "operator": "?"}]}) == \
        "<error>"
    assert format_labels(None) == "<none>"
    assert format_labels({"z": "1", "a": "2"}) == "a=2,z=1"


def test_validate_label_selector_dict() -> None:
    assert validate_label_selector_dict(None, "spec.selector") == []
    assert validate_label_selector_dict({"matchLabels": {"app": "web"}}, "spec.selector") == []
    causes = validate_label_selector_dict({
        "matchLabels": {"bad key": "ok", "good": "bad value"},
        "matchExpressions": [
            {"key": "a", "operator": "In"},
            {"key": "b", "operator": "Exists", "values": ["x"]},
            {"key": "c", "operator": "Maybe"},
            {"key": "d", "operator": "In", "values": ["no good"]},
        ],
    }, "spec.selector")
    got = [(c.type, c.field) for c in causes]
    assert got == [
        (INVALID, "spec.selector.matchLabels"),
        (INVALID, "spec.selector.matchLabels"),
        (REQUIRED, "spec.selector.matchExpressions[0].values"),
        (FORBIDDEN, "spec.selector.matchExpressions[1].values"),
        (INVALID, "spec.selector.matchExpressions[2].operator"),
        (INVALID, "spec.selector.matchExpressions[3].values[0]"),
    ]
    assert causes[2].message == ("Required value: must be specified when `operator` is 'In' "
                                 "or 'NotIn'")
    assert causes[3].message == ("Forbidden: may not be specified when `operator` is 'Exists' "
                                 "or 'DoesNotExist'")
    assert causes[4].message == 'Invalid value: "Maybe": not a valid selector operator'


# -- field selectors ------------------------------------------------------------------

POD = {
    "metadata": {"name": "web-1", "namespace": "default"},
    "spec": {"nodeName": "node-a", "restartPolicy": "Always", "schedulerName": "default-scheduler",
             "serviceAccountName": "default", "hostNetwork": True},
    "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}], "podIP": "10.0.0.5",
               "nominatedNodeName": ""},
}


def test_pod_fields() -> None:
    assert parse_field_selector("metadata.name=web-1,status.phase!=Pending", "", "Pod").matches(POD)
    assert not parse_field_selector("status.phase!=Running", "", "Pod").matches(POD)
    assert parse_field_selector("spec.nodeName==node-a", "", "Pod").matches(POD)
    assert parse_field_selector("spec.hostNetwork=true", "", "Pod").matches(POD)
    assert parse_field_selector("spec.hostNetwork=false", "", "Pod").matches({"metadata": {}})
    assert parse_field_selector("status.podIP=10.0.0.5", "", "Pod").matches(POD)
    assert parse_field_selector("metadata.namespace=default", "", "Pod").matches(POD)
    # An unset field compares as the empty string.
    assert parse_field_selector("spec.nodeName=", "", "Pod").matches({"metadata": {"name": "x"}})
    # Old clients' spec.host is upstream's alias of spec.nodeName.
    sel = parse_field_selector("spec.host=node-a", "", "Pod")
    assert str(sel) == "spec.nodeName=node-a"
    assert sel.matches(POD)


def test_empty_field_selector() -> None:
    sel = parse_field_selector("", "", "Pod")
    assert sel.empty()
    assert sel.matches({})
    assert isinstance(sel, FieldSelector)


@pytest.mark.parametrize(("group", "kind", "text", "obj", "expected"), [
    ("", "Node", "spec.unschedulable=true", {"spec": {"unschedulable": True}}, True),
    ("", "Node", "spec.unschedulable=false", {"spec": {}}, True),
    ("", "Namespace", "status.phase=Active", {"status": {"phase": "Active"}}, True),
    ("", "Secret", "type=kubernetes.io/tls", {"type": "kubernetes.io/tls"}, True),
    ("", "Secret", "type=Opaque", {"type": "kubernetes.io/tls"}, False),
    ("", "ReplicationController", "status.replicas=3", {"status": {"replicas": 3}}, True),
    ("", "Service", "spec.type=NodePort", {"spec": {"type": "NodePort"}}, True),
    ("batch", "Job", "status.successful=2", {"status": {"succeeded": 2}}, True),
    ("batch", "Job", "status.successful=0", {}, True),
    ("apps", "Deployment", "metadata.name=web", {"metadata": {"name": "web"}}, True),
    ("", "Event", "involvedObject.kind=Pod,reason=Started,type=Normal",
     {"involvedObject": {"kind": "Pod"}, "reason": "Started", "type": "Normal"}, True),
    ("", "Event", "source=kubelet", {"source": {"component": "kubelet"}}, True),
    ("", "Event", "source=sched", {"reportingComponent": "sched"}, True),
    ("", "Event", "reportingComponent=sched", {"reportingComponent": "sched"}, True),
    ("events.k8s.io", "Event", "regarding.name=web,reportingController=kubelet",
     {"regarding": {"name": "web"}, "reportingController": "kubelet"}, True),
])
def test_fields_per_kind(group: str, kind: str, text: str, obj: dict[str, object],
                         expected: bool) -> None:
    assert parse_field_selector(text, group, kind).matches(obj) is expected


@pytest.mark.parametrize(("group", "kind", "text", "message"), [
    ("", "Pod", "spec.containers=x", "field label not supported: spec.containers"),
    ("", "Node", "metadata.namespace=x", "field label not supported: metadata.namespace"),
    ("", "Namespace", "metadata.namespace=", "field label not supported: metadata.namespace"),
    ("", "Event", "regarding.name=x", "field label not supported: regarding.name"),
    ("events.k8s.io", "Event", "involvedObject.name=x",
     "field label not supported: involvedObject.name"),
    ("batch", "Job", "spec.parallelism=1",
     'field label "spec.parallelism" not supported for batchv1.Job'),
    # apps/v1 registers no conversion: upstream's generic message, even for status.replicas.
    ("apps", "ReplicaSet", "status.replicas=1",
     '"status.replicas" is not a known field selector: only "metadata.name", '
     '"metadata.namespace"'),
    ("", "ConfigMap", "data.x=1",
     '"data.x" is not a known field selector: only "metadata.name", "metadata.namespace"'),
])
def test_unsupported_fields(group: str, kind: str, text: str, message: str) -> None:
    assert bad(parse_field_selector, text, group, kind).message == message


def test_field_selector_syntax_errors_and_escapes() -> None:
    assert bad(parse_field_selector, "metadata.name", "", "Pod").message == \
        "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
    assert bad(parse_field_selector, r"metadata.name=a\q", "", "Pod").message == \
        r"invalid field selector: invalid escape sequence: \q"
    assert bad(parse_field_selector, "metadata.name=a=b", "", "Pod").message == \
        "invalid field selector: unescaped character in value: ="
    sel = parse_field_selector(r"metadata.name=a\,b\=c", "", "Pod")
    assert sel.requires_exact_match("metadata.name") == "a,b=c"
    assert sel.matches({"metadata": {"name": "a,b=c"}})


def test_selectable_fields_of_minimal_objects() -> None:
    fields = selectable_fields("", "Pod", {})
    assert fields["metadata.name"] == ""
    assert fields["spec.hostNetwork"] == "false"
    assert selectable_fields("", "Event", {"involvedObject": "junk"})["involvedObject.kind"] == ""


def test_label_selector_class_api() -> None:
    assert LabelSelector.parse("a=b").matches({"a": "b"})
    assert LabelSelector.everything().empty()
    assert not LabelSelector.match_nothing().empty()
