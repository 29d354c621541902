"""Plugin discovery through real entry points (installed distributions on sys.path)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _run(args, extra_path=None, **env):
    environ = {**os.environ, **env}
    if extra_path:
        environ["PYTHONPATH"] = os.pathsep.join([str(extra_path), environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "cnnkit", *args], capture_output=True, text=True,
                          env=environ, timeout=120)


def _fake_dist(root: Path, name: str, module_source: str) -> Path:
    """A minimal installed distribution with a ``cnnkit`` entry point, as pip would leave it."""
    (root / f"{name}.py").write_text(module_source)
    info = root / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[cnnkit]\n{name} = {name}\n")
    return root


@pytest.fixture(scope="module")
def hello_site(tmp_path_factory):
    """examples/cnnkit-hello installed with pip into a folder of its own."""
    target = tmp_path_factory.mktemp("hello-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT / "examples" / "cnnkit-hello")], check=True,
                   capture_output=True, timeout=300)
    return target


def test_third_party_plugin_is_found_through_its_entry_point(hello_site):
    r = _run(["plugins", "--json"], hello_site)
    assert r.returncode == 0, r.stderr
    infos = {p["name"]: p for p in json.loads(r.stdout)}
    assert infos["hello"]["origin"] == "cnnkit-hello"
    assert set(infos["hello"]["hooks"]) == {"register_models", "register_commands"}
    assert infos["classify"]["origin"] == "builtin"


def test_third_party_command_and_model(hello_site):
    r = _run(["hello", "--name", "ada"], hello_site)
    assert r.returncode == 0 and "hello, ada, from cnnkit-hello" in r.stdout
    r = _run(["models", "--task", "classify", "--json"], hello_site)
    rows = {m["name"]: m for m in json.loads(r.stdout)}
    assert rows["hello-lenet"]["plugin"] == "hello"
    assert rows["hello-lenet"]["params"] == 62_006  # LeNet-5 with 3 input channels and 10 classes


def test_broken_plugin_warns_and_the_cli_goes_on(tmp_path):
    site = _fake_dist(tmp_path, "broken_plugin", "raise ImportError('needs libfoo')\n")
    r = _run(["plugins", "--json"], site)
    assert r.returncode == 0
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "broken_plugin" in warnings[0] and "libfoo" in warnings[0]
    names = {p["name"]: p for p in json.loads(r.stdout)}
    assert names["broken_plugin"]["error"] and names["classify"]["error"] == ""


def test_strict_plugins_makes_a_broken_plugin_fatal(tmp_path):
    site = _fake_dist(tmp_path, "broken_plugin", "raise ImportError('needs libfoo')\n")
    r = _run(["plugins"], site, CNNKIT_STRICT_PLUGINS="1")
    assert r.returncode == 2
    assert "broken_plugin" in r.stderr and "Traceback" not in r.stderr


def test_cnnkit_plugins_env_restricts_loading(tmp_path):
    site = _fake_dist(tmp_path, "broken_plugin", "raise ImportError('needs libfoo')\n")
    r = _run(["plugins", "--json"], site, CNNKIT_PLUGINS="classify")
    assert r.returncode == 0 and r.stderr == ""
    assert [p["name"] for p in json.loads(r.stdout)] == ["classify"]


def test_plugin_failing_in_a_hook_is_isolated(tmp_path):
    source = ("from cnnkit.core.hookspecs import hookimpl\n"
              "@hookimpl\n"
              "def register_models(register):\n"
              "    raise RuntimeError('bad spec')\n")
    site = _fake_dist(tmp_path, "bad_hook", source)
    r = _run(["models", "--task", "classify", "--json"], site)
    assert r.returncode == 0
    assert "bad_hook" in r.stderr and "bad spec" in r.stderr
    assert any(m["name"] == "resnet18" for m in json.loads(r.stdout))
