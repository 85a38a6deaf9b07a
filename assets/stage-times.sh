# Sourced by the training scripts: `stage "what is starting" key` prints the stage and appends
# the wall time of the stage that just ended to $RUN/stage-times.tsv (a rerun adds the rest of
# a stage it resumes); `ard manifest` adds them up. Needs RUN set.
start=$(date +%s)
current="" since=$start
stage() {
  local now; now=$(date +%s)
  [ -z "$current" ] || printf '%s\t%s\n' "$current" $(( now - since )) >> "$RUN/stage-times.tsv"
  current=$2 since=$now
  echo "== $1 ($(( (now - start) / 60 )) min in)"
}
