#!/usr/bin/env bash
# `bench/join_codes.sh REV`: whole `valueloop bench join` runs (two repeats each) of REV and of HEAD, in turns,
# each first in every other turn, from worktrees under /tmp/join-codes that share this checkout's built
# extensions, jars and Kafka node; prints each run's ratios and writes bench/results/join_codes.json.
set -euo pipefail
rev=${1:?usage: bench/join_codes.sh REV}
root=$(cd "$(dirname "$0")/.." && pwd)
work=/tmp/join-codes
rm -rf "$work"; mkdir -p "$work"
for name in before after; do
  commit=$([ $name = before ] && echo "$rev" || git -C "$root" rev-parse --short HEAD)
  git -C "$root" worktree add -f --detach "$work/$name" "$commit" -q
  for source in $(git -C "$root" ls-files '*.c'); do
    git -C "$root" diff --quiet "$rev" HEAD -- "$source" || { echo "$source differs: build $rev's extensions"; exit 1; }
    cp "$root/${source%.c}.cpython-311-x86_64-linux-gnu.so" "$work/$name/${source%.c}.cpython-311-x86_64-linux-gnu.so"
  done
  for linked in infra/flink/target infra/kafka/target infra/prism/bin .run; do
    [ -e "$root/$linked" ] && ln -sfn "$root/$linked" "$work/$name/$linked"
  done
done
for turn in 1 2; do
  order=$([ $turn = 1 ] && echo "before after" || echo "after before")
  for name in $order; do
    (cd "$work/$name" && PYTHONPATH="$work/$name" "$root/.venv/bin/valueloop" bench join --repeats 2 \
      --out "$work/$name-$turn.json" > "$work/$name-$turn.log" 2>&1)
  done
done
"$root/.venv/bin/python" - "$work" "$rev" > "$root/bench/results/join_codes.json" <<'PY'
import json, statistics, sys
work, rev = sys.argv[1:]
runs = {name: [json.load(open(f"{work}/{name}-{turn}.json")) for turn in (1, 2)] for name in ("before", "after")}
keys = ("beam_vs_reference_speed", "flink_vs_reference_speed")
medians = {name: {k: statistics.median(r["summary"][k] for r in rs) for k in keys} for name, rs in runs.items()}
print(json.dumps({"benchmark": "join_codes", "before": rev, "after": runs["after"][0]["environment"]["commit"],
                  "order": "before first in turn 1, after first in turn 2", "repeats_per_run": 2,
                  "runs": {name: [{"commit": r["environment"]["commit"], "measured_at": r["environment"]["measured_at"],
                                   **{k: r["summary"][k] for k in keys}} for r in rs] for name, rs in runs.items()},
                  "medians": medians,
                  "after_over_before": {k: round(medians["after"][k] / medians["before"][k], 3) for k in keys}},
                 indent=2))
PY
cat "$root/bench/results/join_codes.json"
