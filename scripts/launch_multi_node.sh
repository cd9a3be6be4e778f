#!/usr/bin/env bash
# Several machines, one process per GPU on each, started from the first machine by the deepspeed launcher.
#   HOSTFILE=scripts/hostfile MASTER_ADDR=node1 bash scripts/launch_multi_node.sh [config.yaml] [ds_config.json] [--key value ...]
# Needs: passwordless ssh from this machine to every host in the hostfile; the course installed and the
# data at the same path on every machine; the hosts able to reach MASTER_ADDR:MASTER_PORT.
# Without ssh (e.g. under SLURM), run torchrun on every node instead:
#   torchrun --nnodes 2 --node_rank <0|1> --nproc_per_node 8 --master_addr node1 --master_port 29500 \
#       -m course_lib.train --config configs/base.yaml --deepspeed configs/ds_zero3.json
set -euo pipefail
CONFIG=${1:-configs/base.yaml}
DS_CONFIG=${2:-configs/ds_zero3.json}
shift $(( $# < 2 ? $# : 2 ))
HOSTFILE=${HOSTFILE:-scripts/hostfile}
MASTER_ADDR=${MASTER_ADDR:?set MASTER_ADDR to the first host of $HOSTFILE}
exec deepspeed --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "${MASTER_PORT:-29500}" \
    --module course_lib.train --config "$CONFIG" --deepspeed "$DS_CONFIG" "$@"
