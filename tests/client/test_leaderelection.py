from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from kubi.client.leaderelection import LEASES, LeaderElector
from tests.harness import api_server, eventually


def test_only_one_candidate_leads_and_the_other_takes_over(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            a = LeaderElector(client, "lock", "a", lease_duration=1, renew_deadline=0.8,
                              retry_period=0.1)
            b = LeaderElector(client, "lock", "b", lease_duration=1, renew_deadline=0.8,
                              retry_period=0.1)
            leading: list[str] = []

            def work(name: str) -> Callable[[], Coroutine[Any, Any, None]]:
                async def lead() -> None:
                    leading.append(name)
                    await asyncio.Event().wait()
                return lead

            task_a = asyncio.create_task(a.run(work("a")))
            await eventually(lambda: asyncio.sleep(0, a.is_leader))
            task_b = asyncio.create_task(b.run(work("b")))
            await asyncio.sleep(0.5)
            assert leading == ["a"] and not b.is_leader
            lease = await client.get(LEASES, "lock", "kube-system")
            assert lease["spec"]["holderIdentity"] == "a"
            task_a.cancel()  # a dies without releasing: b waits out the lease
            await eventually(lambda: asyncio.sleep(0, b.is_leader))
            assert leading == ["a", "b"]
            lease = await client.get(LEASES, "lock", "kube-system")
            assert lease["spec"]["holderIdentity"] == "b"
            assert lease["spec"]["leaseTransitions"] == 1
            task_b.cancel()
            await asyncio.gather(task_a, task_b, return_exceptions=True)

    asyncio.run(scenario())
