"""One `cnnkit verify photo.jpg` end to end (a fresh process: start-up, detection, landmarks,
embedding, search) against dlib's own pipeline on the same photo, and a folder of photos.

    python bench/verify_speed.py [--photo ../shared/data/faces/probe/obama3.jpg] [--repeat 3]

dlib's pipeline (a fresh process too): dlib.load_rgb_image, cnn_face_detection_model_v1
(mmod_human_face_detector, upsample 1), shape_predictor (5 points), face_recognition_model_v1
(compute_face_descriptor), nearest of the enrolled descriptors. Both galleries hold the photos of
faces/known. Then the stages of ours, timed in one process. Prints `uptime` (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "data" / "faces"
DLIB = """
import sys, time, numpy as np, dlib
from cnnkit.plugins.siamese.face_resnet import model_file
detector = dlib.cnn_face_detection_model_v1(str(model_file("mmod_human_face_detector.dat")))
predictor = dlib.shape_predictor(str(model_file("shape_predictor_5_face_landmarks.dat")))
recognizer = dlib.face_recognition_model_v1(str(model_file("dlib_face_recognition_resnet_model_v1.dat")))
known = np.load(sys.argv[1])
for photo in sys.argv[2:]:
    img = dlib.load_rgb_image(photo)
    dets = sorted(detector(img, 1), key=lambda d: d.rect.area(), reverse=True)
    if dets:
        d = np.array(recognizer.compute_face_descriptor(img, predictor(img, dets[0].rect)))
        print(photo, float(np.linalg.norm(known - d, axis=1).min()))
"""
STAGES = """
import sys, time
t0 = time.perf_counter()
from cnnkit.commands import main  # noqa: F401  (the CLI's own imports)
from cnnkit.core.base.registry import models  # noqa: F401
from cnnkit.core.base.plugins import load_plugins
load_plugins()
t1 = time.perf_counter()
from cnnkit.core.data.images import read_image
from cnnkit.core.metrics.distances import Scorer
from cnnkit.plugins.siamese.faces import detect_faces
from cnnkit.plugins.siamese.align import extract_chip
from cnnkit.plugins.siamese.gallery import Gallery
from cnnkit.plugins.siamese.pipeline import Embedder
import numpy as np
t2 = time.perf_counter()
embedder = Embedder("face-resnet", "cpu")
t3 = time.perf_counter()
image = read_image(sys.argv[2])
t4 = time.perf_counter()
faces = detect_faces(image)
t5 = time.perf_counter()
chip = extract_chip(image, np.asarray(faces[0].landmarks))
vector = embedder.embed([chip])[0]
t6 = time.perf_counter()
with Gallery(sys.argv[1], create=False, readonly=True) as g:
    g.nearest(vector, Scorer("l2"))
t7 = time.perf_counter()
print({"cli+plugins": t1 - t0, "torch+pipeline imports": t2 - t1, "model load": t3 - t2, "read": t4 - t3,
       "detect+landmarks": t5 - t4, "chip+embed": t6 - t5, "search": t7 - t6})
"""


def wall(cmd: list[str], repeat: int) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(repeat):
        start = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        times.append(time.perf_counter() - start)
        if r.returncode not in (0, 1):
            raise SystemExit(r.stderr)
        out = r.stdout
    return float(np.median(times)), out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--photo", default=str(FACES / "probe" / "obama3.jpg"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dlib-folder", action="store_true", help="also dlib over the folder (minutes on 2 cores)")
    p.add_argument("--stages-only", action="store_true", help="only the stages of one cnnkit verify")
    args = p.parse_args()
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        gallery = str(Path(tmp) / "g.db")
        for person in sorted((FACES / "known").iterdir()):
            subprocess.run([py, "-m", "cnnkit", "enroll", person.name, str(person), "--gallery", gallery],
                           check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        from cnnkit.plugins.siamese.gallery import Gallery
        with Gallery(gallery, create=False, readonly=True) as g:
            np.save(Path(tmp) / "known.npy", g.embeddings()[1])
        known = str(Path(tmp) / "known.npy")
        probes = sorted(str(f) for f in (FACES / "probe").iterdir())
        if args.stages_only:
            print("cnnkit stages (s):", wall([py, "-c", STAGES, gallery, args.photo], 1)[1].strip())
            return
        ours, out = wall([py, "-m", "cnnkit", "verify", args.photo, "--gallery", gallery, "--json"], args.repeat)
        theirs, dlib_out = wall([py, "-c", DLIB, known, args.photo], args.repeat)
        print(json.dumps({"photo": Path(args.photo).name, "cnnkit_verify_s": round(ours, 2), "dlib_s": round(theirs, 2),
                          "cnnkit_distance": json.loads(out)[0]["distance"],
                          "dlib_distance": float(dlib_out.split()[-1]) if dlib_out else None}))
        ours, _ = wall([py, "-m", "cnnkit", "verify", *probes, "--gallery", gallery, "--json"], 1)
        theirs, _ = wall([py, "-c", DLIB, known, *probes], 1) if args.dlib_folder else (float("nan"), "")
        print(json.dumps({"folder": f"{len(probes)} photos", "cnnkit_verify_s": round(ours, 2),
                          "dlib_s": round(theirs, 2)}))
        _, stages = wall([py, "-c", STAGES, gallery, args.photo], 1)
        print("cnnkit stages (s):", stages.strip())
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
