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
    root.mkdir(parents=True, exist_ok=True)
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
    assert set(infos["hello"]["hooks"]) == {"register_models", "register_commands"}  # as pluggy reports them
    assert set(infos["core"]["hooks"]) == {"register_tasks", "register_losses", "register_datasets"}
    assert infos["classify"]["origin"] == "builtin"


def test_third_party_command_and_model(hello_site):
    r = _run(["hello", "--name", "ada"], hello_site)
    assert r.returncode == 0 and "hello, ada, from cnnkit-hello" in r.stdout
    r = _run(["models", "--task", "classify", "--count", "--json"], hello_site)
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
    assert [p["name"] for p in json.loads(r.stdout)] == ["core", "classify"]  # core's registrations always load


def test_plugin_failing_in_a_hook_is_isolated(tmp_path):
    source = ("from cnnkit.api import hookimpl\n"
              "@hookimpl\n"
              "def register_models(register):\n"
              "    raise RuntimeError('bad spec')\n")
    site = _fake_dist(tmp_path, "bad_hook", source)
    r = _run(["models", "--task", "classify", "--json"], site)
    assert r.returncode == 0
    assert "bad_hook" in r.stderr and "bad spec" in r.stderr
    assert any(m["name"] == "resnet18" for m in json.loads(r.stdout))


def _readme_plugin(root: Path) -> Path:
    """The third-party plugin shown in the README's "Plugins" section, written out as a package."""
    import re

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Plugins"):readme.index("## Development")]
    for block in re.findall(r"```(?:python|toml)\n(.*?)```", section, re.S):
        first, _, body = block.partition("\n")
        path = first.lstrip("# ").split()[0].rstrip(":")
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(block if path.endswith(".py") else body)
    pyproject = root / "pyproject.toml"
    pyproject.write_text('[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
                         '[project]\nname = "my-plugin"\nversion = "0.1"\n' + pyproject.read_text()
                         + '[tool.setuptools]\npackages = ["my_plugin"]\n')
    return root


def test_the_readme_plugin_installs_and_trains(tmp_path):
    """DESIGN.md's promise: ModelSpec(name, task, build) and a LossSpec are all a plugin needs."""
    source = _readme_plugin(tmp_path / "src")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(source)], check=True, capture_output=True, timeout=300)
    r = _run(["plugins", "--json"], site)
    infos = {p["name"]: p for p in json.loads(r.stdout)}
    assert infos["my_plugin"]["origin"] == "my-plugin"
    assert infos["my_plugin"]["hooks"] == ["register_losses", "register_models"]
    data = ["--data", "synthetic:textures?n=32&size=32", "--img-size", "32", "--epochs", "1", "--no-track"]
    r = _run(["train", "probe-net", *data, "--out", str(tmp_path / "probe")], site,
             CNNKIT_PLUGINS="my_plugin")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "probe" / "weights" / "best.pt").is_file() and "metrics: val_top1" in r.stdout
    r = _run(["train", "resnet18", "--loss", "squared_hinge", *data, "--out", str(tmp_path / "hinge")], site,
             CNNKIT_PLUGINS="classify,my_plugin")
    assert r.returncode == 0, r.stderr
    import torch

    ck = torch.load(tmp_path / "hinge" / "weights" / "last.pt", weights_only=True)
    assert ck["config"]["options"]["loss"] == "squared_hinge" and ck["history"][0]["train_loss"] > 0
    wrong = _run(["train", "resnet18", "--loss", "yolov3", "--epochs", "1", "--no-track"])
    assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1
    assert "--loss yolov3 is made for detect models" in wrong.stderr and "cross_entropy" in wrong.stderr


PROBE = """
from cnnkit.api import ModelSpec, hookimpl

@hookimpl
def register_models(register):
    register(ModelSpec(name="probe-net", task="segment", build="x:y"))
"""


def test_unknown_task_names_the_known_ones(tmp_path):
    site = _fake_dist(tmp_path / "site", "probe_plugin", PROBE)
    r = _run(["train", "probe-net", "--epochs", "1", "--no-track"], site, CNNKIT_PLUGINS="probe_plugin")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "unknown task 'segment'" in r.stderr and "classify, detect, embed, stylize" in r.stderr


def test_hook_order_follows_pluggy_tryfirst(tmp_path):
    """Hooks run through pluggy: a tryfirst implementation registers before the others (between
    third-party plugins: built-in names always win, see tests/test_reliability.py)."""
    def source(mark: str) -> str:
        return ("from cnnkit.api import ModelSpec, hookimpl\n"
                f"@hookimpl{mark}\n"
                "def register_models(register):\n"
                "    register(ModelSpec(name='mynet', task='classify', build='x:y', description='mine'))\n")
    site = _fake_dist(tmp_path / "site", "zz_first", source("(tryfirst=True)"))
    _fake_dist(site, "aa_later", source(""))
    r = _run(["models", "--task", "classify", "--json"], site)
    rows = {m["name"]: m for m in json.loads(r.stdout)}
    assert rows["mynet"]["plugin"] == "zz_first"  # it won the name; the other's copy warned
    assert "plugin 'aa_later' registers model 'mynet', which plugin 'zz_first' provides; aa_later's is refused" \
        in r.stderr


def test_invalid_hook_signature_is_refused_by_pluggy(tmp_path):
    source = ("from cnnkit.api import hookimpl\n"
              "@hookimpl\n"
              "def register_models(register, extra):\n"
              "    pass\n")
    site = _fake_dist(tmp_path / "site", "bad_sig", source)
    r = _run(["plugins", "--json"], site)
    assert r.returncode == 0
    infos = {p["name"]: p for p in json.loads(r.stdout)}
    assert "PluginValidationError" in infos["bad_sig"]["error"] and "extra" in infos["bad_sig"]["error"]
