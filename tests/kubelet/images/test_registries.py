import base64
import json
from pathlib import Path

import pytest

from kubi.kubelet.images.credentials import credentials_for
from kubi.kubelet.images.registries import (
    AuthConfig,
    RegistryConfigError,
    load_registries,
    parse_registries,
)


def test_mirrors_then_upstream() -> None:
    config = parse_registries({
        "mirrors": {
            "docker.io": {"endpoint": ["http://127.0.0.1:5000", "https://mirror.example/v2/"]},
            "*": {"endpoint": ["http://127.0.0.1:6000"]},
        },
        "configs": {"mirror.example": {"auth": {"username": "u", "password": "p"}}},
    })
    endpoints = config.endpoints("docker.io")
    assert [e.url for e in endpoints] == [
        "http://127.0.0.1:5000", "https://mirror.example", "https://registry-1.docker.io"]
    assert [e.is_mirror for e in endpoints] == [True, True, False]
    assert endpoints[0].plain_http and not endpoints[1].plain_http
    assert endpoints[1].config.auth == AuthConfig("u", "p")
    assert endpoints[0].config.auth is None
    # "*" serves registries without their own entry.
    assert [e.url for e in config.endpoints("quay.io")] == [
        "http://127.0.0.1:6000", "https://quay.io"]


def test_disable_default_endpoint() -> None:
    data = {"mirrors": {"docker.io": {"endpoint": ["http://127.0.0.1:5000"]}}}
    config = parse_registries({**data, "disable-default-endpoint": True})
    assert [e.url for e in config.endpoints("docker.io")] == ["http://127.0.0.1:5000"]
    # A registry without mirrors still has itself.
    assert [e.url for e in config.endpoints("quay.io")] == ["https://quay.io"]
    config = parse_registries(data, disable_default_endpoint=True)
    assert [e.url for e in config.endpoints("docker.io")] == ["http://127.0.0.1:5000"]


def test_no_mirrors_and_loopback_is_plain_http() -> None:
    config = parse_registries({})
    assert [e.url for e in config.endpoints("docker.io")] == ["https://registry-1.docker.io"]
    assert [e.url for e in config.endpoints("localhost:5000")] == ["http://localhost:5000"]
    assert [e.url for e in config.endpoints("ghcr.io")] == ["https://ghcr.io"]


def test_rewrite_and_auth_forms() -> None:
    encoded = base64.b64encode(b"alice:s3cret").decode()
    config = parse_registries({
        "mirrors": {"docker.io": {"endpoint": ["http://m:5000"],
                                  "rewrite": {"^library/(.*)": "mirrored/$1"}}},
        "configs": {"m:5000": {"auth": {"auth": encoded},
                               "tls": {"insecure_skip_verify": True}},
                    "ghcr.io": {"auth": {"identitytoken": "tok"}}},
    })
    mirror = config.endpoints("docker.io")[0]
    assert mirror.repository("library/busybox") == "mirrored/busybox"
    assert mirror.repository("gihyodocker/echo") == "gihyodocker/echo"
    assert mirror.config.auth == AuthConfig("alice", "s3cret")
    assert mirror.config.tls is not None and mirror.config.tls.insecure_skip_verify
    assert config.endpoints("ghcr.io")[0].config.auth == AuthConfig(identity_token="tok")


@pytest.mark.parametrize(("data", "message"), [
    ([], "registries.yaml: expected a mapping"),
    ({"mirrors": {"docker.io": {"endpoint": "http://x"}}}, "endpoint: expected a list"),
    ({"mirrors": {"docker.io": {"endpoint": ["ftp://x"]}}}, "scheme must be http or https"),
    ({"mirrors": {"docker.io": {"endpoint": [], "rewrite": {"(": "x"}}}}, "bad pattern"),
    ({"configs": {"x": {"auth": {"auth": "not base64!"}}}}, "not base64"),
    ({"configs": {"x": {"auth": {"auth": base64.b64encode(b"nocolon").decode()}}}},
     "not base64 of user:password"),
])
def test_bad_config(data: object, message: str) -> None:
    with pytest.raises(RegistryConfigError, match=message):
        parse_registries(data)


def test_load_file(tmp_path: Path) -> None:
    assert load_registries(tmp_path / "absent.yaml").mirrors == {}
    path = tmp_path / "registries.yaml"
    path.write_text('mirrors:\n  docker.io:\n    endpoint: ["http://127.0.0.1:5000"]\n')
    assert load_registries(path).mirrors["docker.io"].endpoints == ("http://127.0.0.1:5000",)
    path.write_text("mirrors: [unclosed\n")
    with pytest.raises(RegistryConfigError):
        load_registries(path)


def _secret(auths: dict[str, dict[str, str]], legacy: bool = False) -> dict[str, object]:
    if legacy:
        data = {".dockercfg": base64.b64encode(json.dumps(auths).encode()).decode()}
    else:
        data = {".dockerconfigjson": base64.b64encode(
            json.dumps({"auths": auths}).encode()).decode()}
    return {"apiVersion": "v1", "kind": "Secret", "data": data}


def test_pull_secret_matching() -> None:
    hub = _secret({"https://index.docker.io/v1/": {"username": "hub", "password": "1"}})
    glob = _secret({"*.example.com": {"auth": base64.b64encode(b"g:2").decode()}})
    exact = _secret({"reg.example.com:443": {"username": "x", "password": "3"},
                     "reg.example.com": {"username": "e", "password": "4"}}, legacy=True)
    secrets = [hub, glob, exact]
    assert credentials_for("docker.io", secrets) == [AuthConfig("hub", "1")]
    assert credentials_for("reg.example.com", secrets) == [AuthConfig("e", "4"),
                                                           AuthConfig("g", "2")]
    assert credentials_for("a.b.example.com", secrets) == []  # a glob matches one label
    assert credentials_for("quay.io", secrets) == []
    broken = {"data": {".dockerconfigjson": "%%%"}}
    assert credentials_for("docker.io", [broken, hub]) == [AuthConfig("hub", "1")]
