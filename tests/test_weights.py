"""Published weights: a local http.server plays CNNKIT_WEIGHTS_MIRROR (no test reaches the
internet); downloads are hash-checked, cached once, refused when wrong, and every failure is one
line with exit code 2. ``--pretrained`` loads a file already in $TORCH_HOME without any network."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import published_files
import pytest
import torch
from conftest import one_clear_line

from cnnkit.core.base import plugins, registry
from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.base.registry import WeightsSpec

PAYLOAD = b"cnnkit test weights\n" * 100
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Mirror:
    """A folder served on 127.0.0.1; ``requests`` lists the paths asked for. A file named in ``cut``
    is announced whole and cut after 100 bytes; one in ``slow`` trickles out for a minute."""

    def __init__(self, root):
        self.root, self.requests, self.cut, self.slow = root, [], set(), set()
        mirror = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                mirror.requests.append(self.path)
                name = self.path.lstrip("/")
                if name in mirror.cut or name in mirror.slow:
                    data = (root / name).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if name in mirror.cut:
                        self.wfile.write(data[:100])
                        return
                    for i in range(0, len(data), 1000):
                        self.wfile.write(data[i:i + 1000])
                        self.wfile.flush()
                        time.sleep(0.5)
                    return
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
    """``place(name, state)``: ``state`` in the cache as entry ``name``'s file, its hash the registry's."""
    return partial(published_files.place, monkeypatch, cache)


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
    from cnnkit.core.base.registry import models
    from cnnkit.core.weights.fetch import pretrained_entry

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
    from cnnkit.core.base.registry import models
    from cnnkit.core.weights.fetch import pretrained_entry

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

    from cnnkit.core.base.registry import models
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
    from cnnkit.core.base.registry import models

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


# ------------------------------------------------------------------ the defects, each a test
def _safetensors_bytes(n=4):
    from safetensors.torch import save

    return save({"w": torch.arange(n, dtype=torch.float32)})


def test_a_file_lacking_tensors_is_refused_by_name_unless_allow_partial(cli, tmp_path):
    """Defect 1's rule: what stays unloaded is named; only a head re-initialised on purpose is quiet."""
    from cnnkit.core.base.registry import models

    plugins.load_plugins()
    state = models.get("resnet18").create(num_classes=1000).state_dict()
    del state["layer4.1.conv2.weight"]
    torch.save(state, tmp_path / "partial.pth")
    common = ["train", "resnet18", "--weights", tmp_path / "partial.pth", "--data", "synthetic:textures?n=8&size=32",
              "--img-size", "32", "--epochs", "1", "--batch-size", "8", "--lr", "0", "--no-track"]
    line = one_clear_line(cli(*common, "--out", "a"), "layer4.1.conv2.weight", "--allow-partial")
    assert "1 tensor(s) are not in the file" in line
    r = cli(*common, "--allow-partial", "--out", "b")
    assert r.code == 0, r.stderr
    assert "layer4.1.conv2.weight not in the file" in r.stderr and "fc.weight, fc.bias initialised" in r.stderr


def test_faster_rcnn_old_key_names_are_upgraded_not_left_random(cache, place):
    """Defect 1: torchvision's pre-0.13 FPN/RPN names load through the modules' own version upgrade."""
    import torchvision
    from published_files import rcnn_layout

    from cnnkit.core.weights.checkpoint import load_weights_into

    plugins.load_plugins()
    torch.manual_seed(0)
    with torch.no_grad():
        theirs = torchvision.models.get_model("fasterrcnn_mobilenet_v3_large_fpn", weights=None,
                                              weights_backbone=None, num_classes=91)
        ours = registry.models.get("fasterrcnn_mobilenet_v3_large_fpn").create(num_classes=90)
    loaded = load_weights_into(ours, rcnn_layout(theirs.state_dict()), "frcnn", "file", strict=False)
    ours_state = ours.state_dict()
    for k in ("backbone.fpn.inner_blocks.0.0.weight", "backbone.fpn.layer_blocks.1.0.bias", "rpn.head.conv.0.0.weight"):
        assert torch.equal(ours_state[k], theirs.state_dict()[k]), k
    assert (loaded.count, loaded.total, loaded.heads, loaded.missing) == (330, 330, [], [])


def test_pretrained_trunks_and_published_weights_carry_their_input_transform(cli, cache, place):
    """Defect 2: the input transform belongs to the weights and is kept in the checkpoint."""
    imagenet_mean, imagenet_std, half = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], (0.5, 0.5, 0.5)
    plugins.load_plugins()
    torch.manual_seed(5)
    place("resnet18", registry.models.get("resnet18").create(num_classes=1000).state_dict())
    r = cli("train", "faster-rcnn", "--data", "synthetic:shapes?n=4&size=64", "--lr", "0", "--no-track",
            "--backbone", "resnet18", "--pretrained", "--epochs", "1", "--out", "det")
    assert r.code == 0, r.stderr
    config = torch.load("det/weights/last.pt", weights_only=True)["config"]
    from cnnkit.core.load.source import load_for_eval

    task, _, _ = load_for_eval("det/weights/last.pt")
    x = task.dataset("val")[0][0]
    assert float(x.min()) < -0.5  # ImageNet-normalised, not pixels in [0, 1]
    assert config["mean"] == imagenet_mean and config["std"] == imagenet_std
    assert registry.weights.get("inception-v3").mean == half  # torchvision's transform_input
    assert registry.weights.get("inception-v4").std == half  # timm's tf_in1k: mean = std = 0.5
    assert registry.weights.get("inception-resnet-v2").mean == half
    assert registry.weights.get("fasterrcnn_resnet50_fpn").std == (1.0, 1.0, 1.0)  # it normalises inside


def test_a_state_dict_by_path_that_may_need_other_wiring_is_refused_naming_the_option(cli, tmp_path):
    """Defect 3: a resnet50 state dict that is not torchvision's file (by name or hash) is refused
    with the option to type; typed, it loads."""
    from conftest import one_clear_line as line_of

    plugins.load_plugins()
    torch.save(registry.models.get("resnet50").create(num_classes=1000).state_dict(), tmp_path / "mine.pth")
    photo = tmp_path / "a.png"
    import numpy as np

    from cnnkit.core.data.images import write_image

    write_image(photo, np.full((40, 40, 3), 128, np.uint8))
    common = ["train", "resnet50", "--weights", tmp_path / "mine.pth", "--data", "synthetic:textures?n=4&size=32",
              "--img-size", "32", "--epochs", "1", "--batch-size", "4", "--lr", "0", "--no-track"]
    line_of(cli(*common, "--out", "a"), "--stride-in-1x1 false")
    line = line_of(cli("classify", "resnet50", "--weights", tmp_path / "mine.pth", photo), "--stride-in-1x1 false")
    assert "mine.pth" in line
    r = cli(*common, "--stride-in-1x1", "true", "--out", "b")
    assert r.code == 0, r.stderr


def test_hashless_downloads_must_parse_before_they_are_kept(cli, mirror, cache):
    """Defect 4: Hugging Face gives no hash; an HTML page, random bytes or a truncated file is refused
    and nothing is cached."""
    plugins.load_plugins()
    file = registry.weights.get("inception-v4").file
    good = _safetensors_bytes()
    for body, needle in ((b"<!DOCTYPE html><html><body>Rate limited</body></html>\n" * 2, "header"),
                         (bytes(range(256)) * 4, "header"), (good[:-3], "truncated")):
        (mirror.root / file).write_bytes(body)
        line = one_clear_line(cli("weights", "pull", "inception-v4"), file, "discarded")
        assert needle in line, line
        assert not cache.exists() or not any(cache.iterdir())
    (mirror.root / file).write_bytes(good)
    r = cli("weights", "pull", "inception-v4")
    assert r.code == 0 and (cache / file).read_bytes() == good, r.stderr


def test_a_darknet_file_of_zeros_is_refused(cli, mirror, cache):
    plugins.load_plugins()
    entry = registry.weights.get("yolov2-tiny.weights")
    (mirror.root / entry.file).write_bytes(bytes(entry.size))
    one_clear_line(cli("weights", "pull", entry.name), "version header 0.0")
    assert not cache.exists() or not any(cache.iterdir())


def test_a_cached_file_is_checked_before_each_use_and_hashed_once(cli, cache, place, monkeypatch):
    """Defect 4: a file put by hand under a registry name is not trusted as is; a good one is hashed
    once (remembered by size and mtime), a changed one again."""
    from cnnkit.core.weights import fetch as weights

    plugins.load_plugins()
    cache.mkdir(parents=True)
    torch.save(registry.models.get("resnet18").create(num_classes=1000).state_dict(), cache / "resnet18-f37072fd.pth")
    line = one_clear_line(cli("train", "resnet18", "--pretrained", "--no-track"), "does not match the registry",
                          "weights pull resnet18")
    assert "f37072fd" in line
    path = place("resnet18", registry.models.get("resnet18").create(num_classes=1000).state_dict())
    calls = []
    real = weights.sha256_of
    monkeypatch.setattr(weights, "sha256_of", lambda p: calls.append(p) or real(p))
    entry = registry.weights.get("resnet18")
    assert weights.fetch(entry) == weights.fetch(entry) == path
    assert len(calls) == 1
    with open(path, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(CnnkitError, match="SHA-256 mismatch"):
        weights.fetch(entry)
    assert len(calls) == 2
    (cache / "inception_v4.tf_in1k.safetensors").write_bytes(b"\0" * 64)  # no hash to check: parsed at load
    r = cli("weights", "verify")
    assert r.code == 2 and "inception-v4: FAILED" in r.stdout


def test_a_mirror_that_cuts_the_stream_is_one_line(cli, mirror, cache, entries):
    mirror.cut.add("tiny.bin")
    line = one_clear_line(cli("weights", "pull", "tiny-test"), "closed before the end", "by hand")
    assert "IncompleteRead" not in line
    assert not cache.exists() or not any(cache.iterdir())


def test_sigterm_during_pull_leaves_no_partial_file(mirror, cache, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    plugins.load_plugins()
    file = registry.weights.get("inception-v4").file
    (mirror.root / file).write_bytes(_safetensors_bytes(20000))
    mirror.slow.add(file)
    env = {**os.environ, "TORCH_HOME": str(cache.parent.parent), "CNNKIT_WEIGHTS_MIRROR": mirror.url}
    proc = subprocess.Popen([sys.executable, "-m", "cnnkit", "weights", "pull", "inception-v4"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(cache.glob("*.tmp")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert list(cache.glob("*.tmp")), "the download never started"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert not any(cache.iterdir())


def test_sizes_are_exact_or_absent_and_messages_name_typeable_options():
    from cnnkit.core.base.registry import models
    from cnnkit.core.weights.fetch import pretrained_entry

    plugins.load_plugins()
    for name, entry in registry.weights.items():
        assert entry.size is None or entry.size % 1000, name  # never a MB figure times 1e6
    assert registry.weights.get("vgg16").size is None  # torchvision states MiB only
    with pytest.raises(CnnkitError) as exc:
        pretrained_entry(models.get("inception-resnet-v2"), {"residual_scale": 0.2})
    assert "no --residual-scale" in str(exc.value) and "None" not in str(exc.value)


@pytest.mark.slow
def test_a_backbone_file_says_what_came_from_it(cli, cache):
    """darknet53.conv.74 fills YOLOv3's first 52 convolutions: the line says so, not "438/438"."""
    from cnnkit.plugins.yolo.weights import layer_tensors, save_darknet_weights, weight_layers

    plugins.load_plugins()
    model = registry.models.get("yolov3").create(num_classes=80)
    cache.mkdir(parents=True)
    full = save_darknet_weights(model, cache / "full.weights")
    n = sum(t.numel() for layer, bn in list(weight_layers(model))[:52] for t in layer_tensors(layer, bn))
    (cache / "darknet53.conv.74").write_bytes(full.read_bytes()[:20 + 4 * n])
    full.unlink()
    r = cli("train", "yolov3", "--weights", "darknet53.conv.74", "--data", "synthetic:shapes?n=2&size=64",
            "--img-size", "64", "--epochs", "1", "--batch-size", "2", "--lr", "0", "--no-track")
    assert r.code == 0, r.stderr
    assert "weights: backbone 52 convs from darknet53.conv.74; heads initialised" in r.stderr


def test_fine_tuning_from_a_checkpoint_keeps_its_input_transform(cli, tmp_path):
    (tmp_path / "half.yaml").write_text("mean: [0.5, 0.5, 0.5]\nstd: [0.5, 0.5, 0.5]\n")
    common = ["--data", "synthetic:textures?n=8&size=32", "--img-size", "32", "--epochs", "1", "--batch-size", "8",
              "--lr", "0", "--no-track"]
    r = cli("train", "resnet18", *common, "--config", tmp_path / "half.yaml", "--out", "a")
    assert r.code == 0, r.stderr
    r = cli("train", "resnet18", *common, "--weights", "a/weights/last.pt", "--out", "b")
    assert r.code == 0, r.stderr
    config = torch.load("b/weights/last.pt", weights_only=True)["config"]
    assert config["mean"] == config["std"] == [0.5, 0.5, 0.5]


def test_a_published_model_run_with_a_head_for_other_classes_is_refused(cli, tmp_path):
    """Running (not fine-tuning) never re-initialises a head: a 10-class file for resnet18 is one line."""
    import numpy as np

    from cnnkit.core.data.images import write_image

    plugins.load_plugins()
    torch.save(registry.models.get("resnet18").create(num_classes=10).state_dict(), tmp_path / "ten.pth")
    write_image(tmp_path / "a.png", np.full((40, 40, 3), 128, np.uint8))
    one_clear_line(cli("classify", "resnet18", "--weights", tmp_path / "ten.pth", tmp_path / "a.png"),
                   "fc.weight does not fit resnet18 built for 1000 classes")


def test_a_download_killed_earlier_leaves_nothing_behind(cli, mirror, cache, entries):
    """A temporary file left by a SIGKILLed pull (old, untouched) is removed by the next pull."""
    import os

    cache.mkdir(parents=True)
    stale = cache / ".tiny.bin.abc123.tmp"
    stale.write_bytes(b"half a file")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    r = cli("weights", "pull", "tiny-test")
    assert r.code == 0, r.stderr
    assert sorted(p.name for p in cache.iterdir() if p.name.endswith(".tmp")) == []
