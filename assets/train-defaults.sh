#!/usr/bin/env bash
# Trains ARD Studio's default models on Fashion-MNIST on the CPU and installs them in assets/:
# the teacher, the ARD student, the step-distillation baseline, the feature network, and
# assets/eval.json + assets/manifest.json. Every stage resumes: rerun the script after an
# interruption and it continues where it stopped.
#
#   bash assets/train-defaults.sh            # RUN=runs/defaults by default
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=${RUN:-runs/defaults}
SEED=${SEED:-0}
# Architecture: DiT on 28x28 grey images, patch 4 (49 tokens), hidden 64, depth 4, 4 heads.
# Measured per-stage costs on 2 cores (release, CPU): teacher step (batch 64) 0.30 s, teacher
# sample (25 guided DDIM steps) 88 ms, distillation step (batch 32) 0.85 s with N = 2 and 0.6 s
# with N = 0, feature-net step (batch 128) 0.29 s. One process keeps about one core busy, so the
# independent stages run side by side (feature network beside the teacher, two trajectory
# workers, the two students together): about 90 minutes for the defaults below.
# The teacher's lr is 1e-3: at small budgets the adaLN-Zero label pathway learns slowly (see the
# toy test in tests/pipeline.rs), and 3e-4 left samples blind to their class after 1000 steps.
ARCH="--patch 4 --hidden 64 --depth 4 --heads 4"
TEACHER_ITERS=${TEACHER_ITERS:-8000}
TRAJECTORIES=${TRAJECTORIES:-8000}
DISTILL_ITERS=${DISTILL_ITERS:-1500}
HISTORY=${HISTORY:-2}              # N: lower blocks with history attention (of 4)
FEATURE_ITERS=${FEATURE_ITERS:-1500}
SAMPLES=${SAMPLES:-10000}

cargo build --release --bin ard
ard() { target/release/ard "$@" --device cpu; }
mkdir -p "$RUN"
start=$(date +%s)
stage() { echo "== $1 ($(( ($(date +%s) - start) / 60 )) min in)"; }

stage "teacher (and the feature network beside it)"
if [ ! -f "$RUN/feature_net.safetensors" ]; then
  ard train-features --out "$RUN/feature_net.safetensors" --iterations "$FEATURE_ITERS" \
    --seed "$SEED" > "$RUN/features.log" 2>&1 &
  features=$!
fi
ard train-teacher --out "$RUN/teacher" --data fashion-mnist $ARCH \
  --iterations "$TEACHER_ITERS" --batch 64 --lr 1e-3 --ema 0.999 --seed "$SEED" \
  --checkpoint-every 100 --sample-every 1000 --log-every 50 --resume 2>&1 | tee -a "$RUN/teacher.log"

stage "trajectories (two workers)"
traj() {
  ard trajectories --teacher "$RUN/teacher/teacher.safetensors" --out "$RUN/trajectories" \
    --count "$TRAJECTORIES" --shard-size 500 --steps 25 --cfg 1.5 --cfg-channels 1 \
    --student-steps 4 --batch 100 --seed "$SEED" --shard "$1"
}
traj 1/2 > "$RUN/trajectories-1.log" 2>&1 &
worker=$!
traj 0/2
wait "$worker"

stage "distill N=$HISTORY and N=0 side by side"
distil() {
  ard distill --teacher "$RUN/teacher/teacher.safetensors" --trajectories "$RUN/trajectories" \
    --history-layers "$1" --out "$RUN/student-n$1" --iterations "$DISTILL_ITERS" --batch 32 \
    --lr 1e-4 --ema 0.999 --seed "$SEED" --checkpoint-every 100 --sample-every 500 \
    --log-every 50 --resume
}
distil 0 > "$RUN/distill-n0.log" 2>&1 &
baseline=$!
distil "$HISTORY"
wait "$baseline"

stage "feature network"
if [ -n "${features:-}" ]; then wait "$features"; fi
[ -f "$RUN/feature_net.safetensors" ] || \
  ard train-features --out "$RUN/feature_net.safetensors" --iterations "$FEATURE_ITERS" --seed "$SEED"

stage "eval"
ard eval --teacher "$RUN/teacher/teacher.safetensors" \
  --students "$RUN/student-n$HISTORY/student.safetensors,$RUN/student-n0/student.safetensors" \
  --feature-net "$RUN/feature_net.safetensors" --samples "$SAMPLES" --cfg 1.5 --cfg-channels 1 \
  --out "$RUN/eval.json"

stage "install"
cp "$RUN/teacher/teacher.safetensors" assets/teacher.safetensors
cp "$RUN/student-n$HISTORY/student.safetensors" assets/ard.safetensors
cp "$RUN/student-n0/student.safetensors" assets/baseline.safetensors
cp "$RUN/feature_net.safetensors" assets/feature_net.safetensors
cp "$RUN/eval.json" assets/eval.json
cp "$RUN/eval.md" assets/eval.md
cat > assets/manifest.json <<JSON
{
  "dataset": "Fashion-MNIST (Debian dataset-fashion-mnist)",
  "dataset_fingerprint_train": "$(grep -o 'fingerprint [0-9a-f]*' "$RUN/teacher.log" | tail -1 | cut -d' ' -f2)",
  "seed": $SEED,
  "architecture": "$ARCH",
  "teacher_iterations": $TEACHER_ITERS,
  "trajectories": $TRAJECTORIES,
  "distill_iterations": $DISTILL_ITERS,
  "history_layers": $HISTORY,
  "feature_iterations": $FEATURE_ITERS,
  "eval_samples": $SAMPLES,
  "command": "bash assets/train-defaults.sh",
  "minutes": $(( ($(date +%s) - start) / 60 ))
}
JSON
stage "done"
