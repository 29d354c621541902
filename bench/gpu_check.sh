#!/usr/bin/env bash
# Issue 17 on one GPU: `cnnkit train` against the bare model step (bench/train_overhead.py), one
# JSON line per run, for yolov3@416 and resnet50@224, with and without torch.compile, and
# multi-scale YOLO with cuDNN autotuning off (the engine's choice) and on. Goal: ratio >= 0.85.
#   PYTHON=.venv/bin/python bash bench/gpu_check.sh > gpu_check.jsonl     (about 6 minutes on an H100)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH=$PWD
DATA=${DATA_DIR:-/tmp/cnnkit_gpu_check}
[ -f "$DATA/yolo/data.yaml" ] || $PY bench/train_overhead.py --write-data "$DATA/yolo" --n 512 --size 416 >/dev/null
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >&2
bench() { timeout 300 $PY bench/train_overhead.py --device cuda --json "$@" || echo "{\"failed\": \"$*\"}"; }
YOLO=(--model yolov3 --img-size 416 --batch-size 32 --data "$DATA/yolo/data.yaml" --epochs 3)
RESNET=(--model resnet50 --img-size 224 --batch-size 64 --data "synthetic:textures?n=1024&size=256" --epochs 3)
bench "${YOLO[@]}"
bench "${RESNET[@]}"
bench "${YOLO[@]}" --compile
bench "${RESNET[@]}" --compile
bench "${YOLO[@]}" --multi-scale
bench "${YOLO[@]}" --multi-scale --cudnn-benchmark on
bench "${YOLO[@]}" --no-amp --no-channels-last
