"""The one grid runner: every grid of avatars (``sie3d batch``, ``sie3d ablations``, η sweeps of
``sie3d generate``, the notebooks' grids) runs here, on Ray or serially in this process.

Callers build the cells (:class:`sie3d.batch.manifest.BatchRun`) and call :func:`run_batch`. Whether a
run directory is finished, and may be reused for a cell's config, is :func:`sie3d.run_dir.reuse_for`'s
call: a finished run made with the params asked for now is skipped, one made with other params stops
the batch before any work (a table must not mix them). Every other listed run is given to a worker,
resuming when it has checkpoints. A run that returns without finishing, or raises, is recorded as
failed with its error and the others go on; a Ray worker that dies is replaced.
A stopped batch (Ctrl-C ends the workers with it) resumes each unfinished run from its newest
periodic checkpoint when started again; the run-directory locks of the ended workers are stale and
taken over.

``serial=True`` runs the cells one after the other in this process with one
:class:`sie3d.runtime.ModelCache` (no Ray; the caller's ``log`` also gets every run's lines). Otherwise
workers are Ray actors (``num_cpus=cpus_per_run``, ``num_gpus=gpus_per_run`` when the cluster has
GPUs; torch uses ``cpus_per_run`` threads). Each keeps a :class:`sie3d.runtime.ModelCache`, so the
prior, text encoders and classifiers are built once per worker, not once per run. Each run's log
lines go to ``<run>/batch.log``; ``<out>/batch.json`` lists every run's outcome.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
import traceback
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..run_dir import MANIFEST_FILE, SUMMARY_FILE, StaleRunError, is_finished, read_config, reuse_for, run_status
from ..runtime import ModelCache, write_json_atomic
from .manifest import BatchRun

RUN_LOG = "batch.log"
BATCH_JSON = "batch.json"
EVALUATION_DIR = "evaluation"

#: run_fn(run, config, resume, models, log): builds one run directory (raises on failure)
RunFn = Callable[..., Any]
#: evaluate_fn(run_dirs, out_dir): combined tables over the finished runs
EvaluateFn = Callable[[list[Path], Path], Any]


class BatchError(ValueError):
    """The batch cannot start (e.g. finished runs made with other params); nothing was run."""


@dataclass
class Outcome:
    """What happened to one run: ``skipped`` | ``generated`` | ``resumed`` | ``failed``."""

    name: str
    run_dir: str
    status: str
    seconds: float = 0.0
    error: str | None = None
    worker: str | None = None  # "pid@host"
    models_built: dict[str, float] = field(default_factory=dict)  # model -> build seconds, in this run


@dataclass
class BatchResult:
    outcomes: list[Outcome]
    wall_seconds: float
    ray_start_seconds: float
    evaluation: Any = None

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def raise_for_failures(self) -> None:
        """Raise :class:`BatchError` naming every failed run and its error (for callers that need all runs)."""
        if self.failed:
            raise BatchError("; ".join(f"{o.name}: {o.error}" for o in self.failed))


def generate_run(run: BatchRun, config, resume: bool, models: ModelCache, log: Callable[[str], None]) -> None:
    """The real work of one cell: :func:`sie3d.generate.generate` with the worker's models."""
    from ..generate import generate

    generate(list(run.person.photos), config, run.run_dir, resume=resume, extra_manifest=run.info(),
             log=log, models=models)


def evaluate_grid(run_dirs: list[Path], out_dir: Path) -> Any:
    """``sie3d evaluate`` over the finished runs, with the first run's ``eval`` settings."""
    from ..evaluation.evaluate import evaluate_runs
    from ..evaluation.evaluator import Evaluator

    config = read_config(run_dirs[0])
    return evaluate_runs(run_dirs, out_dir, evaluator=Evaluator.from_config(config, device=config.run.device))


class Worker:
    """Body of the Ray actor (and of the serial runner): runs cells one at a time, keeping its
    :class:`ModelCache`. ``threads``: torch threads per run (None: leave them); ``echo``: also gets
    every line written to a run's log."""

    def __init__(self, run_fn: RunFn, threads: int | None, echo: Callable[[str], None] | None = None):
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # read when torch is first imported
            if threads is not None:
                os.environ[name] = str(threads)
        self.threads = threads
        self.echo = echo
        self.run_fn = run_fn
        self.models = ModelCache()
        self.name = f"{os.getpid()}@{platform.node()}"

    def run(self, run: BatchRun, config, resume: bool) -> Outcome:
        start = time.perf_counter()
        before = set(self.models.builds)
        run.run_dir.mkdir(parents=True, exist_ok=True)
        with (run.run_dir / RUN_LOG).open("a") as handle:
            def log(line: str) -> None:
                handle.write(line + "\n")
                handle.flush()
                if self.echo is not None:
                    self.echo(line)

            handle.write(f"[batch] {time.strftime('%Y-%m-%d %H:%M:%S')} worker {self.name}, resume={resume}\n")
            status, error = ("resumed" if resume else "generated"), None
            try:
                if "torch" in sys.modules and self.threads is not None:
                    sys.modules["torch"].set_num_threads(self.threads)
                self.run_fn(run, config, resume, self.models, log)
                if not is_finished(run.run_dir):
                    raise RuntimeError(f"the run returned unfinished (status {run_status(run.run_dir)!r}, not "
                                       f"'finished': its {MANIFEST_FILE} must say so and {SUMMARY_FILE} exist)")
            except Exception as exc:  # reported in the outcome; the batch goes on
                handle.write(traceback.format_exc())  # the outcome carries the one-line error
                status, error = "failed", f"{type(exc).__name__}: {exc}"
        built = {str(k): s for k, s in self.models.builds.items() if k not in before}
        return Outcome(run.name, str(run.run_dir), status, time.perf_counter() - start, error, self.name, built)


def plan(runs: Sequence[BatchRun], replace_stale: bool = False
         ) -> tuple[list[Outcome], list[tuple[BatchRun, Any, bool]]]:
    """Skipped outcomes and the runs to do, with their resolved config and resume flag (the config is
    resolved here, so a worker need not import the pipeline before its run needs it).

    Args:
        replace_stale: delete finished runs made with other params and make them again (the book's
            notebooks, whose preset may have been edited) instead of refusing the batch.

    Raises:
        BatchError: finished runs whose params hash differs from the one asked for now (all listed),
            unless ``replace_stale``.
    """
    skipped, todo, stale = [], [], []
    for run in runs:
        config = run.config()
        try:
            reuse = reuse_for(run.run_dir, config)
        except StaleRunError as exc:
            if not replace_stale:
                stale.append(str(exc))
                continue
            shutil.rmtree(run.run_dir)
            reuse = "new"
        if reuse == "done":
            skipped.append(Outcome(run.name, str(run.run_dir), "skipped"))
        else:
            todo.append((run, config, reuse == "resume"))
    if stale:
        raise BatchError(f"{len(stale)} finished run(s) were generated with other params than asked for now: "
                         + "; ".join(stale))
    return skipped, todo


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the cluster at ``address`` or start a local one; False when Ray was already initialised."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports leave this machine
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:  # a new private local cluster ("local": never one that `ray start` left running here)
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1")
    return True


def run_batch(runs: Sequence[BatchRun], out: str | Path, address: str | None = None, gpus_per_run: float = 1,
              cpus_per_run: float = 1, workers: int | None = None, run_fn: RunFn = generate_run,
              evaluate_fn: EvaluateFn | None = evaluate_grid, progress: bool = True,
              log: Callable[[str], None] = print, replace_stale: bool = False, serial: bool = False) -> BatchResult:
    """Run every cell not yet finished (on Ray, or one after the other here), then evaluate the
    finished ones into ``out/evaluation``.

    Args:
        runs: the grid (:meth:`sie3d.batch.manifest.BatchSpec.runs`).
        out: the batch root (``batch.json``, ``evaluation/``).
        address: ``auto``, ``ray://HOST:PORT`` or ``HOST:PORT`` of a running cluster; None starts a
            local one (all cores) and stops it at the end. A session already open in this process is used.
        gpus_per_run, cpus_per_run: Ray resources of one worker (GPUs only when the cluster has them).
        workers: concurrent workers (default: as many as the cluster's resources fit).
        run_fn: the work of one cell (default :func:`generate_run`; tests pass a fake).
        evaluate_fn: combined evaluation over the finished runs (None: skip).
        replace_stale: remake finished runs made with other params instead of refusing (see :func:`plan`).
        serial: run the cells in this process, in order, without Ray (``address``, ``gpus_per_run``,
            ``cpus_per_run`` and ``workers`` are then unused; ``log`` gets each run's lines too).

    Raises:
        BatchError: finished runs made with other params (before any work; see :func:`plan`).
    """
    start = time.perf_counter()
    out = Path(out)
    outcomes, todo = plan(runs, replace_stale)
    ray_seconds = 0.0
    started = False
    if todo and not serial:
        tick = time.perf_counter()
        started = connect(address)
        ray_seconds = time.perf_counter() - tick
    try:
        if todo and serial:
            outcomes += _execute_serial(todo, run_fn, log)
        elif todo:
            outcomes += _execute(todo, gpus_per_run, cpus_per_run, workers, run_fn, len(runs), len(outcomes),
                                 progress, log)
    finally:
        if started:
            import ray

            ray.shutdown()
    order = {run.name: i for i, run in enumerate(runs)}
    outcomes.sort(key=lambda o: order[o.name])
    for outcome in outcomes:
        if outcome.status == "failed":
            log(f"[batch] FAILED {outcome.name}: {outcome.error} (log: {Path(outcome.run_dir) / RUN_LOG})")
    evaluation = None
    finished = [Path(o.run_dir) for o in outcomes if o.status != "failed" and is_finished(Path(o.run_dir))]
    if evaluate_fn is not None and finished:
        evaluation = evaluate_fn(finished, out / EVALUATION_DIR)
    result = BatchResult(outcomes, time.perf_counter() - start, ray_seconds, evaluation)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / BATCH_JSON, {"wall_seconds": result.wall_seconds, "ray_start_seconds": ray_seconds,
                                         "runs": [asdict(o) for o in outcomes]})
    log(f"[batch] {len(runs)} runs: {result.count('generated')} generated, {result.count('resumed')} resumed, "
        f"{result.count('skipped')} skipped, {result.count('failed')} failed in {result.wall_seconds:.0f} s "
        f"(Ray start {ray_seconds:.1f} s)")
    return result


def _execute_serial(todo: list[tuple[BatchRun, Any, bool]], run_fn: RunFn,
                    log: Callable[[str], None]) -> list[Outcome]:
    """The cells one after the other in this process, with one model cache for all of them."""
    worker, outcomes = Worker(run_fn, threads=None, echo=log), []
    for run, config, resume in todo:
        log(f"[batch] generating {run.name}" + (" (resuming)" if resume else ""))
        outcomes.append(worker.run(run, config, resume))
    return outcomes


def _execute(todo: list[tuple[BatchRun, Any, bool]], gpus_per_run: float, cpus_per_run: float, workers: int | None,
             run_fn: RunFn, total: int, done: int, progress: bool, log: Callable[[str], None]) -> list[Outcome]:
    import ray
    from tqdm.auto import tqdm

    resources = ray.cluster_resources()
    gpus = gpus_per_run if resources.get("GPU", 0) >= gpus_per_run > 0 else 0
    fit = int(resources.get("CPU", 1) // cpus_per_run) if cpus_per_run else len(todo)
    if gpus:
        fit = min(fit, int(resources["GPU"] // gpus))
    count = max(1, min(len(todo), workers or fit, fit))
    actor = ray.remote(Worker).options(num_cpus=cpus_per_run, num_gpus=gpus)
    threads = max(1, int(cpus_per_run))
    log(f"[batch] {len(todo)} run(s) to do on {count} worker(s) ({cpus_per_run} CPU"
        + (f", {gpus} GPU" if gpus else "") + " each)")

    pending = deque(todo)
    inflight: dict[Any, tuple[Any, BatchRun]] = {}
    outcomes: list[Outcome] = []

    workers_started: list[Any] = []

    def start_worker():
        workers_started.append(actor.remote(run_fn, threads))
        return workers_started[-1]

    def submit(worker) -> None:
        run, config, resume = pending.popleft()
        inflight[worker.run.remote(run, config, resume)] = (worker, run)

    bar = tqdm(total=total, initial=done, desc="batch", unit="run", disable=not progress)
    try:
        for _ in range(count):
            submit(start_worker())
        while inflight:
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            worker, run = inflight.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as exc:  # the worker process died (memory, signal...)
                outcome = Outcome(run.name, str(run.run_dir), "failed",
                                  error=f"worker died: {str(exc).splitlines()[0]}")
                ray.kill(worker)
                worker = start_worker()
            outcomes.append(outcome)
            bar.update(1)
            bar.set_postfix(failed=sum(o.status == "failed" for o in outcomes))
            if pending:
                submit(worker)
    finally:
        bar.close()
        for worker in workers_started:  # free their resources now, not when Ray collects the handles
            ray.kill(worker)
    return outcomes
