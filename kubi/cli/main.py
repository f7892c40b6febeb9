"""The `kubi` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path

# Admission plugins that `--disable-admission-plugins` may turn off.
SWITCHABLE_ADMISSION = frozenset({"ServiceAccount"})
RUNTIME_HELP = ("OCI runtime of the node agent: auto (crun when it works on this host, "
                "else runc), runc, crun, or a path (default: %(default)s)")
DEFAULT_DATA_DIR = Path(os.environ.get("KUBI_DATA_DIR", "/var/lib/kubi" if os.geteuid() == 0
                                       else Path.home() / ".kubi"))


def _server(args: argparse.Namespace) -> int:
    from kubi.apiserver.server import ServerConfig
    from kubi.cli import server

    plugins = set(filter(None, args.disable_admission_plugins.split(",")))
    if plugins - SWITCHABLE_ADMISSION:
        unknown = ", ".join(sorted(plugins - SWITCHABLE_ADMISSION))
        print(f"kubi server: --disable-admission-plugins: unknown plugin(s) {unknown} "
              f"(these can be disabled: {', '.join(sorted(SWITCHABLE_ADMISSION))})",
              file=sys.stderr)
        return 2
    config = ServerConfig(data_dir=Path(args.data_dir), bind=args.bind, port=args.port,
                          storage=args.storage or "",
                          write_kubeconfig=[Path(p) for p in args.write_kubeconfig],
                          service_cidr=args.service_cidr,
                          compact_interval=args.compact_interval,
                          advertise=args.advertise_address or "",
                          disabled_admission=frozenset(plugins))
    if not args.disable_agent and args.container_runtime != "auto":
        problem = server.agent_problem(args.container_runtime)
        if problem:  # a runtime asked for by name must work; auto may end without a node
            print(f"kubi server: --container-runtime {args.container_runtime}: {problem}",
                  file=sys.stderr)
            return 1
    with contextlib.suppress(ImportError):
        import uvloop  # faster; its subprocesses keep fds, which runtime/oci.py copes with

        uvloop.install()
    if args.registries and not Path(args.registries).is_file():
        print(f"kubi server: --registries {args.registries}: no such file", file=sys.stderr)
        return 2
    components = server.Components(
        controller_manager=not args.disable_controller_manager,
        scheduler=not args.disable_scheduler, simulated_nodes=args.simulated_nodes,
        disabled_controllers=set(filter(None, args.disable_controllers.split(","))),
        watch_images=args.watch_images, agent=not args.disable_agent,
        node_name=args.node_name or "", agent_netns=args.agent_netns,
        container_runtime=args.container_runtime,
        registries=Path(args.registries) if args.registries else None)
    try:
        asyncio.run(server.run(config, components))
    except OSError as exc:
        print(f"kubi server: {exc}", file=sys.stderr)
        return 1
    return 0


def _agent(args: argparse.Namespace) -> int:
    from kubi.api.errors import StatusError
    from kubi.cli import agent

    token = args.token or (Path(args.token_file).read_text().strip() if args.token_file else "")
    if not token:
        print("kubi agent: --token or --token-file is required (the server writes "
              "DATA_DIR/node-token)", file=sys.stderr)
        return 2
    ca_file = Path(args.ca_file) if args.ca_file else None
    if ca_file is not None:
        try:
            agent.load_ca(ca_file)
        except ValueError as err:
            print(f"kubi agent: --ca-file {ca_file}: {err}", file=sys.stderr)
            return 2
    if args.runtime == "oci":
        problem = agent.runtime_problem(args.container_runtime)
        if problem:
            print(f"kubi agent: --container-runtime {args.container_runtime}: {problem}",
                  file=sys.stderr)
            return 1
    options = agent.AgentOptions(
        container_runtime=args.container_runtime,
        server=args.server, token=token, ca_file=ca_file, runtime=args.runtime,
        node_name=args.node_name or agent.default_node_name(), data_dir=Path(args.data_dir),
        simulated_nodes=args.simulated_nodes,
        registries=Path(args.registries) if args.registries else None,
        netns=args.agent_netns, node_ip=args.node_ip or "",
        kubelet_address=args.kubelet_address, kubelet_port=args.kubelet_port)
    try:
        agent.main(options)
    except StatusError as err:
        print(f"kubi agent: the server refused: {err.message}", file=sys.stderr)
        return 1
    except agent.JoinError as err:
        print(f"kubi agent: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"kubi agent: cannot reach {args.server}: {err}", file=sys.stderr)
        return 1
    return 0


def _images(args: argparse.Namespace) -> int:
    from kubi.kubelet.images import cli as images

    data_dir = Path(args.data_dir)
    if (data_dir / "db").is_dir():  # a server's data dir: its node agent keeps images here
        data_dir = data_dir / "agent"
    try:
        if args.images_command == "import":
            for path in args.archives:
                for name in images.import_archive(data_dir, path):
                    print(f"imported {name}")
        elif args.images_command == "ls":
            print(images.format_images(images.list_images(data_dir)), end="")
        else:
            for ref in args.refs:
                for name in images.remove_image(data_dir, ref):
                    print(f"deleted {name}")
    except (OSError, ValueError, LookupError) as err:
        print(f"kubi images {args.images_command}: {err}", file=sys.stderr)
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
    server.add_argument("--disable-admission-plugins", default="", metavar="NAMES",
                        help="comma-separated admission plugins to turn off (ServiceAccount)")
    server.add_argument("--disable-agent", action="store_true",
                        help="do not run a node agent (real containers) for this machine")
    server.add_argument("--node-name", help="this machine's node name (default: host name)")
    server.add_argument("--container-runtime", default="auto", metavar="NAME",
                        help=RUNTIME_HELP)
    server.add_argument("--agent-netns", metavar="NAME",
                        help="set up pod networking inside this network namespace "
                             "(sandboxes and tests) instead of the host's")
    server.add_argument("--watch-images", action="store_true",
                        help="restart every workload whose Always-pulled image tag moves "
                             "(without it, only workloads annotated kubi.dev/watch-images)")
    server.add_argument("--registries", metavar="FILE",
                        help="registry mirrors and credentials (k3s registries.yaml format)")
    server.add_argument("--simulated-nodes", type=int, default=0, metavar="N",
                        help="register N simulated nodes that run pods without containers")
    server.set_defaults(func=_server)

    agent = sub.add_parser("agent", help="join this machine to a cluster as a node")
    agent.add_argument("--server", required=True, help="API server URL, e.g. https://host:6443")
    agent.add_argument("--token", help="the cluster's node token")
    agent.add_argument("--token-file", help="read the node token from this file")
    agent.add_argument("--ca-file", help="the cluster CA (DATA_DIR/pki/ca.crt on the server)")
    agent.add_argument("--node-name", help="node name (default: the host name)")
    agent.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                       help="containers, images and volumes (default: %(default)s)")
    agent.add_argument("--runtime", default="oci", choices=["oci", "simulated"],
                       help="container runtime driver (default: oci, i.e. runc or crun)")
    agent.add_argument("--registries", metavar="FILE",
                       help="registry mirrors and credentials (k3s registries.yaml format)")
    agent.add_argument("--container-runtime", default="auto", metavar="NAME",
                       help=RUNTIME_HELP)
    agent.add_argument("--agent-netns", metavar="NAME",
                       help="set up pod networking inside this network namespace")
    agent.add_argument("--node-ip", metavar="IP",
                       help="the node's InternalIP (default: the first global IPv4 address)")
    agent.add_argument("--kubelet-address", default="0.0.0.0", metavar="ADDR",
                       help="where the agent serves logs/exec/port-forward for the API server "
                            "(default: %(default)s; a specific address is also advertised)")
    agent.add_argument("--kubelet-port", type=int, default=10250, metavar="PORT",
                       help="the agent's HTTPS port (default: %(default)s; 0: any free port)")
    agent.add_argument("--simulated-nodes", type=int, default=1, metavar="N",
                       help="with --runtime simulated: run N nodes named NODE-NAME-0…")
    agent.set_defaults(func=_agent)

    images = sub.add_parser("images", help="the node's image store: import, list, remove")
    images.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                        help="the node's data dir, or the server's whose node it is "
                             "(default: %(default)s)")
    image_sub = images.add_subparsers(dest="images_command", required=True)
    image_import = image_sub.add_parser("import", help="import docker save / OCI archives")
    image_import.add_argument("archives", nargs="+", metavar="FILE")
    image_sub.add_parser("ls", help="list images")
    image_rm = image_sub.add_parser("rm", help="remove images by name or id")
    image_rm.add_argument("refs", nargs="+", metavar="IMAGE")
    images.set_defaults(func=_images)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
