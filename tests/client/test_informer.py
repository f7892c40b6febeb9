from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kubi.client.informer import Informer, InformerFactory
from tests.harness import api_server, eventually


def cm(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "labels": labels}}


def test_informer_lists_watches_and_indexes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            await client.create("configmaps", cm("before", app="a"))
            informer = Informer(client, "configmaps", "default")
            informer.cache.add_indexer("app", lambda o: [o["metadata"].get("labels", {})
                                                         .get("app", "")])
            events: list[tuple[str, str]] = []
            informer.add_handlers(
                on_add=lambda o: events.append(("add", o["metadata"]["name"])),
                on_update=lambda old, new: events.append(("update", new["metadata"]["name"])),
                on_delete=lambda o: events.append(("delete", o["metadata"]["name"])))
            informer.start()
            await informer.wait_synced()
            assert ("add", "before") in events
            await client.create("configmaps", cm("after", app="b"))
            await client.patch("configmaps", "after", {"data": {"x": "1"}}, "default")
            await client.delete("configmaps", "before", "default")

            async def settled() -> bool:
                return ("delete", "before") in events and ("update", "after") in events

            await eventually(settled)
            assert [o["metadata"]["name"] for o in informer.cache.by_index("app", "b")] == [
                "after"]
            assert informer.cache.by_index("app", "a") == []
            after = informer.cache.get("default/after")
            assert after is not None
            assert after["data"] == {"x": "1"}
            await informer.stop()

    asyncio.run(scenario())


def test_informer_relists_when_its_version_is_compacted(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (api, client):
            informer = Informer(client, "configmaps", "default")
            deleted: list[str] = []
            informer.add_handlers(on_delete=lambda o: deleted.append(o["metadata"]["name"]))
            await client.create("configmaps", cm("gone"))
            informer.start()
            await informer.wait_synced()
            await informer.stop()
            # While it is away, objects change and history is compacted away.
            await client.delete("configmaps", "gone", "default")
            await client.create("configmaps", cm("new"))
            await api.backend.compact(await api.backend.current_revision())
            informer.start()

            async def caught_up() -> bool:
                return informer.cache.get("default/new") is not None and deleted == ["gone"]

            await eventually(caught_up)
            await informer.stop()

    asyncio.run(scenario())


def test_factory_shares_one_informer_per_resource(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            factory = InformerFactory(client)
            assert factory.informer("pods") is factory.informer("pods")
            assert factory.informer("pods") is not factory.informer("pods", "default")
            factory.start()
            await factory.wait_synced()
            await factory.stop()

    asyncio.run(scenario())
