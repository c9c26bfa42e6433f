#!/usr/bin/env bash
# One meta-iteration timed on a GPU: mamlbook's strategies in fp32 and bf16 beside learn2learn,
# higher and TorchOpt (fp32 only, they have no reduced-precision mode), on Omniglot 5-way 1-shot
# (Conv4, the problem's meta-batch of 32, one inner step) and on the sinusoid (1 and 5 steps), into
# one results file, bench-gpu.json, that `mamlbook.bench.read_rows` reads. Time per meta-iteration
# and peak memory come from `mamlbook bench`; on CUDA `peak_mib` is the allocator's peak.
#
#   bash scripts/gpu-bench.sh [--out DIR]    # on a CUDA machine, under 8 minutes
#   bash scripts/gpu-bench.sh --dry-run      # the same pipeline on the CPU at a tiny size
#
# First it checks every strategy's meta-gradient on the GPU in float64 (scripts/device_check.py,
# real Omniglot tasks: the data root is $MAMLBOOK_DATA, else .gpudata/ or ../shared/data/ when
# present) and stops if one disagrees: timings of a wrong gradient are worth nothing.
# Needs python3 with torch (or $PYTHON); the package runs from this checkout (PYTHONPATH), so no
# install is needed. A peer that does not import is left out, and the output says so.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bash scripts/gpu-bench.sh [--out DIR] [--dry-run]

  --out DIR   where bench-gpu.json and bench-gpu.log go (default: $OUT if set, else book/results;
              with --dry-run: $OUT if set, else a new temporary folder)
  --dry-run   the same pipeline on the CPU at a tiny size (meta-batch 2, one timed iteration,
              mamlbook:loop and mamlbook:folded plus the peers); no float64 device check
  -h, --help  this text

Environment: PYTHON (default python3), MAMLBOOK_DATA (Omniglot for the device check),
TOTAL_SECONDS (default 440: the whole run, the benchmarks' timeouts are cut to fit it).
EOF
}

fail() {
    echo "gpu-bench.sh: $*" >&2
    exit 2
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dry_run=0
out_dir=""
while (($#)); do
    case $1 in
        --dry-run) dry_run=1 ;;
        --out)
            (($# >= 2)) || fail "--out needs a folder (see --help)"
            out_dir=$2
            shift
            ;;
        --out=*) out_dir=${1#--out=} ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            fail "unknown option '$1' (see --help)"
            ;;
    esac
    shift
done
# A dry run writes CPU numbers: never into book/results unless asked to by --out.
if [[ -z $out_dir ]]; then
    if [[ -n ${OUT:-} ]]; then
        out_dir=$OUT
    elif ((dry_run)); then
        out_dir=$(mktemp -d "${TMPDIR:-/tmp}/gpu-bench.XXXXXX")
    else
        out_dir=$repo/book/results
    fi
fi
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
cd "$repo"

PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || fail "no $PY on PATH (set PYTHON to a Python with torch)"
export PYTHONUNBUFFERED=1 PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
if [[ -z ${MAMLBOOK_DATA:-} ]]; then
    for root in "$repo/.gpudata" "$repo/../shared/data"; do
        if [[ -d $root/omniglot ]]; then
            export MAMLBOOK_DATA=$root
            break
        fi
    done
fi
# Preprocessed Omniglot travelling in .gpudata/cache/ spares the check its preprocessing.
if [[ -z ${MAMLBOOK_CACHE:-} && -d $repo/.gpudata/cache ]]; then
    export MAMLBOOK_CACHE=${TMPDIR:-/tmp}/mamlbook-cache
    mkdir -p "$MAMLBOOK_CACHE" && cp -r "$repo/.gpudata/cache/." "$MAMLBOOK_CACHE/"
fi

result=$out_dir/bench-gpu.json
exec > >(tee "$out_dir/bench-gpu.log") 2>&1
parts=$(mktemp -d "${TMPDIR:-/tmp}/gpu-bench-parts.XXXXXX")
trap 'rm -rf "$parts"' EXIT

# The whole run stays under 8 minutes: each step gets at most what is left of TOTAL_SECONDS.
total=${TOTAL_SECONDS:-440}
[[ $total =~ ^[0-9]+$ ]] || fail "TOTAL_SECONDS must be a number of seconds, not '$total'"
# At most $1 seconds, and never past the deadline less $2 seconds kept for what follows.
budget() {
    local left=$((total - SECONDS - $2))
    ((left < $1)) || left=$1
    ((left > 0)) || left=0
    echo "$left"
}

# `timeout 0` would mean no limit at all: a step with no time left fails instead.
run_for() {
    local seconds=$1
    shift
    if ((seconds <= 0)); then
        echo "gpu-bench.sh: no time left of TOTAL_SECONDS=$total" >&2
        return 124
    fi
    timeout --kill-after=10 "$seconds" "$@"
}

gpu_state() {
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu,driver_version --format=csv,noheader
    else
        echo "(no nvidia-smi on this machine)"
    fi
}

if ((dry_run)); then
    device=cpu
    # One process, one thread: at this size a CPU run spends its time starting processes and
    # waiting for threads. The GPU run gives each configuration a fresh process.
    size=(--repeat 1 --warmup 0 --meta-batch 2 --threads 1 --in-process)
    omniglot_steps=1
    sinusoid_steps=1
    # mamlbook:loop and :folded stand for every strategy here; fp32 and bf16 as on the GPU.
    impls=mamlbook:loop,mamlbook:folded
    echo "== dry run: the pipeline on the CPU at a tiny size, into $out_dir"
else
    device=cuda
    size=()
    omniglot_steps=1
    sinusoid_steps=1,5
    # `mamlbook` expands to every strategy the model allows: on Conv4 that leaves vmap out, because
    # torch.func's second-order gradient through batch norm is wrong (mamlbook.engine.verified).
    impls=mamlbook
fi

echo "== machine"
gpu_state
"$PY" - "$device" <<'EOF' || fail "$PY has no torch, or torch sees no CUDA device here (--dry-run tries the pipeline on the CPU)"
import sys

import torch

gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print("python", sys.version.split()[0], "torch", torch.__version__, gpu)
sys.exit(sys.argv[1] == "cuda" and not torch.cuda.is_available())
EOF

if ((dry_run)); then
    echo "== float64 device check: skipped in a dry run (the tests check the strategies on the CPU)"
else
    echo "== float64 device check: every strategy's meta-gradient against the loop on $device"
    [[ -n ${MAMLBOOK_DATA:-} && -d ${MAMLBOOK_DATA:-}/omniglot ]] \
        || fail "no Omniglot for the device check: set MAMLBOOK_DATA to a folder holding omniglot/ (or put it in .gpudata/omniglot/)"
    seconds=$(budget 120 300)
    status=0
    run_for "$seconds" "$PY" scripts/device_check.py "$device" || status=$?
    if ((status == 124 || status == 137)); then
        echo "gpu-bench.sh: the float64 device check ran past ${seconds}s: no benchmark" >&2
        exit 1
    elif ((status != 0)); then
        echo "gpu-bench.sh: the float64 device check failed (exit $status): no benchmark" >&2
        exit 1
    fi
fi

peers=()
missing=()
for peer in learn2learn higher torchopt; do
    # learn2learn's import prints gym's deprecation banner; only whether it imports matters here.
    if "$PY" -c "import $peer" >/dev/null 2>&1; then
        peers+=("$peer")
    else
        missing+=("$peer")
    fi
done
for peer in "${peers[@]}"; do
    impls+=,$peer
done
echo "== peers: ${peers[*]:-none}${missing[*]:+ (left out, they do not import: ${missing[*]})}"

# One `mamlbook bench` per problem (their inner steps differ), each in its own file under $parts.
failed=()
bench() {
    local problem=$1 steps=$2 seconds=$3
    echo "== $problem: steps $steps, $impls, fp32 and bf16, on $device (at most ${seconds}s)"
    if ! run_for "$seconds" "$PY" -m mamlbook bench --problems "$problem" --steps "$steps" \
        --impls "$impls" --precision fp32,bf16 --device "$device" "${size[@]}" --json "$parts/$problem.json"; then
        echo "gpu-bench.sh: the $problem benchmark failed or ran past ${seconds}s" >&2
        failed+=("$problem")
    fi
}
bench omniglot-5w1s "$omniglot_steps" "$(budget 170 200)"
bench sinusoid "$sinusoid_steps" "$(budget 400 15)"

echo "== after"
gpu_state

shopt -s nullglob
written=("$parts"/*.json)
((${#written[@]})) || fail "no benchmark finished: no $result"
# Both problems into one typed file; both runs measured the same machine's matrix-product peak, the
# first one's is kept. Reading the file back through read_rows checks every row's fields.
"$PY" - "$result" "${written[@]}" <<'EOF'
import sys

from mamlbook.bench.records import BenchResults
from mamlbook.bench.runner import format_table, read_rows
from mamlbook.records import read_record, write_record

result, *parts = sys.argv[1:]
runs = [read_record(BenchResults, part) for part in parts]
write_record(BenchResults(rows=[row for run in runs for row in run.rows], peak_gflops=runs[0].peak_gflops), result, indent=2)
print(format_table(read_rows(result)))
EOF

echo "wrote $result (log: $out_dir/bench-gpu.log)"
if [[ $out_dir != "$repo/book/results" ]]; then
    echo "to put it in the book: cp $result book/results/"
fi
if ((${#failed[@]})); then
    echo "gpu-bench.sh: incomplete, no rows for: ${failed[*]}" >&2
    exit 1
fi
echo "done in ${SECONDS}s"
