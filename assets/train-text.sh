#!/usr/bin/env bash
# Trains ARD Studio's text-to-image models on the emoji set on the CPU, stage by stage, each
# resuming where it stopped when the script is rerun: the captioned emoji set (`ard dataset
# emoji`: Noto Color Emoji and Twemoji, CLDR captions), then the text-conditioned teacher
# (`ard train-teacher --text`, prompts through the shipped all-MiniLM-L6-v2). Stage times go
# to $RUN/stage-times.tsv and the run's manifest to $RUN/manifest.json (`ard manifest`).
#
#   bash assets/train-text.sh            # RUN=runs/text by default
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=${RUN:-runs/text}
SEED=${SEED:-0}
TEACHER_ITERS=${TEACHER_ITERS:-}   # default: the engine's (ard train-teacher --help)

cargo build --release --bin ard
ard() { target/release/ard "$@"; }
mkdir -p "$RUN"
source assets/stage-times.sh

stage "the emoji set" dataset
if [ ! -d "$RUN/emoji" ]; then
  twemoji=$(bash assets/emoji-sources.sh | head -1)
  ard dataset emoji --out "$RUN/emoji" --twemoji "$twemoji"
fi

stage "the text teacher" teacher
ard train-teacher --text --data "$RUN/emoji" --out "$RUN/teacher" --device cpu \
  ${TEACHER_ITERS:+--iterations $TEACHER_ITERS} --seed "$SEED" --log-every 50 --resume \
  2>&1 | tee -a "$RUN/teacher.log"

stage "done" ""
ard manifest --run "$RUN" --command "${TEACHER_ITERS:+TEACHER_ITERS=$TEACHER_ITERS }bash assets/train-text.sh" \
  --out "$RUN/manifest.json"
