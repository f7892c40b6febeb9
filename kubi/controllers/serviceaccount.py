"""Per-namespace defaults: the `default` ServiceAccount and the root CA ConfigMap.

- serviceaccount (upstream pkg/controller/serviceaccount/serviceaccounts_controller.go):
  every active namespace has a `default` ServiceAccount, recreated when deleted.
- root-ca-cert-publisher (upstream pkg/controller/certificates/rootcacertpublisher):
  every namespace has a ConfigMap `kube-root-ca.crt` whose `ca.crt` is the cluster
  CA, so pods can verify the API server. The PEM comes from
  `ControllerOptions.extra["root_ca_pem"]`; without it the publisher idles.
"""

from __future__ import annotations

import logging
from typing import Any

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.controllers.base import Controller, ControllerContext

log = logging.getLogger("kubi.controllers.serviceaccount")

Obj = dict[str, Any]

DEFAULT_SERVICE_ACCOUNT = "default"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
DESCRIPTION_ANNOTATION = "kubernetes.io/description"
DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when using "
               "internal endpoints such as the internal service IP or kubernetes.default.svc. "
               "No other usage is guaranteed across distributions of Kubernetes clusters.")


def namespace_terminating(err: StatusError) -> bool:
    """A create refused because the namespace is going away: nothing to retry."""
    if err.code != 403:
        return False
    return (any(c.type == "NamespaceTerminating" for c in err.causes)
            or "because it is being terminated" in err.message)


class ServiceAccountsController(Controller):
    name = "serviceaccount"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.namespaces = ctx.informers.informer("namespaces")
        self.accounts = ctx.informers.informer("serviceaccounts")
        self.namespaces.add_handlers(on_add=self.enqueue,
                                     on_update=lambda _old, new: self.enqueue(new))
        self.accounts.add_handlers(on_delete=self._on_account_deleted)

    def _on_account_deleted(self, account: Obj) -> None:
        if m.name_of(account) == DEFAULT_SERVICE_ACCOUNT:
            self.enqueue_key(m.namespace_of(account))

    async def reconcile(self, key: str) -> float | None:
        ns = self.namespaces.cache.get(key)
        if ns is None:
            return None
        if (ns.get("status") or {}).get("phase", "Active") != "Active":
            return None  # upstream leaves terminating namespaces alone
        if self.accounts.cache.get_by_name(key, DEFAULT_SERVICE_ACCOUNT) is not None:
            return None
        account = {"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": DEFAULT_SERVICE_ACCOUNT, "namespace": key}}
        try:
            await self.client.create("serviceaccounts", account, key)
        except StatusError as err:
            if err.code == 409 or namespace_terminating(err):
                return None
            raise
        return None


class RootCACertPublisher(Controller):
    name = "root-ca-cert-publisher"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.root_ca = str(ctx.options.extra.get("root_ca_pem") or "")
        self.namespaces = ctx.informers.informer("namespaces")
        self.configmaps = ctx.informers.informer("configmaps")
        self.namespaces.add_handlers(on_add=self.enqueue, on_update=self._on_namespace_update)
        self.configmaps.add_handlers(on_update=lambda _old, new: self._on_configmap(new),
                                     on_delete=self._on_configmap)

    def _on_namespace_update(self, _old: Obj, new: Obj) -> None:
        if (new.get("status") or {}).get("phase", "Active") == "Active":
            self.enqueue(new)

    def _on_configmap(self, configmap: Obj) -> None:
        if m.name_of(configmap) == ROOT_CA_CONFIGMAP:
            self.enqueue_key(m.namespace_of(configmap))

    async def reconcile(self, key: str) -> float | None:
        if not self.root_ca:
            return None
        data = {"ca.crt": self.root_ca}
        current = self.configmaps.cache.get_by_name(key, ROOT_CA_CONFIGMAP)
        if current is None:
            configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": key,
                                      "annotations": {DESCRIPTION_ANNOTATION: DESCRIPTION}},
                         "data": data}
            try:
                await self.client.create("configmaps", configmap, key)
            except StatusError as err:
                # Gone or terminating namespaces will not take it; an existing one
                # comes back through the informer.
                if err.code in (404, 409) or namespace_terminating(err):
                    return None
                raise
            return None
        annotations = (current.get("metadata") or {}).get("annotations") or {}
        if current.get("data") == data and annotations.get(DESCRIPTION_ANNOTATION):
            return None
        updated = m.deep_copy(current)
        updated["data"] = data
        updated["metadata"].setdefault("annotations", {})[DESCRIPTION_ANNOTATION] = DESCRIPTION
        await self.client.update("configmaps", updated)
        return None
