"""Running the API server: storage, credentials, bootstrap objects, HTTPS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from kubi.api import errors
from kubi.apiserver import certs
from kubi.apiserver.app import APIServer
from kubi.apiserver.store import WriteOptions
from kubi.apiserver.tokens import TokenAuthority
from kubi.storage import open_backend
from kubi.storage.interface import Backend
from kubi.util.upgrade import UpgradeHttpProtocol, WebSocketProtocol

log = logging.getLogger("kubi.server")

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass
class ServerConfig:
    data_dir: Path
    bind: str = "127.0.0.1"
    port: int = 6443
    storage: str = ""  # storage URL; default: SQLite in the data dir
    write_kubeconfig: list[Path] = field(default_factory=list)
    service_cidr: str = "10.43.0.0/16"
    compact_interval: float = 300.0
    advertise: str = ""
    disabled_admission: frozenset[str] = frozenset()

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.data_dir / 'db' / 'state.db'}"

    @property
    def url(self) -> str:
        host = self.advertise or ("127.0.0.1" if self.bind in ("0.0.0.0", "::") else self.bind)
        if ":" in host:
            host = f"[{host}]"
        return f"https://{host}:{self.port}"


async def bootstrap(api: APIServer) -> None:
    """Objects every cluster has: system namespaces and the `kubernetes` Service."""
    namespaces = api.store_for("", "namespaces")
    for name in SYSTEM_NAMESPACES:
        with contextlib.suppress(errors.StatusError):
            await namespaces.create("", {"apiVersion": "v1", "kind": "Namespace",
                                         "metadata": {"name": name}}, WriteOptions())
    services = api.store_for("", "services")
    if await services.get_kv("default", "kubernetes") is None:
        gateway = str(api.admission.network.network_address + 1)
        with contextlib.suppress(errors.StatusError):
            await services.create("default", {
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "labels": {
                    "component": "apiserver", "provider": "kubernetes"}},
                "spec": {"clusterIP": gateway, "ports": [
                    {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
            }, WriteOptions())


class Server:
    """One `kubi server` process: the API server over its store."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.backend: Backend | None = None
        self.api: APIServer | None = None
        self._uvicorn: uvicorn.Server | None = None
        self.credentials: certs.Credentials | None = None

    async def start(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        extra = [n for n in (config.bind, config.advertise) if n and n not in ("0.0.0.0", "::")]
        creds = certs.ensure_credentials(config.data_dir, extra)
        self.credentials = creds
        self.backend = open_backend(config.storage_url, compact_interval=config.compact_interval)
        await self.backend.start()
        self.api = APIServer(self.backend, TokenAuthority(creds.admin_token,
                                                          creds.service_account_key),
                             config.service_cidr, config.disabled_admission)
        await bootstrap(self.api)
        self.api.ready = True
        kubeconfigs = [config.data_dir / "kubeconfig.yaml", *config.write_kubeconfig]
        for path in kubeconfigs:
            certs.write_kubeconfig(path, creds, config.url)
        uv_config = uvicorn.Config(
            self.api, host=config.bind, port=config.port, loop="none", http=UpgradeHttpProtocol,
            ws=WebSocketProtocol, lifespan="off", log_level="warning", access_log=False,
            ssl_certfile=str(creds.server_cert), ssl_keyfile=str(creds.server_key),
            ssl_ca_certs=str(creds.ca_cert), ssl_cert_reqs=ssl.CERT_NONE,
            timeout_keep_alive=120, ws_ping_interval=None, date_header=False,
            timeout_graceful_shutdown=5)
        uv_config.load()
        self._uvicorn = uvicorn.Server(uv_config)
        # No main loop: its 10 Hz tick only refreshes the Date header, and idle must be idle.
        self._uvicorn.lifespan = uv_config.lifespan_class(uv_config)
        await self._uvicorn.startup()
        if self._uvicorn.should_exit:
            raise OSError(f"cannot listen on {config.bind}:{config.port}")
        log.warning("kubi API server listening on %s (kubeconfig: %s)", config.url,
                    kubeconfigs[0])

    async def stop(self) -> None:
        if self.api is not None:
            self.api.closing.set()
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
            with contextlib.suppress(Exception):
                await self._uvicorn.shutdown()
        if self.backend is not None:
            await self.backend.close()



async def wait_for_signal() -> None:
    """Return on SIGINT or SIGTERM (a clean shutdown)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.warning("shutting down")
