#!/usr/bin/env bash
# The device checks of a session lent a GPU, as one call of the device tool
# (one command may run 10 minutes; a session has 15 minutes of device time,
# the machine's start included). Three steps, each under its own time limit
# (580 s in all, with the first look at the device) so that one that runs
# long leaves the next its time:
#   1. the CUDA tests (pytest -m cuda),
#   2. every stage and its baselines at N = 1,000,000 (benchmarks/device.py),
#   3. the whole pipeline per mode at N = 10,000,000, the issue's time
#      target (device.py --pipeline-only).
# device.py writes its results after every size and every mode, so a step
# stopped at its limit keeps what it finished. Everything goes to $OUT (the
# device tool's folder; benchmarks/results/gpu elsewhere): session.log,
# stages/device.{json,md} and target/device.{json,md}.
#
#   bash benchmarks/gpu_session.sh
#   DEVICE=cpu STAGE_SIZES=2000 TARGET_SIZES=3000 \
#       bash benchmarks/gpu_session.sh    # a dry run on the CPU
set -u
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results/gpu}
device=${DEVICE:-cuda}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
log=$out/session.log

step() {  # step NAME SECONDS COMMAND...: run it under a limit, logged
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*" | tee -a "$log"
    local start=$SECONDS
    # All of it to the log; its end to the console (the tool's reply).
    timeout "$limit" "$@" 2>&1 | tee -a "$log" | tail -n 40
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - start))s" | tee -a "$log"
}

: >"$log"
step device 30 python3 -c "import torch, torch_geometric, platform; \
print(platform.python_version(), 'torch', torch.__version__, 'pyg', \
torch_geometric.__version__, 'cuda', torch.version.cuda, \
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
step tests "${TESTS_S:-110}" python3 -m pytest -q -rs -m cuda \
    --continue-on-collection-errors -p no:cacheprovider tests
step stages "${STAGES_S:-170}" python3 benchmarks/device.py \
    --device "$device" --sizes ${STAGE_SIZES:-1000000} --repeat 1 \
    --path-budget 32000000000 --out "$out/stages"
step target "${TARGET_S:-270}" python3 benchmarks/device.py \
    --device "$device" --sizes ${TARGET_SIZES:-10000000} --pipeline-only \
    --out "$out/target"
