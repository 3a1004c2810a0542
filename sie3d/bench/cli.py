"""``sie3d bench cli``: how soon the command line answers, ``sie3d --help`` and ``sie3d view RUN``.

Every measurement is a fresh ``python -m sie3d ...`` process run with its working directory at a
checkout (``--repo``, repeatable: the checkouts are timed side by side, interleaved), so ``sie3d``
resolves to that checkout. Cases:

* ``help``: ``sie3d --help`` until the process exits;
* ``view``: ``sie3d view RUN --no-browser --port 0`` until it prints its URL (the server is listening
  then); it is then stopped with Ctrl-C (SIGINT), so it removes its temporary folder.

``first`` is the first run of a case in a fresh process for that checkout (the OS file cache is as
the machine left it: dropping it needs root); ``repeated`` is the median (min, max) of ``--repeats``
further runs. Wall seconds; the load average is printed beside them, the machine may be shared.
``RUN`` defaults to a synthetic finished run (seeded random splats as ``avatar.spz`` and a
``config.yaml``) in a temporary folder.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DESCRIPTION = "CLI start-up: wall seconds of `sie3d --help` and `sie3d view RUN` until it serves, first and repeated"


def add_arguments(parser) -> None:
    parser.add_argument("--run", metavar="RUN", help="run directory or .spz/.ply to view (default: a synthetic run)")
    parser.add_argument("--repo", action="append", metavar="DIR",
                        help="checkout to time (repeatable; default: the one sie3d is imported from)")
    parser.add_argument("--python", default=sys.executable, help="interpreter (default: this one)")
    parser.add_argument("--repeats", type=int, default=5, help="runs after the first (median kept)")


def synthetic_run(root: Path) -> Path:
    """A finished-looking run directory under ``root``: ``avatar.spz`` (2,000 seeded random splats)
    and a ``config.yaml`` with the frontal camera."""
    import torch

    from ..avatar.spz import save_spz
    from ..render.splats import random_splats

    run = root / "run"
    save_spz(random_splats(2000, torch.Generator().manual_seed(0), center=(0.0, 0.0, 0.0)), run / "avatar.spz")
    (run / "config.yaml").write_text("cameras:\n  eval_radius: 3.25\n")
    return run


def time_help(python: str, repo: Path) -> float:
    """Wall seconds of ``python -m sie3d --help`` in ``repo``."""
    start = time.perf_counter()
    done = subprocess.run([python, "-m", "sie3d", "--help"], cwd=repo, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"sie3d --help in {repo} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return seconds


def time_view(python: str, repo: Path, run: Path) -> float:
    """Wall seconds until ``python -m sie3d view RUN --no-browser --port 0`` in ``repo`` prints its URL."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    # a shell's background job starts with SIGINT ignored, and Python then installs no Ctrl-C handler: restore it
    proc = subprocess.Popen([python, "-m", "sie3d", "view", str(run), "--no-browser", "--port", "0"], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        seconds = time.perf_counter() - start
        if "http://" not in line:  # it may still be serving: stop it, then say what it printed
            proc.kill()
            out, err = proc.communicate(timeout=30)
            raise RuntimeError(f"sie3d view in {repo} printed no URL first: {(line + out + err).strip()[-800:]}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
    return seconds


def run(args) -> int:
    repos = [Path(r).resolve() for r in args.repo or [Path(__file__).resolve().parents[2]]]
    with tempfile.TemporaryDirectory(prefix="sie3d-bench-cli-") as tmp:
        target = Path(args.run) if args.run else synthetic_run(Path(tmp))
        cases = {"help": lambda repo: time_help(args.python, repo),
                 "view": lambda repo: time_view(args.python, repo, target)}
        print(f"load average (1, 5, 15 min) before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
              f"view target: {target}")
        times = {(case, repo): [] for case in cases for repo in repos}
        for _ in range(1 + args.repeats):
            for case, measure in cases.items():
                for repo in repos:
                    times[case, repo].append(measure(repo))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'case':6} {'first (s)':>10} {'repeated median (min..max) s':>30}  checkout")
    for (case, repo), seconds in times.items():
        rest = seconds[1:] or seconds
        print(f"{case:6} {seconds[0]:10.2f} {statistics.median(rest):12.2f} ({min(rest):.2f}..{max(rest):.2f})"
              f"{'':6}  {repo}")
    return 0
