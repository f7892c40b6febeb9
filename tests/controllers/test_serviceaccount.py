"""The `default` ServiceAccount and `kube-root-ca.crt` publishers against a real API server."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

from kubi.api.errors import StatusError
from kubi.client.informer import InformerFactory
from kubi.client.rest import Client
from kubi.controllers.base import ControllerContext, ControllerOptions
from kubi.controllers.manager import run_controllers
from kubi.controllers.serviceaccount import (
    DESCRIPTION,
    RootCACertPublisher,
    ServiceAccountsController,
)
from tests.harness import api_server, eventually, running

Obj = dict[str, Any]
PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


async def get_or_none(client: Client, resource: str, name: str, namespace: str) -> Obj | None:
    try:
        return await client.get(resource, name, namespace)
    except StatusError as err:
        if err.code == 404:
            return None
        raise


async def make_namespace(client: Client, name: str) -> None:
    await client.create("namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                       "metadata": {"name": name}})


def test_every_active_namespace_gets_a_default_service_account(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), \
                running(run_controllers(client, only={"serviceaccount"})):
            for ns in ("default", "kube-system"):
                await eventually(functools.partial(get_or_none, client, "serviceaccounts",
                                                   "default", ns), timeout=20)
            await make_namespace(client, "team-a")
            first = await eventually(lambda: get_or_none(client, "serviceaccounts",
                                                         "default", "team-a"), timeout=20)
            assert first["metadata"]["namespace"] == "team-a"

            await client.delete("serviceaccounts", "default", "team-a")

            async def recreated() -> Obj | None:
                found = await get_or_none(client, "serviceaccounts", "default", "team-a")
                if found and found["metadata"]["uid"] != first["metadata"]["uid"]:
                    return found
                return None

            await eventually(recreated, timeout=20)

    asyncio.run(scenario())


def test_terminating_namespaces_get_no_service_account(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            await make_namespace(client, "leaving")
            await client.delete("namespaces", "leaving")  # no namespace controller: it stays
            informers = InformerFactory(client)
            controller = ServiceAccountsController(ControllerContext(client, informers))
            informers.start()
            try:
                await informers.wait_synced()
                assert (await client.get("namespaces", "leaving"))["status"]["phase"] == \
                    "Terminating"
                assert await controller.reconcile("leaving") is None
                assert await controller.reconcile("no-such-namespace") is None
                assert await get_or_none(client, "serviceaccounts", "default", "leaving") is None
            finally:
                await informers.stop()

    asyncio.run(scenario())


def test_root_ca_configmap_is_published_and_kept_in_shape(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            options = ControllerOptions(extra={"root_ca_pem": PEM})
            async with running(run_controllers(client, options,
                                               only={"root-ca-cert-publisher"})):
                await make_namespace(client, "apps")
                for ns in ("default", "kube-public", "apps"):
                    found = await eventually(functools.partial(
                        get_or_none, client, "configmaps", "kube-root-ca.crt", ns), timeout=20)
                    assert found["data"] == {"ca.crt": PEM}
                    assert found["metadata"]["annotations"] == {
                        "kubernetes.io/description": DESCRIPTION}

                # Tampering is undone.
                await client.patch("configmaps", "kube-root-ca.crt",
                                   {"data": {"ca.crt": "forged", "extra": "x"}}, "apps")

                async def restored() -> bool:
                    found = await get_or_none(client, "configmaps", "kube-root-ca.crt", "apps")
                    return bool(found and found["data"] == {"ca.crt": PEM})

                await eventually(restored, timeout=20)
                # Deletion is undone.
                before = await client.get("configmaps", "kube-root-ca.crt", "apps")
                await client.delete("configmaps", "kube-root-ca.crt", "apps")

                async def recreated() -> bool:
                    found = await get_or_none(client, "configmaps", "kube-root-ca.crt", "apps")
                    return bool(found and found["metadata"]["uid"] != before["metadata"]["uid"])

                await eventually(recreated, timeout=20)

    asyncio.run(scenario())


def test_root_ca_publisher_without_a_ca_does_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            informers = InformerFactory(client)
            publisher = RootCACertPublisher(ControllerContext(client, informers))
            informers.start()
            try:
                await informers.wait_synced()
                assert await publisher.reconcile("default") is None
                assert await get_or_none(client, "configmaps", "kube-root-ca.crt",
                                         "default") is None
            finally:
                await informers.stop()

    asyncio.run(scenario())
