"""In-process clusters for component tests: a real API server over real SQLite, reached
through the in-process transport (the same app, auth and handlers as over HTTPS)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from kubi.apiserver import certs
from kubi.apiserver.app import APIServer
from kubi.apiserver.server import bootstrap
from kubi.apiserver.tokens import TokenAuthority
from kubi.client.rest import Client
from kubi.storage import open_backend
from kubi.util.aio import cancel_and_wait

T = TypeVar("T")


@contextlib.asynccontextmanager
async def api_server(data_dir: Path, *, service_accounts: bool = False,
                     ) -> AsyncIterator[tuple[APIServer, Client]]:
    """Without controllers nothing makes `default` service accounts, so component tests
    run without the ServiceAccount admission plugin unless they ask for it."""
    creds = certs.ensure_credentials(data_dir)
    backend = open_backend(f"sqlite:///{data_dir / 'state.db'}")
    await backend.start()
    disabled = frozenset() if service_accounts else frozenset({"ServiceAccount"})
    api = APIServer(backend, TokenAuthority(creds.admin_token, creds.service_account_key),
                    disabled_admission=disabled)
    await bootstrap(api)
    api.ready = True
    client = Client.in_process(api, creds.admin_token)
    try:
        yield api, client
    finally:
        await client.close()
        await backend.close()


@contextlib.asynccontextmanager
async def running(*coroutines: Awaitable[Any]) -> AsyncIterator[None]:
    """Run components (controllers, scheduler, agents) in the background for a block."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        yield
        for task in tasks:
            failure = task.exception() if task.done() else None
            if failure is not None:
                raise failure
    finally:
        await cancel_and_wait(tasks)


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 60.0,
                     interval: float = 0.05) -> T:
    """Poll `check` until it returns a truthy value; the timeout only bounds a hang.
    A falsy result (None included) means "not yet", so the value returned is never None."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: object = None
    while True:
        try:
            result = await check()
            if result:
                return result
            last = result
        except AssertionError as err:
            last = err
        if loop.time() > deadline:
            raise AssertionError(f"condition not met in {timeout}s; last: {last!r}")
        await asyncio.sleep(interval)


def token() -> str:
    return secrets.token_hex(8)
