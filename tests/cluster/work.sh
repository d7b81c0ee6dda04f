#!/bin/sh
# The command handler of the cluster's agents. The payload is
# "<steps> <step-ms> <text>": it works <steps> steps of <step-ms> each, reporting
# progress and a checkpoint (the steps done) after every step, and prints which
# host did the part, from which step, and the text. A replacement resumes from
# STARLING_RESUME_FROM instead of starting again.
set -eu
read -r steps step_ms text || true
case "$steps$step_ms" in *[!0-9]*|'') echo "payload must be '<steps> <step-ms> <text>'" >&2; exit 2 ;; esac
done_steps=0
if [ -n "${STARLING_RESUME_FROM:-}" ]; then
  done_steps=$(printf '%s' "$STARLING_RESUME_FROM" | base64 -d | sed -n 's/^done=\([0-9][0-9]*\)$/\1/p')
  done_steps=${done_steps:-0}
fi
from=$done_steps
pause=$(awk -v ms="$step_ms" 'BEGIN { printf "%.3f", ms / 1000 }')
while [ "$done_steps" -lt "$steps" ]; do
  sleep "$pause"
  done_steps=$((done_steps + 1))
  echo "progress $(awk -v d="$done_steps" -v n="$steps" 'BEGIN { printf "%.3f", d / n }')" >&2
  echo "checkpoint $(printf 'done=%s' "$done_steps" | base64)" >&2
done
echo "$STARLING_SKILL on ${STL_HOST:-?} from step $from: $text"
