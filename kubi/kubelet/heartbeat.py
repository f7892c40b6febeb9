"""Node registration, status reports and Lease renewal, shared by every kind of node.

The simulated nodes and the real agent both register a Node, post its status as the
kubelet's setters shape it (status.py) and renew their kube-node-lease Lease; only
where the facts come from differs.
"""

from __future__ import annotations

from typing import Any

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.client.rest import Client
from kubi.kubelet import status as st

Obj = dict[str, Any]

NODE_LEASE_NAMESPACE = "kube-node-lease"
LEASES = "leases.coordination.k8s.io"


async def register_node(client: Client, node: Obj) -> tuple[Obj, bool]:
    """Create the Node; when it exists already (a restarted kubelet), fetch it and fill
    in a missing podCIDR and the labels and annotations the kubelet owns. Returns (node,
    created)."""
    try:
        return await client.create("nodes", node), True
    except StatusError as err:
        if err.code != 409:
            raise
    existing = await client.get("nodes", m.name_of(node))
    patch: Obj = {}
    wanted_spec = node.get("spec") or {}
    if wanted_spec.get("podCIDR") and not (existing.get("spec") or {}).get("podCIDR"):
        patch["spec"] = {"podCIDR": wanted_spec["podCIDR"],
                         "podCIDRs": wanted_spec.get("podCIDRs") or [wanted_spec["podCIDR"]]}
    labels = (existing.get("metadata") or {}).get("labels") or {}
    missing = {k: v for k, v in ((node.get("metadata") or {}).get("labels") or {}).items()
               if labels.get(k) != v}
    if missing:
        patch["metadata"] = {"labels": missing}
    annotations = (existing.get("metadata") or {}).get("annotations") or {}
    changed = {k: v for k, v in ((node.get("metadata") or {}).get("annotations") or {}).items()
               if annotations.get(k) != v}
    if changed:  # e.g. where this kubelet's API now listens
        patch.setdefault("metadata", {})["annotations"] = changed
    if patch:
        existing = await client.patch("nodes", m.name_of(node), patch)
    return existing, False


async def post_node_status(client: Client, name: str, facts: st.NodeFacts,
                           cached: Obj | None = None, *, extra: Obj | None = None) -> Obj:
    """Write the node status the kubelet would (retrying on conflicts); `extra` adds
    fields such as images or daemonEndpoints overrides."""
    node = cached
    for attempt in range(3):
        if node is None or attempt:
            node = await client.get("nodes", name)
        updated = m.deep_copy(node)
        updated["status"] = st.node_status(facts, node.get("status"))
        if extra:
            updated["status"].update(extra)
        try:
            return await client.update_status("nodes", updated)
        except StatusError as err:
            if err.code != 409 or attempt == 2:
                raise
    raise AssertionError("unreachable")


async def renew_node_lease(client: Client, name: str, uid: str, duration: int,
                           current: Obj | None) -> Obj:
    """Create or renew the node's Lease; returns the Lease as written."""
    renew = m.rfc3339_micro(m.now())
    if current is None:
        lease = st.node_lease({"metadata": {"name": name, "uid": uid}}, duration, renew)
        try:
            return await client.create(LEASES, lease)
        except StatusError as err:
            if err.code != 409:
                raise
        current = await client.get(LEASES, name, NODE_LEASE_NAMESPACE)
    for _ in range(3):
        lease = m.deep_copy(current)
        spec = lease.setdefault("spec", {})
        spec.update({"holderIdentity": name, "renewTime": renew,
                     "leaseDurationSeconds": duration})
        if uid and not lease["metadata"].get("ownerReferences"):
            lease["metadata"]["ownerReferences"] = st.node_lease(
                {"metadata": {"name": name, "uid": uid}})["metadata"]["ownerReferences"]
        try:
            return await client.update(LEASES, lease)
        except StatusError as err:
            if err.code == 404:
                return await renew_node_lease(client, name, uid, duration, None)
            if err.code != 409:
                raise
        current = await client.get(LEASES, name, NODE_LEASE_NAMESPACE)
    return current
