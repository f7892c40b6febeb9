"""Unknown-field and wrong-type checks over the compiled schema shapes: the findings,
their paths and the Go decoder's wording, and pruning of what is unknown."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubi.api.errors import StatusError
from kubi.apiserver import fieldcheck


def pod(**extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": "a", "labels": {"x": "y"}},
                           "spec": {"containers": [{"name": "c", "image": "i"}]}}
    obj.update(extra)
    return obj


def test_unknown_fields_are_found_at_any_depth_and_pruned() -> None:
    obj = pod()
    obj["metadata"]["bogus"] = 1
    obj["spec"]["containers"][0]["extra"] = True
    obj["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "odd": "x"}]
    obj["spec"]["nodeSelector"] = {"any-key": "is fine in a map"}
    found = fieldcheck.check(obj, "", "v1", "Pod")
    assert found.type_error == ""
    assert found.unknown == ["metadata.bogus", "spec.containers[0].extra",
                             "spec.containers[0].ports[0].odd"]
    found.prune()
    assert "bogus" not in obj["metadata"] and "extra" not in obj["spec"]["containers"][0]
    assert obj["spec"]["containers"][0]["ports"] == [{"containerPort": 80}]
    assert obj["spec"]["nodeSelector"] == {"any-key": "is fine in a map"}


@pytest.mark.parametrize(("group", "kind", "mutate", "message"), [
    ("", "Pod", lambda o: o["spec"]["containers"][0].update(ports=[{"containerPort": "80"}]),
     "json: cannot unmarshal string into Go struct field PodSpec.spec.containers[0].ports[0]"
     ".containerPort of type int32"),
    ("", "Pod", lambda o: o["metadata"]["labels"].update(x=1),
     "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels[x] of "
     "type string"),
    ("", "Pod", lambda o: o["spec"]["containers"][0].update(args=["a", 3]),
     "json: cannot unmarshal number into Go struct field PodSpec.spec.containers[0].args[1] "
     "of type string"),
    ("", "Pod", lambda o: o["spec"].update(hostNetwork="yes"),
     "json: cannot unmarshal string into Go struct field PodSpec.spec.hostNetwork of type bool"),
    ("", "Pod", lambda o: o["spec"].update(activeDeadlineSeconds=1.5),
     "json: cannot unmarshal number into Go struct field PodSpec.spec.activeDeadlineSeconds "
     "of type int64"),
])
def test_wrong_types_are_reported_as_go_would(group: str, kind: str, mutate: Any,
                                              message: str) -> None:
    obj = pod()
    mutate(obj)
    assert fieldcheck.check(obj, group, "v1", kind).type_error == message
    with pytest.raises(StatusError) as err:
        fieldcheck.enforce(obj, group, "v1", kind, "Warn")
    assert err.value.code == 400 and message in err.value.message


def test_whole_floats_fit_integers_and_nulls_fit_anything() -> None:
    obj = pod()
    obj["spec"]["activeDeadlineSeconds"] = 30.0
    obj["spec"]["hostname"] = None
    obj["metadata"]["annotations"] = {"a": None}
    before = copy.deepcopy(obj)
    assert fieldcheck.enforce(obj, "", "v1", "Pod", "Strict") == []
    assert obj == before


def test_field_validation_modes() -> None:
    def with_unknown() -> dict[str, Any]:
        return pod(unknownTop={"x": 1})

    assert fieldcheck.enforce(with_unknown(), "", "v1", "Pod", "Warn") == [
        'unknown field "unknownTop"']
    assert fieldcheck.enforce(with_unknown(), "", "v1", "Pod", "Ignore") == []
    with pytest.raises(StatusError) as err:
        fieldcheck.enforce(with_unknown(), "", "v1", "Pod", "Strict")
    assert err.value.message == 'strict decoding error: unknown field "unknownTop"'
