"""The book's extensions/v1beta1 Ingress through the real kubectl: accepted with upstream's
deprecation warning, stored once, readable as networking.k8s.io/v1 and as v1beta1."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.cluster import Cluster

MANIFEST = "manifests/simple-ingress-mobile-redirect-v1beta1.yml"
EXT_WARNING = ("Warning: extensions/v1beta1 Ingress is deprecated in v1.14+, unavailable in "
               "v1.22+; use networking.k8s.io/v1 Ingress")
SNIPPET_KEY = "nginx.ingress.kubernetes.io/server-snippet"


def test_book_v1beta1_ingress_lifecycle(cluster: Cluster, namespace: str,
                                        seed_dir: Path) -> None:
    manifest = seed_dir / MANIFEST
    snippet = yaml.safe_load(manifest.read_text())["metadata"]["annotations"][SNIPPET_KEY]

    applied = cluster.kubectl("apply", "-n", namespace, "-f", str(manifest))
    assert "ingress.extensions/echo created" in applied.stdout
    assert EXT_WARNING in applied.stderr

    listed = yaml.safe_load(cluster.kubectl("get", "ingress", "-n", namespace, "-o",
                                            "yaml").stdout)
    assert len(listed["items"]) == 1
    v1 = listed["items"][0]
    assert v1["apiVersion"] == "networking.k8s.io/v1"
    assert v1["metadata"]["annotations"][SNIPPET_KEY] == snippet
    assert v1["spec"]["rules"][0]["host"] == "ch05.gihyo.local"
    assert v1["spec"]["rules"][0]["http"]["paths"] == [{
        "path": "/", "pathType": "ImplementationSpecific",
        "backend": {"service": {"name": "echo", "port": {"number": 80}}}}]

    legacy_read = cluster.kubectl("get", "ingress.v1beta1.extensions", "echo", "-n", namespace,
                                  "-o", "yaml")
    assert EXT_WARNING in legacy_read.stderr
    legacy = yaml.safe_load(legacy_read.stdout)
    assert legacy["apiVersion"] == "extensions/v1beta1"
    assert legacy["metadata"]["uid"] == v1["metadata"]["uid"]
    assert legacy["spec"]["rules"][0]["http"]["paths"][0]["backend"] == {
        "serviceName": "echo", "servicePort": 80}

    table = cluster.kubectl("get", "ingress", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    assert table[1].split()[:4] == ["echo", "<none>", "ch05.gihyo.local", "80"]

    reapplied = cluster.kubectl("apply", "-n", namespace, "-f", str(manifest))
    assert "ingress.extensions/echo unchanged" in reapplied.stdout

    deleted = cluster.kubectl("delete", "-n", namespace, "-f", str(manifest))
    assert 'ingress.extensions "echo" deleted' in deleted.stdout
    gone = cluster.kubectl("get", "ingress", "echo", "-n", namespace, check=False)
    assert gone.returncode != 0
    assert 'ingresses.networking.k8s.io "echo" not found' in gone.stderr


def test_invalid_v1beta1_ingress_is_rejected_and_nothing_stored(
        cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata:\n  name: bad\nspec:\n"
        "  rules:\n  - http:\n      paths:\n      - path: /\n        backend:\n"
        "          serviceName: echo\n          servicePort: 70000\n")
    result = cluster.kubectl("apply", "-n", namespace, "-f", str(bad), check=False)
    assert result.returncode != 0
    assert "spec.rules[0].http.paths[0].backend.service.port.number" in result.stderr
    assert "must be between 1 and 65535, inclusive" in result.stderr
    listed = cluster.kubectl("get", "ingress", "-n", namespace, "-o", "name").stdout
    assert listed.strip() == ""

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(
        "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata:\n  name: strict\nspec:\n"
        "  defaultBackend:\n    serviceName: echo\n    servicePort: 80\n")
    result = cluster.kubectl("apply", "-n", namespace, "-f", str(unknown), check=False)
    assert result.returncode != 0
    assert 'unknown field "spec.defaultBackend"' in result.stderr
