"""Bearer tokens: the admin token and signed service-account tokens (JWT, ES256)."""

from __future__ import annotations

import base64
import hmac
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

ISSUER = "https://kubernetes.default.svc.cluster.local"
MASTERS = ("system:masters", "system:authenticated")


@dataclass(frozen=True)
class User:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


ANONYMOUS = User("system:anonymous", groups=("system:unauthenticated",))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenAuthority:
    def __init__(self, admin_token: str, key_path: Path) -> None:
        self.admin_token = admin_token
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self.key = key
        digest = hashes.Hash(hashes.SHA256())
        digest.update(key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
        self.key_id = _b64(digest.finalize()[:16])

    def issue(self, namespace: str, service_account: str, sa_uid: str,
              expiration_seconds: int, audiences: list[str],
              bound: dict[str, Any] | None = None) -> tuple[str, int]:
        now = int(time.time())
        exp = now + expiration_seconds
        claims: dict[str, Any] = {
            "aud": audiences or [ISSUER], "exp": exp, "iat": now, "nbf": now, "iss": ISSUER,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "kubernetes.io": {"namespace": namespace,
                              "serviceaccount": {"name": service_account, "uid": sa_uid},
                              **(bound or {})},
        }
        header = {"alg": "ES256", "kid": self.key_id, "typ": "JWT"}
        signing_input = f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(claims))}"
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input}.{_b64(signature)}", exp

    def authenticate(self, token: str) -> User | None:
        if hmac.compare_digest(token.encode(), self.admin_token.encode()):
            return User("system:admin", groups=MASTERS)
        claims = self._verify(token)
        if claims is None:
            return None
        info = claims.get("kubernetes.io") or {}
        namespace = info.get("namespace", "")
        sa = (info.get("serviceaccount") or {})
        return User(claims.get("sub", ""), sa.get("uid", ""),
                    ("system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                     "system:authenticated"))

    def _verify(self, token: str) -> dict[str, Any] | None:
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            signature = _unb64(parts[2])
            if len(signature) != 64:
                return None
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                       int.from_bytes(signature[32:], "big"))
            self.key.public_key().verify(der, f"{parts[0]}.{parts[1]}".encode(),
                                         ec.ECDSA(hashes.SHA256()))
            claims: dict[str, Any] = orjson.loads(_unb64(parts[1]))
        except (InvalidSignature, ValueError, orjson.JSONDecodeError):
            return None
        if int(claims.get("exp", 0)) < time.time():
            return None
        return claims
