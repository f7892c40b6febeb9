"""The controller manager: every controller module in this package, run together.

Controllers are found by scanning the package (one module per controller), so
adding a controller is adding a module. With several servers, only the holder
of the `kube-controller-manager` Lease runs them.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import pkgutil
import socket
import uuid

import kubi.controllers
from kubi.client.informer import InformerFactory
from kubi.client.leaderelection import LeaderElector
from kubi.client.rest import Client
from kubi.controllers.base import Controller, ControllerContext, ControllerOptions
from kubi.util.aio import cancel_and_wait

log = logging.getLogger("kubi.controller-manager")

NOT_CONTROLLERS = {"base", "manager"}


def controller_classes() -> dict[str, type[Controller]]:
    found: dict[str, type[Controller]] = {}
    for module_info in pkgutil.iter_modules(kubi.controllers.__path__):
        if module_info.name in NOT_CONTROLLERS or module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"kubi.controllers.{module_info.name}")
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, Controller)
                    and value is not Controller and value.name
                    and value.__module__ == module.__name__):
                found[value.name] = value
    return found


async def run_controllers(client: Client, options: ControllerOptions | None = None,
                          only: set[str] | None = None, disabled: set[str] | None = None
                          ) -> None:
    """Build every enabled controller over shared informers and run them until cancelled."""
    informers = InformerFactory(client)
    ctx = ControllerContext(client, informers, options or ControllerOptions())
    controllers = []
    for name, cls in sorted(controller_classes().items()):
        if (only is not None and name not in only) or name in (disabled or set()):
            continue
        controllers.append(cls(ctx))
    informers.start()
    tasks = [asyncio.create_task(c.run(), name=c.name) for c in controllers]
    log.info("controllers running: %s", ", ".join(c.name for c in controllers))
    try:
        await asyncio.gather(*tasks)
    finally:
        await cancel_and_wait(tasks)
        await informers.stop()


async def run_with_leader_election(client: Client, options: ControllerOptions | None = None,
                                   only: set[str] | None = None,
                                   disabled: set[str] | None = None) -> None:
    identity = f"{socket.gethostname()}_{uuid.uuid4()}"
    elector = LeaderElector(client, "kube-controller-manager", identity)
    await elector.run(lambda: run_controllers(client, options, only, disabled))
