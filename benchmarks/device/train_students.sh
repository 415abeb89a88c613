#!/usr/bin/env bash
# Distil single networks from the shipped ensemble on a lent GPU, several runs side by side
# (each run is bound by Python and the CPU more than by the GPU, so four share one well).
# Run from the repository root on the device machine, with .devdata/ carried (see
# unpack_fer2013.py); what it leaves under $OUT comes back: slim fp16 checkpoints and logs.
#   bash benchmarks/device/train_students.sh [EPOCHS] [SECONDS]
# RUNS replaces the four runs below ("name=options;name=options"), EXTRA adds options to every run:
#   RUNS="kd-wide-s41=--model wide --seed 41;kd-wide-rs-s42=--model wide --seed 42 --realistic-stills 0.3" \
#   EXTRA="--distill-weight 0.7" bash benchmarks/device/train_students.sh 120 560
# The SGD recipe of published single networks (untried at scale; `fer train --help`), e.g.:
#   RUNS="sgd-wide-s61=--model wide --seed 61 --optimizer sgd --schedule plateau --holdout 0.1 --lr 0.01" \
#   bash benchmarks/device/train_students.sh 150 560
set -u
EPOCHS=${1:-80}
BUDGET=${2:-420}
OUT=${OUT:-/tmp/out}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=3 FER_BATCH_CACHE=/tmp/fer-cache
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
python3 benchmarks/device/unpack_fer2013.py unpack .devdata /tmp/fer2013 || exit 1
python3 -c "from fer_batch.training.data import load_split as l; l('/tmp/fer2013','train'); l('/tmp/fer2013','test')" || exit 1
common=(--data /tmp/fer2013 --device cuda --epochs "$EPOCHS" --temporal-epochs 1 --eval-every 5
        --teacher fer_batch/weights/fer-cnn-gru.pt --no-tta-flip --quiet ${EXTRA:-})
mkdir -p /tmp/logs
declare -A runs=(
  [kd-wide-s21]="--model wide --seed 21"
  [kd-wide-s22]="--model wide --seed 22"
  [kd-base-s23]="--model base --seed 23"
  [kd-large-s24]="--model large --seed 24"
)
if [ -n "${RUNS:-}" ]; then
  runs=()
  IFS=';' read -ra entries <<< "$RUNS"
  for entry in "${entries[@]}"; do runs[${entry%%=*}]="${entry#*=}"; done
fi
for name in "${!runs[@]}"; do
  timeout "$BUDGET" python3 -m fer_batch.cli train "${common[@]}" ${runs[$name]} --out "runs/$name" \
    > "/tmp/logs/$name.log" 2>&1 &
done
sleep 45; echo "after 45 s:"; tail -n 2 /tmp/logs/*.log
wait
for name in "${!runs[@]}"; do
  echo "== $name"; grep -v "^$" "/tmp/logs/$name.log" | tail -n 4; cp "runs/$name/metrics.csv" "/tmp/logs/$name-metrics.csv"
  [ -f "runs/$name/best.pt" ] && python3 -m fer_batch.training.export "runs/$name/best.pt" "$OUT/$name.pt" --half
done
tar -C /tmp -cf "$OUT/logs.tar" logs; ls -la "$OUT"
