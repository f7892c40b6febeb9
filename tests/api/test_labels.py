"""metav1.LabelSelector matching: the loop form and the compiled form agree."""

from __future__ import annotations

from typing import Any

import pytest

from kubi.api.labels import (
    InvalidSelector,
    compile_selector,
    label_selector_matches,
    requirement_holds,
    selector_to_string,
)

LABELS = [{}, {"app": "web"}, {"app": "web", "tier": "front"}, {"app": "db", "tier": "back"},
          {"tier": "front"}]
SELECTORS: list[dict[str, Any]] = [
    {},
    {"matchLabels": {"app": "web"}},
    {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "x"]}]},
    {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]},
    {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
    {"matchLabels": {"tier": "front"},
     "matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]},
]


@pytest.mark.parametrize("selector", SELECTORS)
def test_both_forms_agree(selector: dict) -> None:
    compiled = compile_selector(selector)
    assert [label_selector_matches(selector, labels) for labels in LABELS] == \
        [compiled(labels) for labels in LABELS]


def test_nil_selects_nothing_and_empty_everything() -> None:
    assert not label_selector_matches(None, {"a": "b"})
    assert not compile_selector(None)({"a": "b"})
    assert label_selector_matches({}, None) and compile_selector({})({})
    assert [label_selector_matches(SELECTORS[3], labels) for labels in LABELS] == \
        [True, True, False, True, False]


def test_node_operators_compare_integers() -> None:
    assert requirement_holds("Gt", "5", ["3"]) and not requirement_holds("Gt", "3", ["3"])
    assert requirement_holds("Lt", "2", ["3"]) and not requirement_holds("Lt", None, ["3"])
    assert not requirement_holds("Gt", "five", ["3"])
    assert not requirement_holds("Gt", "5", ["3", "4"])
    assert not requirement_holds("Bogus", "5", ["5"])


def test_invalid_selectors_are_errors() -> None:
    for bad in ({"key": "a", "operator": "In", "values": []},
                {"key": "a", "operator": "Exists", "values": ["x"]},
                {"key": "", "operator": "Exists"},
                {"key": "a", "operator": "Equals", "values": ["x"]}):
        with pytest.raises(InvalidSelector):
            label_selector_matches({"matchExpressions": [bad]}, {"a": "x"})
    with pytest.raises(InvalidSelector):
        compile_selector({"matchExpressions": [{"key": "a", "operator": "Equals"}]})


def test_query_form_is_sorted_by_key() -> None:
    selector = {"matchLabels": {"tier": "front"},
                "matchExpressions": [{"key": "app", "operator": "In", "values": ["b", "a"]}]}
    assert selector_to_string(selector) == "app in (a,b),tier=front"
