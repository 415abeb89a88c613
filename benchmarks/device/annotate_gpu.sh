#!/usr/bin/env bash
# Issue 11's GPU figures on a lent device machine: a short `fer annotate --device cuda` run read
# back, then benchmarks/annotate_throughput.py on CUDA with several detector batch sizes.
# The machine's image has torch, torchvision, OpenCV, pandas and pyarrow but not
# facenet-pytorch, and ../shared does not travel, so both come in ignored folders (carry them):
#   mkdir -p .devsite .devmedia && cp -r .venv/lib/python3.11/site-packages/facenet_pytorch .devsite/
#   cp ../shared/media/walking-crowd-1080p.mp4 .devmedia/
#   bash benchmarks/device/annotate_gpu.sh            # on the device, carry: .devsite .devmedia
# What it leaves under $OUT comes back: the smoke run's tables, the benchmark's printout and
# benchmarks/profile_annotate.py's tables for the 640x360 copy (where the GPU path's time goes).
set -u
OUT=${OUT:-/tmp/out}
VIDEO=${1:-.devmedia/walking-crowd-1080p.mp4}
BATCHES=${2:-8,64}
export PYTHONPATH=$PWD/.devsite:$PWD PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, torchvision, cv2, numpy, facenet_pytorch; print('torch', torch.__version__, 'torchvision',
torchvision.__version__, 'opencv', cv2.__version__, 'numpy', numpy.__version__, 'cpus', len(__import__('os').sched_getaffinity(0)))"
echo "== smoke: fer annotate --device cuda, 24 frames"
timeout 180 python3 -m fer_batch.cli annotate "$VIDEO" --device cuda --max-frames 24 --out "$OUT/smoke.parquet" --quiet --json \
  > "$OUT/smoke.json" 2> "$OUT/smoke.err"; echo "rc $?"; tail -n 25 "$OUT/smoke.err"; head -c 1500 "$OUT/smoke.json"; echo
python3 -c "
import pandas as pd, sys
rows = pd.read_parquet(sys.argv[1])
print(len(rows), 'rows,', rows['track_id'].nunique(), 'tracks,', rows['frame_index'].nunique(), 'frames')
print(rows.iloc[:3].T.head(30))" "$OUT/smoke.parquet"
echo "== benchmark"
timeout "${BENCH_SECONDS:-420}" python3 benchmarks/annotate_throughput.py --video "$VIDEO" --device cuda \
  --detect-batches "$BATCHES" 2>&1 | tee "$OUT/annotate-gpu.txt"
echo "benchmark rc ${PIPESTATUS[0]}"
echo "== profile: the 640x360 copy at a GPU's defaults, then at a CPU's (keyframes every 5th frame, 4-keyframe batches)"
for changes in "" "--set detect_every=5 --set small_faces_every=5 --set detect_batch=4"; do
  timeout "${PROFILE_SECONDS:-150}" python3 benchmarks/profile_annotate.py --video "$VIDEO" --size 640x360 --device cuda \
    --rows 30 $changes 2>&1 | grep -v "^USDT" >> "$OUT/profile-gpu.txt"
done
head -c 6000 "$OUT/profile-gpu.txt"
