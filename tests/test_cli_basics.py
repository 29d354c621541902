import json
import subprocess
import sys

from tests.conftest import ROOT


def test_version(cli):
    r = cli("--version")
    assert r.code == 0 and r.stdout.startswith("cnnkit ")


def test_plugins_json_lists_builtin_classify(cli):
    r = cli("plugins", "--json")
    assert r.code == 0
    infos = {p["name"]: p for p in json.loads(r.stdout)}
    assert infos["classify"]["origin"] == "builtin"
    assert "register_models" in infos["classify"]["hooks"]


def test_models_json_filters_by_task(cli):
    r = cli("models", "--task", "classify", "--count", "--json")
    assert r.code == 0
    rows = {m["name"]: m for m in json.loads(r.stdout)}
    assert rows["resnet18"]["params"] == 11_689_512
    assert all(m["task"] == "classify" for m in rows.values())


def test_unknown_model_suggests_close_names(cli):
    r = cli("train", "resnet19", "--no-track")
    assert r.code == 2
    assert "resnet18" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_help_and_plugins_do_not_import_torch():
    probe = ("import sys, runpy\n"
             "sys.argv=['cnnkit','--help']\n"
             "from cnnkit import commands\n"
             "try:\n    commands.main(['plugins'])\nexcept SystemExit: pass\n"
             "assert 'torch' not in sys.modules, 'torch was imported'\n"
             "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
