"""Cache indexes: kept exact through adds, updates that move or keep index values,
removals, and indexers added late; asking for the same indexer twice is harmless."""

from __future__ import annotations

from typing import Any

from kubi.client.informer import Cache


def obj(name: str, namespace: str = "default", rv: str = "1", **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": rv,
                         "labels": labels}}


def by_app(o: dict[str, Any]) -> list[str]:
    app = o["metadata"]["labels"].get("app")
    return [app] if app else []


def names(found: list[dict[str, Any]]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in found)


def test_updates_move_objects_between_buckets_and_removals_clear_them() -> None:
    cache = Cache()
    cache.add_indexer("app", by_app)
    cache.put(obj("a", app="x"))
    cache.put(obj("b", app="x"))
    cache.put(obj("c", "other", app="x"))
    assert names(cache.by_index("app", "x")) == ["a", "b", "c"]
    assert cache.index_size("app", "x") == 3
    cache.put(obj("a", rv="2", app="x"))  # same values: stays put
    cache.put(obj("b", rv="2", app="y"))  # moved
    assert names(cache.by_index("app", "x")) == ["a", "c"]
    assert names(cache.by_index("app", "y")) == ["b"]
    cache.put(obj("b", rv="3"))  # no value at all now
    assert cache.by_index("app", "y") == [] and cache.index_size("app", "y") == 0
    assert cache.remove("c") is None  # keys are namespace/name
    assert cache.remove("other/c") is not None
    assert names(cache.by_index("app", "x")) == ["a"]
    assert names(cache.list("other")) == []
    assert cache.remove("default/missing") is None


def test_an_indexer_added_later_indexes_what_is_there() -> None:
    cache = Cache()
    cache.put(obj("a", app="x"))
    cache.add_indexer("app", by_app)
    cache.add_indexer("app", by_app)  # the same function again: nothing changes
    assert names(cache.by_index("app", "x")) == ["a"]
    cache.put(obj("a", rv="2", app="z"))
    assert cache.by_index("app", "x") == []
    assert names(cache.by_index("app", "z")) == ["a"]
    cache.remove("default/a")
    assert cache.by_index("app", "z") == [] and cache.keys() == []
