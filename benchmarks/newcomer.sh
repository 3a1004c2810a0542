#!/usr/bin/env bash
# A newcomer's first minutes (issue 25), measured on a fresh clone of this repository:
#   setup   make models (the virtual environment and the offline models), seconds
#   test    make test: the seconds pytest reports for the tests, and the command's wall seconds
#   book    make book: wall seconds of the whole book (HTML included)
#   avatar  one quick avatar through the CLI (sie3d generate, astronaut, params/quick.yaml, seed 0):
#           wall seconds of the command and seconds of optimisation (summary.json: iterations x s/it)
# and prints each beside its target (make test <= 300 s of tests, <= 420 s in all; make book <= 480 s;
# an avatar <= 30 s of optimisation and <= 45 s wall). Timings live here, never in the tests.
#   usage: benchmarks/newcomer.sh [PART...]     PART: setup test book avatar (default: all, in that order)
#   env:   CLONE_DIR (default /tmp/sie3d-newcomer, replaced), VENV (default: the clone's own .venv, made by
#          make; point it at an existing environment to time only the parts, e.g. VENV=$PWD/.venv)
set -uo pipefail
SOURCE=$(cd "$(dirname "$0")/.." && pwd)
CLONE_DIR=${CLONE_DIR:-/tmp/sie3d-newcomer}
PARTS=("$@")
[ ${#PARTS[@]} -eq 0 ] && PARTS=(setup test book avatar)
rm -rf "$CLONE_DIR"
git clone --quiet "$SOURCE" "$CLONE_DIR" || exit 1
cd "$CLONE_DIR" || exit 1
VENV=${VENV:-.venv}
export HF_HUB_OFFLINE=1
declare -a ROWS
row() { ROWS+=("$(printf '%-34s %10s s   target %s' "$1" "$2" "$3")"); }
seconds() { local start=$1; echo $(( $(date +%s) - start )); }

for part in "${PARTS[@]}"; do
  start=$(date +%s)
  case $part in
    setup)
      make models VENV="$VENV" > setup.log 2>&1 || { tail -20 setup.log; exit 1; }
      row "set-up (make models)" "$(seconds "$start")" "(counted in make test's 420 s)" ;;
    test)
      make test VENV="$VENV" > test.log 2>&1; status=$?
      tests=$(grep -Eo ' in [0-9.]+s' test.log | tail -1 | grep -Eo '[0-9.]+')
      row "make test: the tests" "${tests:-?}" "<= 300 (exit $status)"
      row "make test: wall" "$(seconds "$start")" "<= 420" ;;
    book)
      make book VENV="$VENV" > book.log 2>&1; status=$?
      grep -E '^\[book\] [0-9].*\(' book.log | sed 's/^/    /'
      row "make book" "$(seconds "$start")" "<= 480 (exit $status)" ;;
    avatar)
      "$VENV/bin/python" -c "import skimage.data, imageio.v3 as iio; iio.imwrite('astronaut.png', skimage.data.astronaut())"
      start_ns=$(date +%s%N)
      "$VENV/bin/python" -m sie3d generate astronaut.png --expression surprise --params params/quick.yaml \
          --out runs/newcomer > avatar.log 2>&1; status=$?
      wall=$(( ($(date +%s%N) - start_ns) / 1000000 ))
      optimisation=$("$VENV/bin/python" -c "
import json; s = json.load(open('runs/newcomer/summary.json')); print(f\"{s['iterations'] * s['seconds_per_iteration']:.1f}\")" 2>/dev/null)
      row "quick avatar: optimisation" "${optimisation:-?}" "<= 30"
      row "quick avatar: sie3d generate wall" "$(printf '%d.%01d' $((wall / 1000)) $((wall % 1000 / 100)))" "<= 45 (exit $status)" ;;
    *) echo "unknown part '$part' (setup test book avatar)"; exit 2 ;;
  esac
done
echo "newcomer minutes on $(nproc) cores, $(git -C "$CLONE_DIR" rev-parse --short HEAD), $(date -u +%FT%TZ):"
printf '  %s\n' "${ROWS[@]}"
