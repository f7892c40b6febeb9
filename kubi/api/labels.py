"""metav1.LabelSelector as objects carry it (matchLabels + matchExpressions), matched
against label maps. One implementation for controllers, the scheduler and volume binding;
the query-string form (`?labelSelector=`) is parsed by the API server's selectors module.

As upstream's LabelSelectorAsSelector: a missing selector matches nothing, an empty one
matches everything, and an invalid one is an error (InvalidSelector).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

Obj = dict[str, Any]
Matcher = Callable[[Mapping[str, str]], bool]
LABEL_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


class InvalidSelector(ValueError):
    """A metav1.LabelSelector that upstream's LabelSelectorAsSelector rejects."""


def check_requirement(requirement: Obj) -> tuple[str, str, list[str]]:
    """(key, operator, values) of one matchExpressions entry, or InvalidSelector."""
    key = requirement.get("key")
    operator = requirement.get("operator")
    values = requirement.get("values") or []
    if not isinstance(key, str) or not key:
        raise InvalidSelector("key: Invalid value: \"\": name part must be non-empty")
    if operator in ("In", "NotIn"):
        if not values:
            raise InvalidSelector(
                "values: Invalid value: []string{}: for 'in', 'notin' operators, "
                "values set can't be empty")
    elif operator in ("Exists", "DoesNotExist"):
        if values:
            raise InvalidSelector(
                "values: Invalid value: for 'exists', 'doesnotexist' operators, "
                "values set must be empty")
    else:
        raise InvalidSelector(f"{operator!r} is not a valid label selector operator")
    return key, operator, [str(v) for v in values]


def requirement_holds(operator: str, value: str | None, values: Iterable[str]) -> bool:
    """One requirement against the label's value (None: the label is absent).

    Gt and Lt are the node-selector operators: an integer label compared with one bound."""
    if operator == "In":
        return value is not None and value in values
    if operator == "NotIn":
        return value is None or value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if operator in ("Gt", "Lt") and value is not None:
        bounds = list(values)
        try:
            have, bound = int(value), int(bounds[0]) if len(bounds) == 1 else None
        except ValueError:
            return False
        if bound is None:
            return False
        return have > bound if operator == "Gt" else have < bound
    return False


def label_selector_matches(selector: Obj | None, labels: Mapping[str, str] | None) -> bool:
    """Whether `labels` satisfy the selector (InvalidSelector if it is invalid)."""
    if selector is None:
        return False
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for requirement in selector.get("matchExpressions") or []:
        key, operator, values = check_requirement(requirement)
        if not requirement_holds(operator, labels.get(key), values):
            return False
    return True


def _never(_labels: Mapping[str, str]) -> bool:
    return False


def _always(_labels: Mapping[str, str]) -> bool:
    return True


def requirement_matcher(key: str, operator: str, values: Iterable[str]) -> Matcher:
    """A compiled label requirement, for selectors evaluated many times (the scheduler)."""
    wanted = frozenset(values)
    if operator == "In":
        return lambda labels: labels.get(key) in wanted
    if operator == "NotIn":
        return lambda labels: labels.get(key) not in wanted
    if operator == "Exists":
        return lambda labels: key in labels
    if operator == "DoesNotExist":
        return lambda labels: key not in labels
    raise InvalidSelector(f"{operator!r} is not a valid label selector operator")


def compile_selector(selector: Obj | None, *, extra: Iterable[tuple[str, str, list[str]]] = ()
                     ) -> Matcher:
    """The selector (plus `extra` requirements) as one function of a label map."""
    if selector is None:
        return _never
    parts: list[Matcher] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        parts.append(requirement_matcher(key, "In", [value]))
    for expr in selector.get("matchExpressions") or []:
        parts.append(requirement_matcher(expr.get("key", ""), expr.get("operator", ""),
                                         expr.get("values") or []))
    for key, operator, values in extra:
        parts.append(requirement_matcher(key, operator, values))
    if not parts:
        return _always
    if len(parts) == 1:
        return parts[0]
    return lambda labels: all(part(labels) for part in parts)


def selector_is_empty(selector: Obj | None) -> bool:
    return selector is not None and not selector.get("matchLabels") and not selector.get(
        "matchExpressions")


def selector_to_string(selector: Obj | None) -> str:
    """The `labelSelector` query form (sorted by key as upstream prints it)."""
    if selector is None:
        return ""
    parts: list[tuple[str, str]] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        parts.append((key, f"{key}={value}"))
    for requirement in selector.get("matchExpressions") or []:
        key, operator, values = check_requirement(requirement)
        listed = ",".join(sorted(set(values)))
        text = {"In": f"{key} in ({listed})", "NotIn": f"{key} notin ({listed})",
                "Exists": key, "DoesNotExist": f"!{key}"}[operator]
        parts.append((key, text))
    return ",".join(text for _, text in sorted(parts))


def selector_is_valid(selector: Obj | None) -> bool:
    try:
        selector_to_string(selector)
    except InvalidSelector:
        return False
    return True
