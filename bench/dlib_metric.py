"""Does a short fine-tune of the pretrained face-resnet keep dlib's 0.6 threshold meaningful?

    .venv/bin/python bench/dlib_metric.py [--steps 40] [--lr 1e-4] [--seed 0] [--strong]

Aligned chips (our MMOD detector, 5 landmarks, dlib's chip) of the photos in ../shared/data/faces:
obama and biden fine-tune the network, alex, kit and rose are held out (never seen in training).
Each loss (dlib-metric: dlib's loss_metric, the one it trained the network with; triplet: FaceNet's,
semi-hard, margin 0.2, cnnkit's default for other embedders) fine-tunes a fresh copy of the
pretrained network for ``--steps`` P x K batches (2 people x 4 augmented chips, the embed task's
training augmentation, AdamW at ``--lr``, the face-resnet recipe's; ``--strong``: harder views
(rotation up to 30 degrees, scale 0.7-1.3, grey, blur, contrast), on which the pretrained network's
pairs violate the losses' margins, so that both losses actually train). Printed for the held-out
pairs and the training pairs: accuracy at the fixed 0.6 threshold, mean genuine and impostor
distance, and the threshold that would be best on those pairs; and each loss's mean over the steps.

Measured (2-core CPU shared, load 6-12; 13 chips: 15 held-out pairs, 21 training pairs), acc@0.6
held-out / train, best threshold held-out / train:

    pretrained                                  1.000 / 1.000   0.594 / 0.623
    default views, lr 1e-4: both losses are 0 on every batch (the pretrained network already meets
    both margins), so neither fine-tune changes a weight: the same figures as pretrained.
    --strong, lr 1e-5   dlib-metric (loss 0.012)  1.000 / 1.000   0.537 / 0.740  train impostors 1.20
                        triplet     (loss 0.412)  1.000 / 1.000   0.529 / 0.962  train impostors 1.62
    --strong, lr 1e-4   dlib-metric (loss 0.099)  0.200 / 1.000   -     / 0.567
                        triplet     (loss 2.850)  0.200 / 0.810   -     / 0.374
    (lr 1e-4 on two people collapses the held-out faces for both losses: every pair under 0.3.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "data" / "faces"
SOURCES = {"obama": ["known/obama/1.jpg", "known/obama/2.jpg", "probe/obama3.jpg", "probe/obama_small.jpg",
                     "probe/obama2_exif_rotated.jpg"],
           "biden": ["known/biden/1.jpg", "known/biden/2.jpg"],
           "alex": ["known/alex_lacamoire/1.jpg", "probe/alex_lacamoire1.jpg"],
           "kit": ["known/kit_harington/1.jpg", "known/kit_harington/2.jpg"],
           "rose": ["known/rose_leslie/1.jpg", "known/rose_leslie/2.jpg"]}
TRAIN, HELD_OUT = ("obama", "biden"), ("alex", "kit", "rose")


def chips() -> dict[str, list[np.ndarray]]:
    from cnnkit.core.data.images import read_image
    from cnnkit.plugins.siamese.faces import face_chips

    return {name: [face_chips(read_image(FACES / f))[0][0] for f in files] for name, files in SOURCES.items()}


def pair_figures(model: torch.nn.Module, people: dict[str, list[np.ndarray]]) -> dict[str, float]:
    """Accuracy at 0.6, mean genuine/impostor distance and the best threshold over every pair."""
    from cnnkit.core.data.pixels import to_tensor
    from cnnkit.core.metrics.protocol import best_threshold

    images = [c for name in people for c in people[name]]
    labels = np.array([i for i, name in enumerate(people) for _ in people[name]])
    model.eval()
    with torch.no_grad():
        emb = model(torch.stack([to_tensor(c) for c in images])).numpy()
    i, j = np.triu_indices(len(labels), 1)
    d = np.linalg.norm(emb[i] - emb[j], axis=1)
    same = labels[i] == labels[j]
    return {"pairs": len(d), "acc@0.6": float(((d < 0.6) == same).mean()), "genuine": float(d[same].mean()),
            "impostor": float(d[~same].mean()), "best_thr": float(best_threshold(d, same))}


def strong_pipeline() -> object:
    import albumentations as A
    import cv2

    return A.Compose([A.Affine(scale=(0.7, 1.3), rotate=(-30, 30), translate_percent=(-0.1, 0.1), p=1.0,
                               border_mode=cv2.BORDER_REFLECT_101),
                      A.ToGray(p=0.5), A.GaussianBlur(blur_limit=(3, 7), p=0.5),
                      A.RandomBrightnessContrast(0.4, 0.4, p=0.8), A.Resize(150, 150)])


def fine_tune(loss_name: str, people: dict[str, list[np.ndarray]], steps: int, lr: float, seed: int,
              strong: bool) -> tuple[torch.nn.Module, float]:
    from cnnkit.core.data.pixels import to_tensor
    from cnnkit.core.tasks.embed import embed_pipeline
    from cnnkit.plugins.siamese.face_resnet import face_resnet
    from cnnkit.plugins.siamese.losses import DlibMetricLoss, TripletLoss

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = face_resnet(pretrained=True)
    criterion = DlibMetricLoss() if loss_name == "dlib-metric" else TripletLoss(mining="semi-hard")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    pipeline = strong_pipeline() if strong else embed_pipeline(150, train=True)
    pipeline.set_random_seed(seed)
    model.train()
    total = 0.0
    for _ in range(steps):
        batch, labels = [], []
        for label, name in enumerate(TRAIN):
            for k in rng.choice(len(people[name]), 4, replace=len(people[name]) < 4):
                batch.append(to_tensor(pipeline(image=people[name][k])["image"]))
                labels.append(label)
        loss = criterion(model(torch.stack(batch)), torch.tensor(labels))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
    return model, total / max(steps, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strong", action="store_true", help="harder training views (see above)")
    args = parser.parse_args()
    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.plugins.siamese.face_resnet import face_resnet

    load_plugins()
    people = chips()
    held = {n: people[n] for n in HELD_OUT}
    train = {n: people[n] for n in TRAIN}
    rows = [("pretrained", face_resnet(pretrained=True))]
    for name in ("dlib-metric", "triplet"):
        model, mean_loss = fine_tune(name, people, args.steps, args.lr, args.seed, args.strong)
        rows.append((f"{name}, {args.steps} steps lr {args.lr:g}", model))
        print(f"{name}: mean training loss {mean_loss:.4f}")
    print(f"{'model':34} {'split':9} {'pairs':>5} {'acc@0.6':>8} {'genuine':>8} {'impostor':>8} {'best thr':>8}")
    for label, model in rows:
        for split, group in (("held-out", held), ("train", train)):
            f = pair_figures(model, group)
            print(f"{label:34} {split:9} {f['pairs']:5d} {f['acc@0.6']:8.3f} {f['genuine']:8.3f} "
                  f"{f['impostor']:8.3f} {f['best_thr']:8.3f}")


if __name__ == "__main__":
    main()
