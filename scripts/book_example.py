"""The book's chapter-5 walkthrough with real containers, for scripts/example.sh.

Docker Hub is out of reach here, so the book's images are built offline (tests/images.py)
and served by a local docker-registry that mirrors docker.io; the manifests then run as
printed. The node's pod network lives in a network namespace of its own, so the example
changes nothing in this machine's network. Everything is removed at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubi.kubelet.agent import AgentConfig
from tests.conftest_registry import run_registry, write_registries_yaml
from tests.images import build_images, push_images
from tests.kubelet.agent_env import AgentNode, cleanup_node, new_netns

NODE = "book-node"


def kubectl(env: dict[str, str], *args: str, check: bool = True) -> str:
    print("+ kubectl " + " ".join(args), flush=True)
    result = subprocess.run(["kubectl", *args], env=env, text=True, capture_output=True)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if check and result.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed ({result.returncode})")
    return result.stdout


def in_netns(netns: str, *command: str) -> str:
    print("+ " + " ".join(command), flush=True)
    out = subprocess.run(["ip", "netns", "exec", netns, *command], capture_output=True,
                         text=True, timeout=30).stdout
    print(out, flush=True)
    return out


def walkthrough(env: dict[str, str], manifests: Path, netns: str) -> None:
    for _ in range(300):
        if " Ready " in kubectl(env, "get", "nodes", check=False):
            break
        time.sleep(0.2)
    pod = str(manifests / "simple-pod.yml")
    kubectl(env, "apply", "-f", pod)
    kubectl(env, "wait", "--for=condition=Ready", "pod/simple-echo", "--timeout=180s")
    kubectl(env, "get", "pod", "-o", "wide")
    ip = kubectl(env, "get", "pod", "simple-echo", "-o", "jsonpath={.status.podIP}")
    print(flush=True)
    in_netns(netns, "curl", "-s", f"http://{ip}/")  # nginx -> echo over localhost
    kubectl(env, "logs", "simple-echo", "-c", "echo")
    kubectl(env, "exec", "simple-echo", "-c", "nginx", "--", "sh", "-c",
            "echo hello from $(hostname)")
    kubectl(env, "delete", "-f", pod)

    deployment = str(manifests / "simple-deployment.yml")
    kubectl(env, "apply", "-f", deployment, "--record")
    kubectl(env, "rollout", "status", "deployment", "echo", "--timeout=180s")
    kubectl(env, "get", "pod,replicaset,deployment", "--selector", "app=echo")
    # The book's image update: pods are replaced one by one with the new image.
    kubectl(env, "set", "image", "deployment/echo", "echo=gihyodocker/echo:patched")
    kubectl(env, "rollout", "status", "deployment", "echo", "--timeout=180s")
    kubectl(env, "rollout", "history", "deployment", "echo")
    kubectl(env, "rollout", "undo", "deployment", "echo")
    kubectl(env, "rollout", "status", "deployment", "echo", "--timeout=180s")
    kubectl(env, "get", "pod", "-l", "app=echo", "-o", "wide")
    kubectl(env, "delete", "-f", deployment)


def main() -> int:
    data = Path(sys.argv[1]).resolve()
    port = sys.argv[2]
    manifests = Path(sys.argv[3]).resolve()
    data.mkdir(parents=True, exist_ok=True)
    netns = new_netns("kubi-example")
    server: subprocess.Popen[bytes] | None = None
    env = dict(os.environ, KUBECONFIG=str(data / "kubeconfig.yaml"))
    try:
        with run_registry(data / "registry") as (address, _):
            print("building the book's images offline and pushing them to a local registry",
                  flush=True)
            push_images(f"http://{address}", build_images().values())
            registries = write_registries_yaml(data / "registries.yaml", address)
            with (data.parent / f"{data.name}.log").open("ab") as log:
                server = subprocess.Popen(
                    [sys.executable, "-m", "kubi.cli.main", "server", "--data-dir", str(data),
                     "--port", port, "--node-name", NODE, "--agent-netns", netns,
                     "--registries", str(registries)],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            for _ in range(300):
                if subprocess.run(["kubectl", "get", "--raw", "/readyz"], env=env,
                                  capture_output=True).returncode == 0:
                    break
                time.sleep(0.1)
            walkthrough(env, manifests, netns)
    finally:
        if server is not None:
            kubectl(env, "delete", "pods", "--all", "--force", "--grace-period=0",
                    check=False)
            server.terminate()
            server.wait(timeout=60)
        cleanup_node(AgentNode(AgentConfig(NODE, data / "agent"), netns, data / "agent",
                               f"/{netns}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
