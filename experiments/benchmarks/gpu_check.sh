#!/usr/bin/env bash
# GPU check, at most about 5 minutes on one GPU: run from the repository root with its .venv installed.
#
#   bash experiments/benchmarks/gpu_check.sh [python]      # default python: .venv/bin/python
#   GPU=cpu bash experiments/benchmarks/gpu_check.sh         # a dry run of the script itself on a CPU-only machine
#
# 1. short runs at device=cuda: policy mlp and gru, loss clip_ppo and grpo, num_seeds=4, optim.compile=true (each
#    must exit 0);
# 2. a CUDA checkpoint resumed on the CPU (resume=<run> device=cpu) must finish;
# 3. training frames/s at device=cuda against device=cpu on CartPole with 16, 256 and 1024 envs, and with
#    num_seeds 1, 16 and 64 (16 envs per seed): the median train/fps of each run's iterations after the first.
# Everything is printed; the lines starting with "RESULT" are the ones to record in experiments/results/.
set -u
PY=${1:-.venv/bin/python}
GPU=${GPU:-cuda}
OUT=$(mktemp -d /tmp/rlexp-gpu-XXXX)
export WANDB_MODE=offline WANDB_SILENT=true
echo "RESULT $(date -u +%F' '%H:%M) $($PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA")')"

run() {  # name, overrides...: one short run; prints its exit code and wall seconds
  local name=$1; shift
  local start=$SECONDS
  timeout 120 $PY -m rlexp logger=csv eval.episodes=4 "$@" hydra.run.dir=$OUT/$name > $OUT/$name.log 2>&1
  local code=$?
  echo "RESULT run $name: exit $code, $((SECONDS - start)) s  ($*)"
  [ $code -eq 0 ] || tail -5 $OUT/$name.log
}

fps() {  # name: median train/fps of the run's iterations after the first
  $PY - "$OUT/$1" <<'EOF'
import json, statistics, sys
from pathlib import Path
files = sorted(Path(sys.argv[1]).rglob("metrics.jsonl"))
rows = [json.loads(line) for line in files[0].read_text().splitlines()] if files else []
values = [row["train/fps"] for row in rows[1:] if "train/fps" in row]
print(f"{statistics.median(values):,.0f}" if values else "n/a")
EOF
}

# 1. short runs on CUDA
run cuda_mlp_clip_ppo device=$GPU collector.total_frames=16384 eval.interval=8192
run cuda_gru_clip_ppo device=$GPU policy=gru collector.total_frames=16384 eval.interval=8192
run cuda_mlp_grpo device=$GPU loss=grpo collector.total_frames=16384 eval.interval=8192
run cuda_gru_grpo device=$GPU loss=grpo policy=gru collector.total_frames=8192 eval.interval=8192
run cuda_seeds_clip_ppo device=$GPU num_seeds=4 collector.total_frames=16384 eval.interval=8192
run cuda_seeds_grpo device=$GPU num_seeds=4 loss=grpo collector.total_frames=16384 eval.interval=8192
run cuda_mlp_compiled device=$GPU optim.compile=true collector.total_frames=16384 eval.interval=8192

# 2. a CUDA checkpoint resumed on the CPU (a finished run continued to a larger budget)
start=$SECONDS
timeout 120 $PY -m rlexp resume=$OUT/cuda_mlp_clip_ppo device=cpu collector.total_frames=24576 > $OUT/resume.log 2>&1
echo "RESULT resume of the CUDA run on the CPU: exit $?, $((SECONDS - start)) s"
tail -2 $OUT/resume.log | tr '\r' '\n' | tail -1

# 3. frames/s, CUDA against CPU
for envs in 16 256 1024; do
  for device in cpu $GPU; do
    run fps_${envs}_$device device=$device env.num_envs=$envs collector.frames_per_batch=$((envs * 128)) \
      collector.total_frames=$((envs * 128 * 3)) eval.interval=100000000 checkpoint.interval=100000000
  done
  echo "RESULT frames/s with $envs envs: cpu $(fps fps_${envs}_cpu), $GPU $(fps fps_${envs}_$GPU)"
done
for seeds in 1 16 64; do
  for device in cpu $GPU; do
    run seeds_${seeds}_$device device=$device num_seeds=$seeds collector.total_frames=6144 \
      eval.interval=100000000 checkpoint.interval=100000000
  done
  echo "RESULT frames/s per seed with num_seeds=$seeds: cpu $(fps seeds_${seeds}_cpu), $GPU $(fps seeds_${seeds}_$GPU)"
done
echo "outputs in $OUT"
