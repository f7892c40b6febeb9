"""How the API server reaches a node's agent (upstream's kubelet client): where its API
is, which token to present, and how its refusals read as Status errors.

The node names its agent's endpoint: the annotation `kubi.dev/kubelet-url` the agent
writes (e.g. https://127.0.0.1:10250) or, as upstream, status.addresses (InternalIP, then
Hostname, then ExternalIP) with status.daemonEndpoints.kubeletEndpoint.Port. The agent's
certificate is not verified (upstream's default without --kubelet-certificate-authority);
the API server authenticates to it with its own token (`APIServer.kubelet_token` when set,
else the admin token the agents are given).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from kubi.api import errors
from kubi.api import meta as m

if TYPE_CHECKING:
    from kubi.apiserver.app import APIServer

Obj = dict[str, Any]

KUBELET_URL_ANNOTATION = m.KUBELET_URL_ANNOTATION
DEFAULT_KUBELET_PORT = 10250
CONNECT_TIMEOUT = 10.0


def kubelet_url(node: Obj) -> str:
    """Base URL of a node's agent API."""
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    if annotations.get(KUBELET_URL_ANNOTATION):
        return str(annotations[KUBELET_URL_ANNOTATION]).rstrip("/")
    status = node.get("status") or {}
    addresses = status.get("addresses") or []
    port = (((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {})
            .get("Port") or DEFAULT_KUBELET_PORT)
    for kind in ("InternalIP", "Hostname", "ExternalIP"):
        for address in addresses:
            if address.get("type") == kind and address.get("address"):
                host = str(address["address"])
                return f"https://{f'[{host}]' if ':' in host else host}:{port}"
    raise errors.internal(f"Internal error occurred: no preferred addresses found; known "
                          f"addresses: {addresses}")


def kubelet_token(server: APIServer) -> str:
    return getattr(server, "kubelet_token", None) or server.tokens.admin_token


def insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context



async def node_url(server: APIServer, pod: Obj) -> str:
    node_name = str((pod.get("spec") or {}).get("nodeName") or "")
    node = await server.store_for("", "nodes").get("", node_name)
    return kubelet_url(node)


def kubelet_error(code: int, text: str) -> errors.StatusError:
    """The agent's plain-text error as the Status upstream's proxy makes of it."""
    text = text.strip()
    if code == 400:
        return errors.bad_request(text)
    if code == 404:
        return errors.StatusError(404, "NotFound", text)
    if code in (401, 403):
        return errors.internal(f"Internal error occurred: the node agent refused the API "
                               f"server ({code}): {text}")
    return errors.StatusError(code if code >= 500 else 500, "InternalError",
                              f'an error on the server ("{text}") has prevented the request '
                              "from succeeding")

