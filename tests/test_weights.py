"""Published weights: a local http.server plays CNNKIT_WEIGHTS_MIRROR (no test reaches the
internet); downloads are hash-checked, cached once, refused when wrong, and every failure is one
line with exit code 2. ``--pretrained`` loads a file already in $TORCH_HOME without any network."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from dataclasses import replace
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from cnnkit.core import plugins, registry
from cnnkit.core.errors import CnnkitError
from cnnkit.core.registry import WeightsSpec

PAYLOAD = b"cnnkit test weights\n" * 100
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Mirror:
    """A folder served on 127.0.0.1; ``requests`` lists the paths asked for."""

    def __init__(self, root):
        self.root, self.requests = root, []
        mirror = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                mirror.requests.append(self.path)
                super().do_GET()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    root.mkdir()
    (root / "tiny.bin").write_bytes(PAYLOAD)
    (root / "wrong.bin").write_bytes(b"not the published bytes")
    served = Mirror(root)
    monkeypatch.setenv("CNNKIT_WEIGHTS_MIRROR", served.url)
    yield served
    served.server.shutdown()
    served.server.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def entries(monkeypatch):
    """Fixture registry entries: the right file, a file whose bytes differ from the hash, a missing one."""
    plugins.load_plugins()
    specs = [WeightsSpec("tiny-test", "tiny.bin", "https://example.invalid/tiny.bin", sha256=SHA, size=len(PAYLOAD)),
             WeightsSpec("wrong-test", "wrong.bin", "https://example.invalid/wrong.bin", sha256=SHA),
             WeightsSpec("prefix-test", "wrong.bin", "https://example.invalid/wrong.bin", hash_prefix=SHA[:8]),
             WeightsSpec("gone-test", "gone.bin", "https://example.invalid/gone.bin", sha256=SHA)]
    for spec in specs:
        monkeypatch.setitem(registry.weights._items, spec.name, spec)
    return specs


@pytest.fixture
def place(cache, monkeypatch):
    """``place(name, state)``: save ``state`` in the cache under registry entry ``name``'s file name
    and make that file's SHA-256 the one the registry expects there (a stand-in for the publisher's
    bytes); a safetensors entry gets a safetensors file."""

    def put(name, state):
        plugins.load_plugins()
        entry = registry.weights.get(name)
        cache.mkdir(parents=True, exist_ok=True)
        path = cache / entry.file
        if entry.format == "safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        else:
            torch.save(state, path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        for other_name, other in registry.weights.items():
            if other.file == entry.file:
                known = {"hash_prefix": digest[:8]} if other.hash_prefix else {"sha256": digest}
                monkeypatch.setitem(registry.weights._items, other_name, replace(other, size=None, **known))
        return path

    return put


def _error(r):
    lines = r.stderr.strip().splitlines()
    assert r.code == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_download_is_checked_cached_and_not_repeated(cli, mirror, cache, entries):
    r = cli("weights", "pull", "tiny-test")
    assert r.code == 0, r.stderr
    assert (cache / "tiny.bin").read_bytes() == PAYLOAD
    assert mirror.requests == ["/tiny.bin"]
    assert not list(cache.glob("*.tmp"))  # no temporary file left behind
    r = cli("weights", "pull", "tiny-test")
    assert r.code == 0 and mirror.requests == ["/tiny.bin"]  # served from the cache
    r = cli("weights", "path", "tiny-test")
    assert r.code == 0 and r.stdout.strip() == str(cache / "tiny.bin")
    rows = {row["name"]: row for row in json.loads(cli("weights", "list", "--json").stdout)}
    assert rows["tiny-test"]["cached"] is True and rows["tiny-test"]["sha256"] == SHA
    assert rows["gone-test"]["cached"] is False
    assert {"name", "file", "url", "size", "license", "cached"} <= set(rows["resnet18"])
    assert rows["resnet18"]["hash_prefix"] == "f37072fd"
    r = cli("weights", "verify")
    assert r.code == 0 and "tiny-test: ok" in r.stdout


def test_a_wrong_file_is_refused_and_not_cached(cli, mirror, cache, entries):
    line = _error(cli("weights", "pull", "wrong-test"))
    got = hashlib.sha256(b"not the published bytes").hexdigest()
    assert "wrong.bin" in line and SHA in line and got in line and "discarded" in line
    assert not cache.exists() or list(cache.iterdir()) == []
    line = _error(cli("weights", "pull", "prefix-test"))
    assert f"expected {SHA[:8]}..." in line and got in line


def test_verify_names_a_cached_file_that_changed(cli, mirror, cache, entries):
    assert cli("weights", "pull", "tiny-test").code == 0
    (cache / "tiny.bin").write_bytes(b"bit rot")
    line = _error(cli("weights", "verify"))
    assert "tiny.bin" in line and "SHA-256 mismatch" in line


def test_offline_and_http_errors_say_where_to_put_the_file(cli, mirror, cache, entries, monkeypatch):
    line = _error(cli("weights", "pull", "gone-test"))
    assert f"{mirror.url}/gone.bin" in line and "HTTP 404" in line and str(cache / "gone.bin") in line
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("CNNKIT_WEIGHTS_MIRROR", closed)
    line = _error(cli("weights", "pull", "tiny-test"))
    assert f"cannot download {closed}/tiny.bin" in line and str(cache / "tiny.bin") in line
    assert "by hand" in line and not (cache / "tiny.bin").exists()
    assert cli("weights", "path", "tiny-test").code == 1
    assert "unknown weights" in _error(cli("weights", "pull", "nothing-like-this"))


def test_pretrained_loads_a_cached_file_without_network(cli, cache, place):
    """The published resnet18 file is already in $TORCH_HOME (here our own tensors under its name);
    the mirror is a closed port, so any download attempt would fail."""
    from cnnkit.plugins.classify.models import resnet

    torch.manual_seed(3)
    source = resnet(arch="resnet18", num_classes=1000).state_dict()
    place("resnet18", source)
    r = cli("train", "resnet18", "--pretrained", "--data", "synthetic:textures?n=16&size=32", "--img-size", "32",
            "--epochs", "1", "--batch-size", "8", "--lr", "0", "--no-track", "--out", "r18")
    assert r.code == 0, r.stderr
    assert "weights: 120/122 tensors from resnet18" in r.stdout + r.stderr  # all but the 1000-class head
    state = torch.load("r18/weights/last.pt", weights_only=True)["model_state"]
    assert torch.equal(state["conv1.weight"], source["conv1.weight"])
    assert state["fc.weight"].shape[0] != 1000


def test_weights_by_registry_name_and_backbones(cli, cache, place):
    from cnnkit.core.registry import models
    from cnnkit.core.weights import pretrained_entry

    plugins.load_plugins()
    torch.manual_seed(4)
    source = models.get("resnet18").create(num_classes=1000).state_dict()
    place("resnet18", source)
    r = cli("train", "siamese-resnet18", "--pretrained", "--data", "synthetic:glyphs?ids=8&per_id=4",
            "--img-size", "32", "--epochs", "1", "--lr", "0", "--no-track", "--out", "sia")
    assert r.code == 0, r.stderr
    assert "tensors from resnet18" in r.stdout + r.stderr
    state = torch.load("sia/weights/last.pt", weights_only=True)["model_state"]
    trunk = [k for k in state if k.endswith("conv1.weight") and "layer" not in k]
    assert len(trunk) == 1 and torch.equal(state[trunk[0]], source["conv1.weight"])
    assert pretrained_entry(models.get("siamese-resnet18"), {}).name == "resnet18"


def test_pretrained_builds_the_variant_the_weights_were_trained_for(cli):
    from cnnkit.core.registry import models
    from cnnkit.core.weights import pretrained_entry

    plugins.load_plugins()
    options = {}
    assert pretrained_entry(models.get("resnet50"), options).name == "resnet50"
    assert options == {"shortcut": "B", "stride_in_1x1": False}  # torchvision's v1.5
    options = {"batch_norm": True}
    assert pretrained_entry(models.get("vgg16"), options).name == "vgg16-bn"
    with pytest.raises(CnnkitError, match="stride-in-1x1 false"):
        pretrained_entry(models.get("resnet50"), {"stride_in_1x1": True})
    line = _error(cli("train", "resnet101", "--pretrained", "--shortcut", "A", "--no-track"))
    assert "v1.5" in line and "--shortcut B" in line
    line = _error(cli("train", "googlenet", "--pretrained", "--no-track"))
    assert "batch-normalised" in line
    line = _error(cli("train", "alexnet-lrn", "--pretrained", "--no-track"))
    assert "no published weights" in line


def test_torchvision_variants_fit_our_builders():
    """Our builders with the entry's options make exactly the published state dicts' keys and
    shapes (checked on meta tensors against torchvision's own models; DenseNet via its renames)."""
    import torchvision

    from cnnkit.core.registry import models
    from cnnkit.plugins.classify.pretrained import densenet_keys

    plugins.load_plugins()
    for name, arch in (("vgg11-bn", "vgg11_bn"), ("resnet50", "resnet50"), ("densenet121", "densenet121"),
                       ("alexnet", "alexnet")):
        entry = registry.weights.get(name)
        with torch.device("meta"):
            ours = models.get(entry.model).create(num_classes=1000, **entry.options).state_dict()
            theirs = torchvision.models.get_model(arch, weights=None).state_dict()
        if entry.convert:  # the published file has the pre-0.4 names (norm.1, conv.2) and no BN counters
            old = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v for k, v in theirs.items()}
            assert any(".norm.1." in k for k in old)
            theirs = densenet_keys(old)
        shapes = [{k: v.shape for k, v in d.items() if not k.endswith("num_batches_tracked")} for d in (ours, theirs)]
        assert shapes[0] == shapes[1], name
    with torch.device("meta"):  # and the paper's wiring differs: strides move from the 3x3 to the 1x1
        paper = models.get("resnet50").create(num_classes=1000)
    assert paper.layer2[0].conv1.stride == (2, 2) and paper.layer2[0].conv2.stride == (1, 1)


def test_stylize_without_cache_or_mirror_names_the_vgg_file(cli, cache, tmp_path):
    import numpy as np

    from cnnkit.core.data.images import write_image

    rng = np.random.default_rng(0)
    for name in ("content.png", "style.png"):
        write_image(tmp_path / name, rng.integers(0, 255, (16, 16, 3), np.uint8))
    line = _error(cli("stylize", tmp_path / "content.png", tmp_path / "style.png", "--size", "16", "--steps", "1",
                      "--no-track"))
    assert "vgg19-dcbb9e9d.pth" in line and str(cache / "vgg19-dcbb9e9d.pth") in line
    assert "--weights random" in line


def test_faster_rcnn_backbone_starts_from_its_imagenet_weights(cli, cache, place):
    """`--backbone resnet18 --pretrained` (and vgg16 alike): the trunk starts from the registry's file;
    the 4-step schedule's two trunks both do, as in the paper."""
    from cnnkit.core.registry import models

    plugins.load_plugins()
    torch.manual_seed(5)
    source = models.get("resnet18").create(num_classes=1000).state_dict()
    place("resnet18", source)
    common = ["--data", "synthetic:shapes?n=8&size=64", "--lr", "0", "--no-track", "--backbone", "resnet18",
              "--pretrained"]
    for schedule, epochs in (("joint", "1"), ("4step", "4")):  # 4-step: one epoch a step
        r = cli("train", "faster-rcnn", *common, "--schedule", schedule, "--epochs", epochs, "--out", schedule)
        assert r.code == 0, r.stderr
        state = torch.load(f"{schedule}/weights/last.pt", weights_only=True)["model_state"]
        firsts = sorted(k for k in state if k.endswith("body.conv1.weight"))
        assert firsts == (["trunk.body.conv1.weight"] if schedule == "joint"
                          else ["det_trunk.body.conv1.weight", "trunk.body.conv1.weight"])
        assert all(torch.equal(state[k], source["conv1.weight"]) for k in firsts)
    line = _error(cli("train", "faster-rcnn", "--pretrained", "--no-track"))  # the small trunk has no weights
    assert "no published weights" in line
