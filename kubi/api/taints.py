"""Taints and tolerations, shared by the scheduler, the DaemonSet and node lifecycle controllers."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def tolerates(toleration: Obj, taint: Obj) -> bool:
    """Upstream's v1 Toleration.ToleratesTaint."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    return operator == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def tolerated(tolerations: list[Obj], taint: Obj) -> bool:
    return any(tolerates(t, taint) for t in tolerations)
