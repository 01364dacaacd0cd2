#!/usr/bin/env bash
# The whole comparison, from the repository root: bash experiments/merging/run.sh
# Each step is skipped when its output exists (finetune and merge answer from their folders).
set -euo pipefail
S=.venv/bin/societies
for v in sums steps; do $S finetune experiments/merging/variant_$v.yaml; done
for m in linear task_arithmetic ties dare_ties slerp; do
  $S merge experiments/merging/merge_$m.yaml
done
test -f runs/merging/pair-head.pt || .venv/bin/python experiments/merging/train_pair_head.py
$S run experiments/merging/compare.yaml --quiet
$S run experiments/merging/compare_debate.yaml --quiet
$S run experiments/merging/compare_steps.yaml --quiet
.venv/bin/python experiments/merging/table.py runs/merging/compare runs/merging/debate \
  runs/merging/compare-steps
