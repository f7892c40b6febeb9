"""Bearer-token auth as Docker Hub does it, against docker-registry in token-auth mode.

A small token server (the realm) signs RS256 JWTs with a self-signed certificate that
the registry trusts; it grants pull/push only to alice:s3cret and nothing to anonymous.
"""

from __future__ import annotations

import base64
import datetime
import json
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from kubi.kubelet.images import ImageError, ImageStore
from kubi.kubelet.images.distribution import DistributionClient, push_image
from kubi.kubelet.images.registries import AuthConfig, parse_registries
from tests.conftest_registry import REGISTRY_BINARY, run_registry
from tests.images import BuiltImage, LayerBuilder, make_image

SERVICE = "kubi-test-registry"
ISSUER = "kubi-test-issuer"
USER, PASSWORD = "alice", "s3cret"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubi test token issuer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.requests: list[tuple[str, list[str]]] = []  # (user or "", scopes)

    def token(self, user: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes if user == USER else []:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [
            base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "."
                         + _b64url(json.dumps(claims).encode()))
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)


def _serve_tokens(issuer: TokenIssuer) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            user = ""
            header = self.headers.get("Authorization", "")
            if header.startswith("Basic "):
                name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                if (name, password) != (USER, PASSWORD):
                    self.send_response(401)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"errors":[{"code":"UNAUTHORIZED",'
                                     b'"message":"incorrect username or password"}]}')
                    return
                user = name
            scopes = query.get("scope", [])
            issuer.requests.append((user, scopes))
            body = json.dumps({"token": issuer.token(user, scopes)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[tuple[str, TokenIssuer, BuiltImage]]:
    if not shutil.which(REGISTRY_BINARY):
        pytest.skip(f"{REGISTRY_BINARY} missing (apt-get install docker-registry)")
    workdir = tmp_path_factory.mktemp("token-registry")
    issuer = TokenIssuer()
    bundle = workdir / "issuer.pem"
    bundle.write_bytes(issuer.cert.public_bytes(serialization.Encoding.PEM))
    server = _serve_tokens(issuer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        auth = {"token": {"realm": f"http://127.0.0.1:{server.server_port}/token",
                          "service": SERVICE, "issuer": ISSUER,
                          "rootcertbundle": str(bundle)}}
        with run_registry(workdir, {"auth": auth}) as (address, _storage):
            layer = LayerBuilder()
            layer.file("/secret", "private")
            image = make_image("private/app:1", [layer.tar()], {"Cmd": ["/secret"]})
            with DistributionClient() as client:
                push_image(client, f"http://{address}", "private/app", "1", image.blobs(),
                           image.manifest, "application/vnd.oci.image.manifest.v1+json",
                           auth=AuthConfig(USER, PASSWORD))
            yield address, issuer, image
    finally:
        server.shutdown()
        server.server_close()


def _dockerconfig_secret(host: str, user: str, password: str) -> dict[str, object]:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    config = {"auths": {host: {"auth": auth}}}
    return {"type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()}}


def test_anonymous_pull_is_denied(token_registry: tuple[str, TokenIssuer, BuiltImage],
                                  tmp_path: Path) -> None:
    address, issuer, _ = token_registry
    store = ImageStore(tmp_path / "d", timeout=10)
    try:
        with pytest.raises(ImageError) as err:
            store.ensure_image(f"{address}/private/app:1", "IfNotPresent")
    finally:
        store.close()
    assert err.value.reason == "ErrImagePull"
    assert ("pull access denied, repository does not exist or may require authorization"
            in err.value.message)
    assert ("", ["repository:private/app:pull"]) in issuer.requests
    assert store.list_images() == []


def test_pull_secret_gets_a_bearer_token(token_registry: tuple[str, TokenIssuer, BuiltImage],
                                         tmp_path: Path) -> None:
    address, issuer, image = token_registry
    store = ImageStore(tmp_path / "d", timeout=10)
    try:
        wrong = _dockerconfig_secret(address, USER, "wrong")
        right = _dockerconfig_secret(address, USER, PASSWORD)
        with pytest.raises(ImageError) as err:
            store.ensure_image(f"{address}/private/app:1", "IfNotPresent", [wrong])
        assert "incorrect username or password" in err.value.message
        # Each secret's credentials are tried in turn, as the kubelet does.
        result = store.ensure_image(f"{address}/private/app:1", "IfNotPresent", [wrong, right])
    finally:
        store.close()
    assert result.image_id == image.config_digest
    assert (USER, ["repository:private/app:pull"]) in issuer.requests


def test_registries_yaml_credentials(token_registry: tuple[str, TokenIssuer, BuiltImage],
                                     tmp_path: Path) -> None:
    address, _, image = token_registry
    config = parse_registries({"configs": {address: {"auth": {"username": USER,
                                                               "password": PASSWORD}}}})
    store = ImageStore(tmp_path / "d", config, timeout=10)
    try:
        result = store.ensure_image(f"{address}/private/app:1", "Always")
    finally:
        store.close()
    assert result.repo_digest == f"{address}/private/app@{image.manifest_digest}"
