#!/usr/bin/env bash
# The paper path on one CUDA GPU, from a bare machine that reaches no network (issue 23), in one go:
#   1. installs the carried Python 3.12 wheels and this package (it must install and import there),
#   2. JIT-builds gsplat, 3. runs the CUDA-only tests, 4. generates an avatar with params/paper.yaml and
#   synthetic full-size weights through the real loaders, and evaluates it, 5. runs the paper benchmark
#   (plain against fast settings, wall clock; then the per-part breakdown under launch blocking),
#   and prints one summary line. Logs and JSON land in $OUT (default /tmp/sie3d-gpu-check).
# Prepare .gpu/ first, here: benchmarks/gpu_carry.sh. About 7-8 minutes on an H200.
#   usage: benchmarks/gpu_check.sh [ITERATIONS_OF_THE_AVATAR (20)] [TIMED_BENCH_ITERATIONS (8)]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/sie3d-gpu-check}
AVATAR_ITERATIONS=${1:-20}
BENCH_ITERATIONS=${2:-8}
PY=${PY:-python3}
SITE=/tmp/sie3d-site
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 SIE3D_HOME=$PWD/.gpu/home
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
export MPLCONFIGDIR=/tmp/sie3d-mpl
declare -A STATUS SECONDS_OF
t0=$(date +%s)

stage() {  # stage NAME COMMAND...: run, log to $OUT/NAME.log, record pass/FAIL and seconds
    local name=$1; shift
    local start=$(date +%s)
    echo "=== $name: $*"
    if "$@" > "$OUT/$name.log" 2>&1; then STATUS[$name]=pass; else STATUS[$name]=FAIL; fi
    SECONDS_OF[$name]=$(( $(date +%s) - start ))
    tail -n ${TAIL_LINES:-25} "$OUT/$name.log"
    echo "=== $name: ${STATUS[$name]} in ${SECONDS_OF[$name]} s"
}

install() {
    "$PY" --version && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .gpu/wheels/*.whl
    mkdir -p "$SITE/face_recognition_models/models"  # dlib's model files where their package keeps them
    echo '"""dlib models (5-point, descriptor) carried by benchmarks/gpu_carry.sh."""' \
        > "$SITE/face_recognition_models/__init__.py"
    for f in .gpu/dlib/*.xz; do xz -dc "$f" > "$SITE/face_recognition_models/models/$(basename "$f" .xz)"; done
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$SITE" . || return 1
    (cd /tmp && PYTHONPATH=$SITE "$PY" -c "import sie3d, sie3d.cli, torch; print('sie3d', sie3d.__file__, 'torch', torch.__version__, torch.cuda.get_device_name())")
}

build_gsplat() {
    "$PY" - <<'EOF'
import time, torch
from gsplat.rendering import rasterization
tick = time.perf_counter()
means = torch.randn(64, 3, device="cuda") * 0.1 + torch.tensor([0, 0, 3.0], device="cuda")
quats = torch.nn.functional.normalize(torch.randn(64, 4, device="cuda"), dim=-1)
viewmats, K = torch.eye(4, device="cuda")[None], torch.tensor([[[50.0, 0, 32], [0, 50.0, 32], [0, 0, 1]]], device="cuda")
rgb, alpha, _ = rasterization(means, quats, torch.full((64, 3), 0.05, device="cuda"), torch.ones(64, device="cuda"),
                              torch.rand(64, 3, device="cuda"), viewmats, K, 64, 64)
torch.cuda.synchronize()
print(f"gsplat built and rasterised {tuple(rgb.shape)} in {time.perf_counter() - tick:.0f} s")
EOF
}

cuda_tests() {
    "$PY" -m pytest -o addopts="" -p no:cacheprovider -q -ra --durations=8 -m gpu \
        tests/test_device_clean.py tests/test_prior.py tests/test_lora.py tests/test_rasterize.py tests/test_runtime.py
}

paper_avatar() {
    "$PY" -c "import imageio.v3 as iio, skimage.data as d; iio.imwrite('$OUT/astronaut.png', d.astronaut())"
    rm -rf "$OUT/paper_run"
    "$PY" -m sie3d generate "$OUT/astronaut.png" --params params/paper.yaml --synthetic-weights --workdir /tmp \
        --expression surprise --set train.iterations="$AVATAR_ITERATIONS" --set train.checkpoint_every=10 \
        --set models.landmarks=mediapipe --out "$OUT/paper_run" || return 1
    ls -la "$OUT/paper_run"
}

evaluate_avatar() {  # SFace's OpenCV DNN graph fails under OpenCV 5.0 (what the H200 image has): dlib judges ID
    "$PY" -m sie3d evaluate "$OUT/paper_run" --out "$OUT/paper_eval" --features dlib --identity dlib --device cuda && cat "$OUT/paper_eval/metrics.md"
}

bench() {
    "$PY" -m sie3d bench generate --iterations "$BENCH_ITERATIONS" --warmup 2 --paper-only --paper \
        --paper-set models.landmarks=mediapipe --json "$OUT/bench_paper.json"
}

breakdown() {
    "$PY" -m sie3d bench generate --iterations "$BENCH_ITERATIONS" --warmup 2 --paper-only --paper-breakdown \
        --paper-set models.landmarks=mediapipe --json "$OUT/bench_breakdown.json"
}

stage install install
export PYTHONPATH=$PWD:$SITE  # the checkout first: its params/ and tests/ sit beside the package
stage gsplat build_gsplat
TAIL_LINES=40 stage cuda_tests cuda_tests
stage paper_avatar paper_avatar
stage evaluate evaluate_avatar
TAIL_LINES=20 stage bench bench
TAIL_LINES=20 stage breakdown breakdown

summary=$("$PY" - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
parts = []
try:
    rows = json.loads((out / "bench_paper.json").read_text())["paper_speed"]
    for r in rows:
        if "error" in r:
            parts.append(f"{r['setting']} failed")
            continue
        same = "" if r["setting"] == "plain" else f" ({'same' if r['agrees'] else 'DIFFERENT'} step)"
        parts.append(f"{r['setting']} {r['ms_per_iteration']:.0f} ms/it {r['peak_gib']:.1f} GiB{same}")
except (OSError, KeyError, ValueError) as exc:
    parts.append(f"bench: {exc}")
try:
    s = json.loads((out / "paper_run" / "summary.json").read_text())
    parts.append(f"avatar {s.get('seconds_per_iteration', 0) * 1e3:.0f} ms/it")
except (OSError, ValueError, TypeError) as exc:
    parts.append(f"avatar: {exc}")
print("; ".join(parts))
EOF
)
stages=""
for name in install gsplat cuda_tests paper_avatar evaluate bench breakdown; do
    stages+="$name=${STATUS[$name]}(${SECONDS_OF[$name]}s) "
done
echo "GPU CHECK: ${stages}total=$(( $(date +%s) - t0 ))s | $summary"
for name in install gsplat cuda_tests paper_avatar evaluate bench breakdown; do
    [ "${STATUS[$name]}" = pass ] || exit 1
done
