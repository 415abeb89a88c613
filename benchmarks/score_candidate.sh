#!/usr/bin/env bash
# Score a training run as a candidate for the shipped default, beside the shipped file, with the
# commands the model card quotes: export (fp16 storage, flip averaging on), int8 calibration,
# `fer evaluate` on PublicTest (stills and both kinds of clips) in fp32 and int8, through
# detection (PublicTest faces enlarged 3x), and annotate's "same emotion" on the crowd clip
# (`annotate_throughput.py --weights W --labels-only`: how the labels hold when keyframes and
# refinement move the crops, docs/throughput.md). Ends with one table, candidate against shipped.
#
#   bash benchmarks/score_candidate.sh runs/kd-wide-rsmix-s46 [OUT]   # OUT default /tmp/score-<run>
#   SHIPPED=fer_batch/weights/fer-cnn-gru-video.pt bash benchmarks/score_candidate.sh RUN   # beside the video encoder
#
# About 15-20 minutes on two cores (none of its figures depends on timing, so a busy machine
# is only slower). PublicTest chooses here, as everywhere: a candidate that wins is selected on it.
set -euo pipefail
RUN=${1:?usage: score_candidate.sh RUN_FOLDER [OUT]}
NAME=$(basename "$RUN")
OUT=${2:-/tmp/score-$NAME}
DATA=${DATA:-../shared/fer2013}
PY=${PY:-.venv/bin/python}
FER=${FER:-.venv/bin/fer}
SHIPPED=${SHIPPED:-fer_batch/weights/fer-cnn-gru.pt}  # the file the candidate is scored beside (the photo encoder)
mkdir -p "$OUT"
[ -f "$RUN/best.pt" ] || { echo "no $RUN/best.pt: the run has not finished an evaluated epoch" >&2; exit 2; }

"$PY" -m fer_batch.training.export "$RUN/best.pt" "$OUT/$NAME.pt" --half --tta-flip
"$PY" -m fer_batch.training.quantize "$OUT/$NAME.pt" --data "$DATA" --out "$OUT/$NAME-int8.pt"
for who in candidate shipped; do
  weights=$([ $who = candidate ] && echo "$OUT/$NAME-int8.pt" || echo $SHIPPED)
  "$FER" evaluate --data "$DATA" --weights "$weights" --precision fp32 --quiet --out "$OUT/$who-fp32" > /dev/null
  "$FER" evaluate --data "$DATA" --weights "$weights" --precision int8 --quiet --out "$OUT/$who-int8" > /dev/null
  "$FER" evaluate --data "$DATA" --split test --weights "$weights" --precision fp32 --detect --upscale 3 \
    --no-sequence --quiet --out "$OUT/$who-detect" > /dev/null 2>&1
  "$PY" benchmarks/annotate_throughput.py --weights "$weights" --labels-only > "$OUT/$who-labels.txt" 2>&1
done

"$PY" - "$OUT" <<'EOF'
import json, re, sys
from pathlib import Path

out = Path(sys.argv[1])

def metrics(folder: str) -> dict:
    return json.loads((out / folder / "metrics.json").read_text())

def same_emotion(who: str) -> str:
    """'same emotion' of the defaults, --detect-every 1, 5 and 10 and the shifted full path, per clip."""
    figures: dict[str, list[str]] = {}
    in_table = False
    for line in (out / f"{who}-labels.txt").read_text().splitlines():
        in_table = in_table or "same emotion as the full path" in line  # 1080p first, then 640x360
        match = re.match(r"(defaults|--detect-every 1|--detect-every 5|--detect-every 10|full path, the video shifted)\s", line)
        if in_table and match:
            figures.setdefault(match.group(1), []).append(re.findall(r"(\d+\.\d)%", line)[-1])
    short = {"defaults": "defaults", "--detect-every 1": "de1", "--detect-every 5": "de5", "--detect-every 10": "de10",
             "full path, the video shifted": "moved 1 px"}
    return "; ".join(f"{short[name]} {' / '.join(values)}" for name, values in figures.items())

print(f"{'':10s} {'stills fp32':>11s} {'stills int8':>11s} {'plain none/bidir':>17s} {'realistic none/bidir':>21s} "
      f"{'detect':>7s}  same emotion (1080p / 640x360)")
for who in ("candidate", "shipped"):
    fp32, int8, detect = metrics(f"{who}-fp32"), metrics(f"{who}-int8"), metrics(f"{who}-detect")
    plain, realistic = int8["sequence"], int8["sequence"]["realistic"]
    print(f"{who:10s} {fp32['accuracy']:11.2%} {int8['accuracy']:11.2%} "
          f"{plain['none']['accuracy']:8.2%}/{plain['bidirectional']['accuracy']:.2%} "
          f"{realistic['none']['accuracy']:12.2%}/{realistic['bidirectional']['accuracy']:.2%} "
          f"{detect['accuracy']:7.2%}  {same_emotion(who)}")
print("(clips: int8, the CPU default; through detection: fp32, 3x enlarged PublicTest faces)")
EOF
