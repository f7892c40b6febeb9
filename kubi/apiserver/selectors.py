"""Label and field selectors, parsed and matched as upstream's apimachinery does.

Label selectors come in two forms: the query-string syntax (`app=echo,tier in (a,b),!x`)
and the structured `metav1.LabelSelector` (matchLabels + matchExpressions) found in
specs. Field selectors are the `?fieldSelector=` syntax; which fields a kind accepts
is upstream's per-kind field-label conversion, and the values an object offers are
its registry's selectable fields.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from kubi.api.errors import Cause, StatusError, bad_request, forbidden, invalid, required

# -- label key / value syntax (k8s.io/apimachinery/pkg/util/validation) -------------

_QNAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QNAME_RE = re.compile(f"^{_QNAME_FMT}$")
_QNAME_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and "
              "end with an alphanumeric character")
_LABEL_VALUE_FMT = f"({_QNAME_FMT})?"
_LABEL_VALUE_RE = re.compile(f"^{_LABEL_VALUE_FMT}$")
_LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric "
                    "characters, '-', '_' or '.', and must start and end with an alphanumeric "
                    "character")
_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT = f"{_DNS1123_LABEL_FMT}(\\.{_DNS1123_LABEL_FMT})*"
_DNS1123_SUBDOMAIN_RE = re.compile(f"^{_DNS1123_SUBDOMAIN_FMT}$")
_DNS1123_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case "
                          "alphanumeric characters, '-' or '.', and must start and end with an "
                          "alphanumeric character")


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    # Upstream's wording, including its doubled space between examples.
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


def qualified_name_errors(value: str) -> list[str]:
    """Upstream's IsQualifiedName: why `value` is not a valid label key (empty if it is)."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            if len(prefix) > 253:
                errs.append("prefix part must be no more than 253 characters")
            if not _DNS1123_SUBDOMAIN_RE.match(prefix):
                errs.append("prefix part " + _regex_error(
                    _DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    else:
        return ["a qualified name " + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name",
                                                   "123-abc")
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if not _QNAME_RE.match(name):
        errs.append("name part " + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name",
                                                "123-abc"))
    return errs


def label_value_errors(value: str) -> list[str]:
    """Upstream's IsValidLabelValue."""
    errs: list[str] = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _LABEL_VALUE_RE.match(value):
        errs.append(_regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value",
                                 "12345"))
    return errs


def _field_error(path: str, value: str, detail: str) -> str:
    """A field.Error as text, the way selector parse errors quote it."""
    return f"{path}: Invalid value: {_go_quote(value)}: {detail}"


def _go_quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _go_string_slice(values: list[str]) -> str:
    """Go's %#v of a []string, as field errors print a bad list value."""
    if not values:
        return "[]string(nil)"
    return "[]string{" + ", ".join(_go_quote(v) for v in values) + "}"


# -- label selectors -------------------------------------------------------------

# Operators by their upstream `selection.Operator` spelling.
IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS = "in", "notin", "=", "==", "!="
EXISTS, DOES_NOT_EXIST, GREATER_THAN, LESS_THAN = "exists", "!", "gt", "lt"
_BINARY_OPERATORS = (IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS, GREATER_THAN, LESS_THAN)


class _SelectorError(Exception):
    """A parse or requirement error; callers turn it into a 400."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        if self.operator in (IN, EQUALS, DOUBLE_EQUALS):
            return self.key in labels and labels[self.key] in self.values
        if self.operator in (NOT_IN, NOT_EQUALS):
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == EXISTS:
            return self.key in labels
        if self.operator == DOES_NOT_EXIST:
            return self.key not in labels
        if self.operator in (GREATER_THAN, LESS_THAN):
            have = _as_int(labels.get(self.key))
            want = _as_int(self.values[0]) if len(self.values) == 1 else None
            if have is None or want is None:
                return False
            return have > want if self.operator == GREATER_THAN else have < want
        return False

    def __str__(self) -> str:
        if self.operator == EXISTS:
            return self.key
        if self.operator == DOES_NOT_EXIST:
            return "!" + self.key
        shown = self.values[0] if len(self.values) == 1 else ",".join(sorted(self.values))
        if self.operator in (IN, NOT_IN):
            return f"{self.key} {self.operator} ({shown})"
        symbol = {GREATER_THAN: ">", LESS_THAN: "<"}.get(self.operator, self.operator)
        return f"{self.key}{symbol}{shown}"


def _as_int(text: str | None) -> int | None:
    if text is None or not re.fullmatch(r"[+-]?[0-9]+", text):
        return None
    return int(text)


def _new_requirement(key: str, operator: str, values: list[str], *,
                     key_path: str = "key", values_path: str = "values") -> Requirement:
    """Upstream's NewRequirement: check the key, the operator's arity and the values."""
    errors: list[str] = []
    key_errs = qualified_name_errors(key)
    if key_errs:
        errors.append(_field_error(key_path, key, "; ".join(key_errs)))
    shown_values = _go_string_slice(values)
    if operator in (IN, NOT_IN) and not values:
        errors.append(f"{values_path}: Invalid value: {shown_values}: for 'in', 'notin' "
                      f"operators, values set can't be empty")
    elif operator in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS) and len(values) != 1:
        errors.append(f"{values_path}: Invalid value: {shown_values}: exact-match "
                      f"compatibility requires one single value")
    elif operator in (EXISTS, DOES_NOT_EXIST) and values:
        errors.append(f"{values_path}: Invalid value: {shown_values}: values set must be "
                      f"empty for exists and does not exist")
    elif operator in (GREATER_THAN, LESS_THAN):
        if len(values) != 1:
            errors.append(f"{values_path}: Invalid value: {shown_values}: for 'Gt', 'Lt' "
                          f"operators, exactly one value is required")
        for i, value in enumerate(values):
            if _as_int(value) is None:
                errors.append(_field_error(f"{values_path}[{i}]", value,
                                           "for 'Gt', 'Lt' operators, the value must be an "
                                           "integer"))
    for i, value in enumerate(values):
        value_errs = label_value_errors(value)
        if value_errs:
            errors.append(_field_error(f"{values_path}[{i}][{key}]", value,
                                       "; ".join(value_errs)))
    if errors:
        raise _SelectorError(errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]")
    return Requirement(key, operator, tuple(values))


@dataclass
class LabelSelector:
    """A set of requirements, all of which must hold. `nothing` selects no object."""

    requirements: list[Requirement] = field(default_factory=list)
    nothing: bool = False

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        return parse_label_selector(text)

    @classmethod
    def everything(cls) -> LabelSelector:
        return cls()

    @classmethod
    def match_nothing(cls) -> LabelSelector:
        return cls(nothing=True)

    def matches(self, labels: dict[str, str] | None) -> bool:
        if self.nothing:
            return False
        present = labels or {}
        return all(r.matches(present) for r in self.requirements)

    def empty(self) -> bool:
        """True when the selector does not restrict anything (upstream's Empty())."""
        return not self.nothing and not self.requirements

    def requires_exact_match(self, key: str) -> str | None:
        """The single value `key` must have, if the selector pins it."""
        for r in self.requirements:
            if r.key == key:
                if r.operator in (EQUALS, DOUBLE_EQUALS, IN) and len(r.values) == 1:
                    return r.values[0]
                return None
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


# Lexer tokens.
_END, _IDENT, _COMMA, _OPEN, _CLOSE, _ERROR = "end", "ident", ",", "(", ")", "error"
_SYMBOL_TOKENS = {")": _CLOSE, ",": _COMMA, "!": DOES_NOT_EXIST, "==": DOUBLE_EQUALS,
                  "=": EQUALS, ">": GREATER_THAN, "<": LESS_THAN, "!=": NOT_EQUALS,
                  "(": _OPEN}
_KEYWORD_TOKENS = {"in": IN, "notin": NOT_IN}
_SPECIAL = set("=!(),><")
_WHITESPACE = set(" \t\r\n")


def _lex(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos] in _WHITESPACE:
            pos += 1
        if pos >= len(text):
            tokens.append((_END, ""))
            return tokens
        if text[pos] in _SPECIAL:
            # Longest run of special characters that still forms a known symbol.
            best: tuple[str, str] | None = None
            end = pos
            while end < len(text) and text[end] in _SPECIAL:
                candidate = text[pos:end + 1]
                if candidate in _SYMBOL_TOKENS:
                    best = (_SYMBOL_TOKENS[candidate], candidate)
                elif best is not None:
                    break
                end += 1
            if best is None:
                tokens.append((_ERROR, f"error expected: keyword found '{text[pos:end]}'"))
                pos = end
            else:
                tokens.append(best)
                pos += len(best[1])
            continue
        start = pos
        while pos < len(text) and text[pos] not in _SPECIAL and text[pos] not in _WHITESPACE:
            pos += 1
        word = text[start:pos]
        tokens.append((_KEYWORD_TOKENS.get(word, _IDENT), word))


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _lex(text)
        self.position = 0

    def _peek(self, values: bool = True) -> tuple[str, str]:
        tok, lit = self.tokens[self.position]
        # In a value position, `in` and `notin` are ordinary words.
        if values and tok in (IN, NOT_IN):
            tok = _IDENT
        return tok, lit

    def _take(self, values: bool = True) -> tuple[str, str]:
        item = self._peek(values)
        self.position += 1
        return item

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            tok, lit = self._peek()
            if tok in (_IDENT, DOES_NOT_EXIST):
                try:
                    requirements.append(self._requirement())
                except _SelectorError as e:
                    raise _SelectorError(f"unable to parse requirement: {e}") from None
                tok, lit = self._take()
                if tok == _END:
                    return requirements
                if tok == _COMMA:
                    tok2, lit2 = self._peek()
                    if tok2 not in (_IDENT, DOES_NOT_EXIST):
                        raise _SelectorError(f"found '{lit2}', expected: identifier after ','")
                    continue
                raise _SelectorError(f"found '{lit}', expected: ',' or 'end of string'")
            if tok == _END:
                return requirements
            raise _SelectorError(f"found '{lit}', expected: !, identifier, or 'end of string'")

    def _requirement(self) -> Requirement:
        operator = ""
        tok, lit = self._take()
        if tok == DOES_NOT_EXIST:
            operator = DOES_NOT_EXIST
            tok, lit = self._take()
        if tok != _IDENT:
            raise _SelectorError(f"found '{lit}', expected: identifier")
        key_errs = qualified_name_errors(lit)
        if key_errs:
            raise _SelectorError(_field_error("<nil>", lit, "; ".join(key_errs)))
        key = lit
        # `!key` is complete as it stands; whatever follows must be a separator.
        if operator == DOES_NOT_EXIST or self._peek()[0] in (_END, _COMMA):
            return _new_requirement(key, operator or EXISTS, [])
        op = self._operator()
        values = self._value_set() if op in (IN, NOT_IN) else self._exact_value()
        return _new_requirement(key, op, sorted(set(values)))

    def _operator(self) -> str:
        tok, lit = self._take(values=False)
        if tok in _BINARY_OPERATORS:
            return tok
        raise _SelectorError(f"found '{lit}', expected: {', '.join(_BINARY_OPERATORS)}")

    def _value_set(self) -> list[str]:
        tok, lit = self._take()
        if tok != _OPEN:
            raise _SelectorError(f"found '{lit}' expected: '('")
        tok, lit = self._peek()
        if tok == _CLOSE:
            self._take()
            return [""]
        if tok not in (_IDENT, _COMMA):
            raise _SelectorError(f"found '{lit}', expected: ',', ')' or identifier")
        values = self._identifiers()
        if self._take()[0] != _CLOSE:
            raise _SelectorError(f"found '{lit}', expected: ')'")
        return values

    def _identifiers(self) -> list[str]:
        found: list[str] = []
        while True:
            tok, lit = self._take()
            if tok == _IDENT:
                found.append(lit)
                tok2, lit2 = self._peek()
                if tok2 == _COMMA:
                    continue
                if tok2 == _CLOSE:
                    return found
                raise _SelectorError(f"found '{lit2}', expected: ',' or ')'")
            if tok == _COMMA:
                # Empty entries such as "(,a)" or "(a,,b)" stand for the empty value.
                if not found:
                    found.append("")
                tok2, _ = self._peek()
                if tok2 in (_CLOSE, _COMMA):
                    found.append("")
                if tok2 == _CLOSE:
                    return found
                continue
            raise _SelectorError(f"found '{lit}', expected: ',', or identifier")

    def _exact_value(self) -> list[str]:
        tok, _ = self._peek()
        if tok in (_END, _COMMA):
            return [""]
        tok, lit = self._take()
        if tok == _IDENT:
            return [lit]
        raise _SelectorError(f"found '{lit}', expected: identifier")


def parse_label_selector(text: str) -> LabelSelector:
    """Parse `?labelSelector=`; a syntax error is a 400 BadRequest with upstream's text."""
    try:
        requirements = _Parser(text).parse()
    except _SelectorError as e:
        raise bad_request(str(e)) from None
    requirements.sort(key=lambda r: r.key)
    return LabelSelector(requirements)


_DICT_OPERATORS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}


def label_selector_from_dict(sel: dict[str, Any] | None) -> LabelSelector:
    """Upstream's LabelSelectorAsSelector.

    None selects nothing, `{}` (no labels, no expressions) selects everything. An
    invalid selector is a 400 BadRequest with upstream's message.
    """
    if sel is None:
        return LabelSelector.match_nothing()
    match_labels = sel.get("matchLabels") or {}
    expressions = sel.get("matchExpressions") or []
    if not match_labels and not expressions:
        return LabelSelector.everything()
    requirements: list[Requirement] = []
    try:
        for key, value in match_labels.items():
            requirements.append(_new_requirement(str(key), EQUALS, [_text(value)]))
        for expr in expressions:
            expr = expr if isinstance(expr, dict) else {}
            operator = _DICT_OPERATORS.get(expr.get("operator", ""))
            if operator is None:
                raise _SelectorError(
                    f"{_go_quote(_text(expr.get('operator')))} is not a valid label selector "
                    f"operator")
            values = [_text(v) for v in expr.get("values") or []]
            requirements.append(_new_requirement(_text(expr.get("key")), operator, values))
    except _SelectorError as e:
        raise bad_request(str(e)) from None
    requirements.sort(key=lambda r: r.key)
    return LabelSelector(requirements)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def format_label_selector(sel: dict[str, Any] | None) -> str:
    """Upstream's metav1.FormatLabelSelector: `<none>` when empty, `<error>` when invalid."""
    try:
        text = str(label_selector_from_dict(sel))
    except StatusError:
        return "<error>"
    return text or "<none>"


def format_labels(labels: dict[str, str] | None) -> str:
    """Upstream's labels.FormatLabels: sorted `k=v` pairs, or `<none>`."""
    text = ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items()))
    return text or "<none>"


def validate_label_selector_dict(sel: dict[str, Any] | None, path: str) -> list[Cause]:
    """Upstream's ValidateLabelSelector (v1.32: invalid values in expressions rejected)."""
    causes: list[Cause] = []
    if sel is None:
        return causes
    labels_path = f"{path}.matchLabels"
    for key, value in sorted((sel.get("matchLabels") or {}).items()):
        causes.extend(invalid(labels_path, key, msg) for msg in qualified_name_errors(key))
        causes.extend(invalid(labels_path, value, msg)
                      for msg in label_value_errors(_text(value)))
    for i, expr in enumerate(sel.get("matchExpressions") or []):
        expr = expr if isinstance(expr, dict) else {}
        expr_path = f"{path}.matchExpressions[{i}]"
        operator = expr.get("operator", "")
        values = expr.get("values") or []
        if operator in ("In", "NotIn"):
            if not values:
                causes.append(required(f"{expr_path}.values",
                                       "must be specified when `operator` is 'In' or 'NotIn'"))
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                causes.append(forbidden(f"{expr_path}.values", "may not be specified when "
                                        "`operator` is 'Exists' or 'DoesNotExist'"))
        else:
            causes.append(invalid(f"{expr_path}.operator", operator,
                                  "not a valid selector operator"))
        key = _text(expr.get("key"))
        causes.extend(invalid(f"{expr_path}.key", key, msg) for msg in qualified_name_errors(key))
        for j, value in enumerate(values):
            causes.extend(invalid(f"{expr_path}.values[{j}]", _text(value), msg)
                          for msg in label_value_errors(_text(value)))
    return causes


# -- field selectors -------------------------------------------------------------

_METADATA_ONLY = ("metadata.name", "metadata.namespace")

# Accepted field labels per (group, kind), as upstream's AddFieldLabelConversionFunc
# registrations; a value is the field the label maps to (events.k8s.io renames).
_FIELD_LABELS: dict[tuple[str, str], dict[str, str]] = {
    ("", "Pod"): {f: f for f in (
        "metadata.name", "metadata.namespace", "spec.nodeName", "spec.restartPolicy",
        "spec.schedulerName", "spec.serviceAccountName", "spec.hostNetwork", "status.phase",
        "status.podIP", "status.podIPs", "status.nominatedNodeName")} | {
        "spec.host": "spec.nodeName"},  # old clients' name for nodeName
    ("", "Node"): {f: f for f in ("metadata.name", "spec.unschedulable")},
    ("", "ReplicationController"): {f: f for f in (*_METADATA_ONLY, "status.replicas")},
    ("", "Event"): {f: f for f in (
        "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
        "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
        "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type",
        *_METADATA_ONLY)},
    ("", "Namespace"): {f: f for f in ("status.phase", "metadata.name")},
    ("", "Secret"): {f: f for f in ("type", *_METADATA_ONLY)},
    ("", "Service"): {f: f for f in (*_METADATA_ONLY, "spec.clusterIP", "spec.type")},
    ("batch", "Job"): {f: f for f in (*_METADATA_ONLY, "status.successful")},
    ("events.k8s.io", "Event"): {
        "reason": "reason",
        "regarding.kind": "involvedObject.kind",
        "regarding.namespace": "involvedObject.namespace",
        "regarding.name": "involvedObject.name",
        "regarding.uid": "involvedObject.uid",
        "regarding.apiVersion": "involvedObject.apiVersion",
        "regarding.resourceVersion": "involvedObject.resourceVersion",
        "regarding.fieldPath": "involvedObject.fieldPath",
        "reportingController": "reportingComponent",
        "source": "source",
        "type": "type",
        "metadata.namespace": "metadata.namespace",
        "metadata.name": "metadata.name",
    },
    ("certificates.k8s.io", "CertificateSigningRequest"): {
        f: f for f in ("metadata.name", "spec.signerName")},
}


def _unsupported_message(group: str, kind: str, label: str) -> str:
    if (group, kind) == ("batch", "Job"):
        return f"field label {json.dumps(label)} not supported for batchv1.Job"
    if (group, kind) in _FIELD_LABELS:
        return f"field label not supported: {label}"
    return (f"{json.dumps(label)} is not a known field selector: only "
            f'"metadata.name", "metadata.namespace"')


@dataclass(frozen=True)
class FieldTerm:
    field: str
    value: str
    negated: bool = False

    def matches(self, fields: dict[str, str]) -> bool:
        return (fields.get(self.field, "") == self.value) != self.negated

    def __str__(self) -> str:
        return f"{self.field}{'!=' if self.negated else '='}{self.value}"


@dataclass
class FieldSelector:
    """A conjunction of `field=value` / `field!=value` terms over a kind's fields."""

    group: str = ""
    kind: str = ""
    terms: list[FieldTerm] = field(default_factory=list)

    def matches(self, obj: dict[str, Any]) -> bool:
        if not self.terms:
            return True
        fields = selectable_fields(self.group, self.kind, obj)
        return all(t.matches(fields) for t in self.terms)

    def empty(self) -> bool:
        return not self.terms

    def requires_exact_match(self, field_name: str) -> str | None:
        for t in self.terms:
            if t.field == field_name and not t.negated:
                return t.value
        return None

    def __str__(self) -> str:
        return ",".join(str(t) for t in self.terms)


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not backslash-escaped."""
    terms: list[str] = []
    start = 0
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    for i in range(len(term)):
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op):]
    return None


def _unescape(value: str) -> str:
    if not any(c in value for c in "\\,="):
        return value
    out: list[str] = []
    escaped = False
    for ch in value:
        if escaped:
            if ch not in "\\,=":
                raise _SelectorError(
                    f"invalid field selector: invalid escape sequence: \\{ch}")
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",=":
            raise _SelectorError(
                f"invalid field selector: unescaped character in value: {ch}")
        else:
            out.append(ch)
    if escaped:
        raise _SelectorError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def parse_field_selector(text: str, group: str, kind: str) -> FieldSelector:
    """Parse `?fieldSelector=` for `kind`; bad syntax or an unsupported field is a 400."""
    terms: list[FieldTerm] = []
    accepted = _FIELD_LABELS.get((group, kind))
    try:
        for part in sorted(_split_terms(text)) if text else []:
            if not part:
                continue
            split = _split_term(part)
            if split is None:
                raise _SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
            label, op, raw_value = split
            value = _unescape(raw_value)
            terms.append(FieldTerm(label, value, op == "!="))
    except _SelectorError as e:
        raise bad_request(str(e)) from None
    converted: list[FieldTerm] = []
    for term in terms:
        if accepted is None:
            target = term.field if term.field in _METADATA_ONLY else None
        else:
            target = accepted.get(term.field)
        if target is None:
            raise bad_request(_unsupported_message(group, kind, term.field))
        converted.append(FieldTerm(target, term.value, term.negated))
    return FieldSelector(group, kind, converted)


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def selectable_fields(group: str, kind: str, obj: dict[str, Any]) -> dict[str, str]:
    """The fields an object offers to field selectors (upstream's ToSelectableFields)."""
    fields = {
        "metadata.name": _str(_get(obj, "metadata", "name")),
        "metadata.namespace": _str(_get(obj, "metadata", "namespace")),
    }
    if group == "" and kind == "Pod":
        pod_ips = _get(obj, "status", "podIPs") or []
        first_ip = pod_ips[0].get("ip") if pod_ips and isinstance(pod_ips[0], dict) else None
        fields |= {
            "spec.nodeName": _str(_get(obj, "spec", "nodeName")),
            "spec.restartPolicy": _str(_get(obj, "spec", "restartPolicy")),
            "spec.schedulerName": _str(_get(obj, "spec", "schedulerName")),
            "spec.serviceAccountName": _str(_get(obj, "spec", "serviceAccountName")),
            "spec.hostNetwork": _str(bool(_get(obj, "spec", "hostNetwork"))),
            "status.phase": _str(_get(obj, "status", "phase")),
            "status.podIP": _str(first_ip or _get(obj, "status", "podIP")),
            "status.nominatedNodeName": _str(_get(obj, "status", "nominatedNodeName")),
        }
    elif group == "" and kind == "Node":
        fields["spec.unschedulable"] = _str(bool(_get(obj, "spec", "unschedulable")))
    elif group == "" and kind == "Namespace":
        fields["status.phase"] = _str(_get(obj, "status", "phase"))
    elif group == "" and kind == "Secret":
        fields["type"] = _str(obj.get("type"))
    elif group == "" and kind == "Service":
        fields["spec.clusterIP"] = _str(_get(obj, "spec", "clusterIP"))
        fields["spec.type"] = _str(_get(obj, "spec", "type"))
    elif (group == "" and kind == "ReplicationController") or (
            group == "apps" and kind == "ReplicaSet"):
        fields["status.replicas"] = _str(_get(obj, "status", "replicas") or 0)
    elif group == "batch" and kind == "Job":
        fields["status.successful"] = _str(_get(obj, "status", "succeeded") or 0)
    elif group == "certificates.k8s.io" and kind == "CertificateSigningRequest":
        fields["spec.signerName"] = _str(_get(obj, "spec", "signerName"))
    elif kind == "Event" and group in ("", "events.k8s.io"):
        fields |= _event_fields(group, obj)
    return fields


def _event_fields(group: str, obj: dict[str, Any]) -> dict[str, str]:
    # Both API versions share the core Event's field set.
    if group == "events.k8s.io":
        ref = obj.get("regarding") or {}
        component = _get(obj, "deprecatedSource", "component")
    else:
        ref = obj.get("involvedObject") or {}
        component = _get(obj, "source", "component")
    ref = ref if isinstance(ref, dict) else {}
    reporting = _str(obj.get("reportingController") or obj.get("reportingComponent"))
    return {
        "involvedObject.kind": _str(ref.get("kind")),
        "involvedObject.namespace": _str(ref.get("namespace")),
        "involvedObject.name": _str(ref.get("name")),
        "involvedObject.uid": _str(ref.get("uid")),
        "involvedObject.apiVersion": _str(ref.get("apiVersion")),
        "involvedObject.resourceVersion": _str(ref.get("resourceVersion")),
        "involvedObject.fieldPath": _str(ref.get("fieldPath")),
        "reason": _str(obj.get("reason")),
        "reportingComponent": reporting,
        "source": _str(component) or reporting,
        "type": _str(obj.get("type")),
    }
