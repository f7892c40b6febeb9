"""The container shim's own pieces: its JSON, its log times, and that it starts without
the standard library's Python wrappers (each container pays its start-up)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kubi.kubelet.runtime import shim
from kubi.kubelet.runtime.logs import format_time_ns
from kubi.kubelet.runtime.oci import SHIM, SHIM_BOOT


def test_json_round_trip_and_bad_documents() -> None:
    data: dict[str, shim.JSONValue] = {
        "runtime": "/usr/bin/crun", "odd": 'a"b\\c\nd\u00e9\U0001F600', "tty": True,
        "stdin": False, "log_path": None, "pid": 12345678901234}
    for text in (json.dumps(data), json.dumps(data, indent=1),
                 json.dumps(data, ensure_ascii=False)):
        assert shim.parse_json(text) == data
    assert json.loads(shim.to_json(data)) == data
    for bad in ("", "{", '{"a": 1} extra', "nope", "{'a': 1}"):
        with pytest.raises(ValueError):
            shim.parse_json(bad)


def test_log_time_matches_the_log_reader() -> None:
    for time_ns in (0, 5, 1_700_000_000 * 10**9 + 5, 1_700_000_000 * 10**9 + 999_999_999):
        assert shim.log_time(time_ns).decode() == format_time_ns(time_ns)


def test_started_the_agent_s_way_it_imports_only_c_modules() -> None:
    probe = SHIM_BOOT.replace("shim.main(sys.argv[2])",
                              "print(shim.set_child_subreaper(), *sorted(sys.modules))")
    assert probe != SHIM_BOOT
    result = subprocess.run([sys.executable, "-I", "-S", "-c", probe, str(SHIM), "unused"],
                            capture_output=True, text=True, check=True)
    subreaper, *modules = result.stdout.split()
    assert subreaper == "0"
    assert "shim" in modules
    heavy = {"enum", "re", "json", "socket", "signal", "ctypes", "typing", "datetime",
             "contextlib", "collections", "functools", "kubi"}
    assert heavy.isdisjoint(modules), heavy & set(modules)
