import pytest

from kubi.kubelet.images.reference import InvalidReferenceError, is_image_id, parse_reference

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(("text", "normalised", "familiar"), [
    ("nginx", "docker.io/library/nginx:latest", "nginx:latest"),
    ("nginx:1.25", "docker.io/library/nginx:1.25", "nginx:1.25"),
    ("gihyodocker/echo:latest", "docker.io/gihyodocker/echo:latest", "gihyodocker/echo:latest"),
    ("gihyodocker/echo", "docker.io/gihyodocker/echo:latest", "gihyodocker/echo:latest"),
    ("docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
    ("localhost:5000/team/app:v1", "localhost:5000/team/app:v1", "localhost:5000/team/app:v1"),
    ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest", "127.0.0.1:5000/app:latest"),
    ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
    (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}", f"busybox@{DIGEST}"),
    (f"busybox:1.36@{DIGEST}", f"docker.io/library/busybox:1.36@{DIGEST}",
     f"busybox:1.36@{DIGEST}"),
    ("Foo/bar", "Foo/bar:latest", "Foo/bar:latest"),  # upper case first part: a registry host
])
def test_normalisation(text: str, normalised: str, familiar: str) -> None:
    ref = parse_reference(text)
    assert str(ref) == normalised
    assert ref.familiar() == familiar


def test_parts_and_repo_digest() -> None:
    ref = parse_reference("localhost:5000/team/app:v1")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("localhost:5000", "team/app", "v1", None)
    assert ref.object == "v1"
    assert str(ref.with_digest(DIGEST)) == f"localhost:5000/team/app@{DIGEST}"
    assert parse_reference(f"busybox@{DIGEST}").object == DIGEST
    assert parse_reference("busybox", default_tag=False).tag is None


@pytest.mark.parametrize(("text", "message"), [
    ("", "repository name must have at least one component"),
    ("Nginx", "invalid reference format: repository name (library/Nginx) must be lowercase"),
    ("gihyodocker/Echo", "must be lowercase"),
    ("nginx:", "invalid reference format"),
    ("nginx::1", "invalid reference format"),
    ("-nginx", "invalid reference format"),
    ("nginx@sha256:abc", "invalid reference format"),
    ("a" * 64, "cannot specify 64-byte hexadecimal strings"),
    ("x/" * 130 + "x", "must not be more than 255 characters"),
    ("nginx:" + "t" * 129, "invalid reference format"),
])
def test_invalid(text: str, message: str) -> None:
    with pytest.raises(InvalidReferenceError, match=".*" + message.replace("(", r"\(")
                       .replace(")", r"\)")):
        parse_reference(text)


def test_image_id() -> None:
    assert is_image_id(DIGEST)
    assert not is_image_id("busybox")
    assert not is_image_id("sha256:abc")
