#!/usr/bin/env bash
# One process per GPU on this machine, with the deepspeed launcher (or torchrun: LAUNCHER=torchrun).
#   NUM_GPUS=8 bash scripts/launch_multi_gpu.sh [config.yaml] [ds_config.json] [--key value ...]
# Every process reads its own share of each global batch: an update sees
# train.batch_size x train.grad_accum x NUM_GPUS blocks (the "auto" values of the DeepSpeed config).
set -euo pipefail
CONFIG=${1:-configs/base.yaml}
DS_CONFIG=${2:-configs/ds_zero2.json}
shift $(( $# < 2 ? $# : 2 ))
NUM_GPUS=${NUM_GPUS:-$(python -c "import torch; print(max(1, torch.cuda.device_count()))")}
if [ "${LAUNCHER:-deepspeed}" = torchrun ]; then
    # torchrun with DeepSpeed; drop --deepspeed for plain DistributedDataParallel
    exec torchrun --nproc_per_node "$NUM_GPUS" -m course_lib.train --config "$CONFIG" --deepspeed "$DS_CONFIG" "$@"
fi
exec deepspeed --num_gpus "$NUM_GPUS" --module course_lib.train --config "$CONFIG" --deepspeed "$DS_CONFIG" "$@"
