"""The ServiceAccount admission plugin: pods run as an existing account and get the
`kube-api-access-*` volume, as upstream's plugin of that name gives them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from kubi.api.errors import StatusError
from kubi.apiserver.admission import TOKEN_MOUNT_PATH
from kubi.client.rest import Client
from tests.harness import api_server

Obj = dict[str, Any]
NS = "default"


def pod(name: str, **spec: Any) -> Obj:
    body: Obj = {"containers": [{"name": "c", "image": "busybox"}]}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": body}


def account(name: str, **fields: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}, **fields}


async def with_default_account(client: Client) -> None:
    await client.create("serviceaccounts", account("default"), NS)


def token_volumes(created: Obj) -> list[Obj]:
    return [v for v in created["spec"].get("volumes") or []
            if v["name"].startswith("kube-api-access-")]


def run(tmp_path: Path, body: Any) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path, service_accounts=True) as (_, client):
            await body(client)
    asyncio.run(scenario())


def test_every_container_gets_the_api_access_volume(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        await with_default_account(client)
        spec = {"initContainers": [{"name": "init", "image": "busybox"}],
                "containers": [{"name": "a", "image": "busybox"},
                               {"name": "b", "image": "busybox"}]}
        created = await client.create("pods", pod("p", **spec), NS)
        assert created["spec"]["serviceAccountName"] == "default"
        [volume] = token_volumes(created)
        assert len(volume["name"]) == len("kube-api-access-") + 5
        sources = volume["projected"]["sources"]
        assert sources[0] == {"serviceAccountToken": {"expirationSeconds": 3607,
                                                      "path": "token"}}
        assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"
        assert sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == \
            "metadata.namespace"
        assert volume["projected"]["defaultMode"] == 0o644
        every = created["spec"]["initContainers"] + created["spec"]["containers"]
        for container in every:
            assert {"name": volume["name"], "readOnly": True,
                    "mountPath": TOKEN_MOUNT_PATH} in container["volumeMounts"]
        # Read back, the pod is what the create answered.
        stored = await client.get("pods", "p", NS)
        assert token_volumes(stored) == [volume]
    run(tmp_path, body)


def test_opting_out_and_own_mounts(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        await with_default_account(client)
        await client.create("serviceaccounts",
                            account("quiet", automountServiceAccountToken=False,
                                    imagePullSecrets=[{"name": "regcred"}]), NS)
        by_pod = await client.create("pods", pod("off", automountServiceAccountToken=False),
                                     NS)
        assert token_volumes(by_pod) == []
        assert "volumeMounts" not in by_pod["spec"]["containers"][0]
        # The account opts out, the pod's own setting wins over it.
        by_account = await client.create("pods", pod("quiet", serviceAccountName="quiet"), NS)
        assert token_volumes(by_account) == []
        assert by_account["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
        overridden = await client.create(
            "pods", pod("loud", serviceAccountName="quiet", automountServiceAccountToken=True),
            NS)
        assert len(token_volumes(overridden)) == 1
        # A container that mounts something at the token path keeps its own mount.
        own = pod("own", volumes=[{"name": "mine", "emptyDir": {}}], containers=[
            {"name": "a", "image": "busybox",
             "volumeMounts": [{"name": "mine", "mountPath": TOKEN_MOUNT_PATH}]},
            {"name": "b", "image": "busybox"}])
        created = await client.create("pods", own, NS)
        first, second = created["spec"]["containers"]
        assert first["volumeMounts"] == [{"name": "mine", "mountPath": TOKEN_MOUNT_PATH}]
        assert second["volumeMounts"][0]["name"] == token_volumes(created)[0]["name"]
    run(tmp_path, body)


def test_a_missing_account_is_forbidden_and_nothing_is_created(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        with pytest.raises(StatusError) as caught:
            await client.create("pods", pod("p", serviceAccountName="robot"), NS)
        err = caught.value
        assert (err.code, err.reason) == (403, "Forbidden")
        assert err.message == ('pods "p" is forbidden: error looking up service account '
                               'default/robot: serviceaccount "robot" not found')
        # `default` is looked up a few times (the controller may be about to make it).
        with pytest.raises(StatusError) as caught:
            await client.create("pods", pod("q"), NS)
        assert caught.value.code == 403 and 'serviceaccount "default"' in caught.value.message
        assert (await client.list("pods", NS))["items"] == []
    run(tmp_path, body)


def test_a_default_account_made_while_waiting_is_found(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        async def late_account() -> None:
            await asyncio.sleep(0.3)
            await with_default_account(client)
        maker = asyncio.create_task(late_account())
        created = await client.create("pods", pod("p"), NS)
        await maker
        assert len(token_volumes(created)) == 1
    run(tmp_path, body)
