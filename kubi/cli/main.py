"""The `kubi` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

DEFAULT_DATA_DIR = Path(os.environ.get("KUBI_DATA_DIR", "/var/lib/kubi" if os.geteuid() == 0
                                       else Path.home() / ".kubi"))


def _server(args: argparse.Namespace) -> int:
    from kubi.apiserver.server import ServerConfig
    from kubi.cli import server

    config = ServerConfig(data_dir=Path(args.data_dir), bind=args.bind, port=args.port,
                          storage=args.storage or "",
                          write_kubeconfig=[Path(p) for p in args.write_kubeconfig],
                          service_cidr=args.service_cidr,
                          compact_interval=args.compact_interval,
                          advertise=args.advertise_address or "")
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency, but stay runnable
        pass
    components = server.Components(
        controller_manager=not args.disable_controller_manager,
        scheduler=not args.disable_scheduler, simulated_nodes=args.simulated_nodes,
        disabled_controllers=set(filter(None, args.disable_controllers.split(","))))
    try:
        asyncio.run(server.run(config, components))
    except OSError as exc:
        print(f"kubi server: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubi", description="A Kubernetes you can pip install.")
    sub = parser.add_subparsers(dest="command", required=True)
    server = sub.add_parser("server", help="run the control plane (API server and store)")
    server.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                        help="state, certificates and kubeconfig (default: %(default)s)")
    server.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    server.add_argument("--port", type=int, default=6443, help="HTTPS port (default 6443)")
    server.add_argument("--advertise-address", help="address written into kubeconfigs")
    server.add_argument("--write-kubeconfig", action="append", default=[], metavar="PATH",
                        help="also write the admin kubeconfig here (repeatable)")
    server.add_argument("--storage", help="storage URL (default: sqlite in the data dir)")
    server.add_argument("--service-cidr", default="10.43.0.0/16")
    server.add_argument("--compact-interval", type=float, default=300.0,
                        help="seconds between automatic store compactions")
    server.add_argument("--disable-controller-manager", action="store_true",
                        help="do not run the controllers in this process")
    server.add_argument("--disable-scheduler", action="store_true",
                        help="do not run the scheduler in this process")
    server.add_argument("--disable-controllers", default="", metavar="NAMES",
                        help="comma-separated controllers not to run (e.g. garbagecollector)")
    server.add_argument("--simulated-nodes", type=int, default=0, metavar="N",
                        help="register N simulated nodes that run pods without containers")
    server.set_defaults(func=_server)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
