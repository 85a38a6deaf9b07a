#!/usr/bin/env bash
# Trains ARD Studio's default models on Fashion-MNIST on the CPU and installs them in assets/:
# the teacher, the ARD student (and the same after stage 2, adversarial fine-tuning), the
# step-distillation baseline, the feature networks, and
# assets/eval.json + assets/manifest.json. Every stage resumes: rerun the script after an
# interruption and it continues where it stopped.
#
#   bash assets/train-defaults.sh            # RUN=runs/defaults by default
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=${RUN:-runs/defaults}
SEED=${SEED:-0}
# Every setting is the engine's default (`ard defaults` prints them; train/options.rs defines
# them once): DiT on 28x28 grey images, patch 4 (49 tokens), hidden 64, depth 4, 4 heads; the
# teacher 24000 iterations at lr 1e-3 on a cosine schedule; 16000 trajectories (25-step DDIM, guidance 1.5, x0 anchors
# 15/10/5/0); the students N = 2 and N = 0 for 24000 iterations at batch 32, lr 1e-3 on a cosine
# schedule (200 warm-up iterations, down to 5%), EMA 0.999, the L1 loss
# (docs/distillation.md); stage 2 on the same loss; two feature
# networks of different builds for the metrics (five convolutions, 3000 steps on a cosine
# schedule; the first networks' three, 1500 steps at a constant rate). The variables below only override them, for
# shorter or longer runs.
# Measured per-stage costs on 2 cores (release, CPU, 2026-12-02 and 12-07 morning): the teacher's
# 24000 iterations (batch 64, both cores) about 40 min; 16000 trajectories with two
# workers 7.5 min; a feature-network step (batch 128) 0.4 s on both cores (3000 steps: about
# 20 min); a GAN fine-tuning step (stage 2, batch 32) 0.4 s alone. On the faster 2-core machine
# of 2026-12-07 afternoon: the trajectories 2 min 42 s; a distillation step (batch 32, one
# thread) 0.21 s with both students side by side (24000 iterations with an evaluation every
# 2000: about 1 h 35 min); stage 2 (6000 iterations) alone on both cores 39 min.
TEACHER_ITERS=${TEACHER_ITERS:-}
TRAJECTORIES=${TRAJECTORIES:-}
DISTILL_ITERS=${DISTILL_ITERS:-}
HISTORY=${HISTORY:-2}              # N of the ARD student (the baseline is N = 0)
GAN_ITERS=${GAN_ITERS:-}
FEATURE_ITERS=${FEATURE_ITERS:-}
SAMPLES=${SAMPLES:-}

cargo build --release --bin ard
ard() { target/release/ard "$@" --device cpu; }
mkdir -p "$RUN"
source assets/stage-times.sh

stage "teacher (and the feature networks beside it)" teacher
features() {
  [ -f "$RUN/feature_net.safetensors" ] || \
    ard train-features --out "$RUN/feature_net.safetensors" ${FEATURE_ITERS:+--iterations $FEATURE_ITERS} \
      --seed "$SEED"
  [ -f "$RUN/feature_net_2.safetensors" ] || \
    ard train-features --out "$RUN/feature_net_2.safetensors" --arch three-conv --iterations 1500 \
      --lr-schedule constant --seed "$SEED"
  [ -f "$RUN/feature_net_3.safetensors" ] || \
    ard train-features --out "$RUN/feature_net_3.safetensors" --arch five-conv \
      ${FEATURE_ITERS:+--iterations $FEATURE_ITERS} --seed "$SEED"
}
features > "$RUN/features.log" 2>&1 &
features_job=$!
ard train-teacher --out "$RUN/teacher" ${TEACHER_ITERS:+--iterations $TEACHER_ITERS} \
  --seed "$SEED" --log-every 50 --resume 2>&1 | tee -a "$RUN/teacher.log"

stage "trajectories (two workers)" trajectories
traj() {
  ard trajectories --teacher "$RUN/teacher/teacher.safetensors" --out "$RUN/trajectories" \
    ${TRAJECTORIES:+--count $TRAJECTORIES} --seed "$SEED" --shard "$1"
}
traj 1/2 > "$RUN/trajectories-1.log" 2>&1 &
worker=$!
traj 0/2
wait "$worker"

stage "feature networks (the students are scored as they train)" feature-networks
wait "$features_job"
[ -f "$RUN/feature_net_3.safetensors" ] || { echo "feature networks failed: $RUN/features.log"; exit 1; }

stage "distill N=$HISTORY and N=0 side by side" distill
distil() {
  ARD_TRAIN_THREADS=1 ard distill --teacher "$RUN/teacher/teacher.safetensors" --trajectories "$RUN/trajectories" \
    --history-layers "$1" --out "$RUN/student-n$1" ${DISTILL_ITERS:+--iterations $DISTILL_ITERS} \
    --feature-net "$RUN/feature_net.safetensors" --seed "$SEED" --log-every 50 --resume
}
distil 0 > "$RUN/distill-n0.log" 2>&1 &
baseline=$!
distil "$HISTORY"
wait "$baseline"

stage "adversarial fine-tuning of the ARD student (stage 2)" finetune-gan
ard finetune-gan --student "$RUN/student-n$HISTORY/student.safetensors" \
  --teacher "$RUN/teacher/teacher.safetensors" --trajectories "$RUN/trajectories" \
  --out "$RUN/gan-n$HISTORY" ${GAN_ITERS:+--iterations $GAN_ITERS} \
  --feature-net "$RUN/feature_net.safetensors" --eval-every 500 --seed "$SEED" --log-every 50 \
  --resume 2>&1 | tee -a "$RUN/gan.log"

stage "eval" eval
ard eval --teacher "$RUN/teacher/teacher.safetensors" \
  --students "$RUN/student-n$HISTORY/student.safetensors,$RUN/gan-n$HISTORY/student.safetensors,$RUN/student-n0/student.safetensors" \
  --feature-net "$RUN/feature_net.safetensors,$RUN/feature_net_3.safetensors,$RUN/feature_net_2.safetensors" \
  --floor-steps 4 \
  ${SAMPLES:+--samples $SAMPLES} --out "$RUN/eval.json"
python3 docs/plot_curves.py "$RUN/distillation-curves.png" "ARD N=$HISTORY=$RUN/student-n$HISTORY" \
  "baseline N=0=$RUN/student-n0" || echo "(no matplotlib: curves not drawn)"

stage "install" install
cp "$RUN/teacher/teacher.safetensors" assets/teacher.safetensors
cp "$RUN/student-n$HISTORY/student.safetensors" assets/ard.safetensors
cp "$RUN/student-n0/student.safetensors" assets/baseline.safetensors
cp "$RUN/gan-n$HISTORY/student.safetensors" assets/ard_gan.safetensors
cp "$RUN/feature_net.safetensors" assets/feature_net.safetensors
cp "$RUN/feature_net_2.safetensors" assets/feature_net_2.safetensors
cp "$RUN/feature_net_3.safetensors" assets/feature_net_3.safetensors
cp "$RUN/eval.json" assets/eval.json
cp "$RUN/eval.md" assets/eval.md
stage "done" ""
overrides=""
for v in SEED HISTORY TEACHER_ITERS TRAJECTORIES DISTILL_ITERS GAN_ITERS FEATURE_ITERS SAMPLES; do
  [ -z "${!v}" ] || overrides+="$v=${!v} "
done
target/release/ard manifest --run "$RUN" --command "${overrides}bash assets/train-defaults.sh" \
  --out assets/manifest.json
