#!/usr/bin/env bash
# Train with DeepSpeed in one process: one GPU, or a CPU (gloo, bf16).
#   bash scripts/launch_1gpu.sh [config.yaml] [ds_config.json] [--key value ...]
# Any further argument overrides the YAML config (e.g. --max_steps 1000 --precision bf16).
set -euo pipefail
CONFIG=${1:-configs/base.yaml}
DS_CONFIG=${2:-configs/ds_zero2.json}
shift $(( $# < 2 ? $# : 2 ))
exec python -m course_lib.train --config "$CONFIG" --deepspeed "$DS_CONFIG" "$@"
