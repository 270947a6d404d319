"""Independent jobs, run one after another or fanned out as Ray tasks.

What grows without bound in toylab is embarrassingly parallel: seeds of a zoo recipe, cells
of a superposition sweep, models x seeds of a validation. Each is a ``Job``: a module-level
function and its arguments, picklable, whose result comes back to the process that asked
for it. ``run_jobs`` runs them here, one after another, or as Ray tasks on a local cluster
or an existing one (``ray="local"`` or an address), and hands each result to ``on_result``
in this process as it arrives: a sweep writes each result the moment it lands, so a job
that fails costs only itself.

On Ray:
- a worker that dies (killed, out of memory, its node lost) has its job run again, up to
  ``retries`` times; a job that raises is not retried (toylab's jobs are deterministic: it
  would raise again) and is reported with its error;
- each task takes one CPU;
- a function from a file loaded at run time (a researcher's method) travels by value; one
  from an installed module travels by name.

Every job runs torch on one thread, here or on Ray: the thread count is among the fields that
decide a run's bits (``toylab.train.BITWISE_FIELDS``), and the zoo was built on one thread, so
a sweep gives the same bits whether it runs serially or on any number of workers.
- the nodes need toylab and torch installed at the same versions as here; results travel
  back through Ray's object store, so the nodes need not share a file system.

One progress bar counts jobs done out of the total and names the failures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

LOCAL = "local"  # ``ray=LOCAL``: start a Ray cluster on this machine (or join the one this process started)


@dataclass(frozen=True)
class Job:
    """One independent piece of work: ``fn(*args, **kwargs)`` under the name ``name``.

    ``fn`` must be importable by name where the job runs (a module-level function), and
    the arguments and result picklable.
    """

    name: str  # unique within a sweep: the progress bar and the failure report use it
    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What a sweep came to: each job's result, or why it has none."""

    results: dict[str, Any]  # job name -> result, in the order the jobs were given
    failures: dict[str, str]  # job name -> "ErrorType: message"
    seconds: float  # wall time of the whole sweep, the cluster's start included

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        done = f"{len(self.results)} of {len(self.results) + len(self.failures)} jobs done in {self.seconds:.1f} s"
        if not self.failures:
            return done
        return done + "; failed: " + "; ".join(f"{name} ({why})" for name, why in self.failures.items())


def _describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}".rstrip(": ")


class _Progress:
    """One bar over every job, whichever worker runs it; failures named as they happen."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.bar = tqdm(total=total, desc=label, unit="job", disable=not enabled, dynamic_ncols=True)
        self.failed: list[str] = []

    def done(self, name: str, failure: str | None = None) -> None:
        if failure is not None:
            self.failed.append(name)
            self.bar.write(f"failed: {name}: {failure}")
            self.bar.set_postfix_str(f"{len(self.failed)} failed")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_jobs(jobs: Sequence[Job], *, ray: str | None = None, on_result: Callable[[Job, Any], None] | None = None,
             retries: int = 2, progress: bool = True, label: str = "jobs") -> Outcome:
    """Run ``jobs`` here one after another (``ray=None``) or as Ray tasks (``ray="local"`` or
    a cluster's address: ``"auto"`` for the cluster this machine belongs to, or ``"HEAD:6379"``).

    ``on_result(job, result)`` runs in this process for each job that succeeds, as soon as
    it does (on Ray, in the order jobs finish); an exception it raises stops the sweep, since
    it means the result could not be kept. Jobs that fail are named in the outcome and the
    others go on.
    """
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"job names must be unique; repeated: {repeated}")
    if retries < 0:
        raise ValueError(f"retries is a count of further attempts, 0 or more; got {retries}")
    started = time.perf_counter()
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    bar = _Progress(len(jobs), label, progress)
    try:
        if ray is None:
            for job in jobs:
                try:
                    result = _toylab_job(job.fn, job.args, job.kwargs)
                except Exception as err:  # noqa: BLE001 - a failed job is reported; the others go on
                    failures[job.name] = _describe(err)
                    bar.done(job.name, failures[job.name])
                    continue
                if on_result is not None:
                    on_result(job, result)
                results[job.name] = result
                bar.done(job.name)
        else:
            _run_on_ray(jobs, ray, retries, on_result, results, failures, bar)
    finally:
        bar.close()
    order = {name: i for i, name in enumerate(names)}
    return Outcome(dict(sorted(results.items(), key=lambda kv: order[kv[0]])),
                   dict(sorted(failures.items(), key=lambda kv: order[kv[0]])), time.perf_counter() - started)


def _toylab_job(fn: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any]) -> Any:
    """One job, here or in a Ray worker (whose process it names: `ray::_toylab_job` in ps)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def _ship_by_value(jobs: Sequence[Job]) -> None:
    """Functions of modules a worker cannot import by name (a method file loaded at run time)
    are pickled whole; cloudpickle would otherwise send only their module's name."""
    import sys
    from importlib.machinery import PathFinder

    from ray import cloudpickle

    callables = [job.fn for job in jobs] + [a for job in jobs for a in (*job.args, *job.kwargs.values())
                                            if callable(a)]
    for module_name in {getattr(f, "__module__", None) for f in callables} - {None, "__main__"}:
        # Found on the path, not merely in sys.modules (where a file loaded at run time sits too).
        top = module_name.partition(".")[0]
        importable = top in sys.builtin_module_names or PathFinder.find_spec(top) is not None
        if module_name in sys.modules and not importable:
            cloudpickle.register_pickle_by_value(sys.modules[module_name])


def connect(address: str = LOCAL) -> None:
    """Join the Ray cluster at ``address``, or start one on this machine (``"local"``); a
    cluster this process already joined is kept."""
    try:
        import ray
    except ImportError:
        raise ImportError("Ray is not installed: pip install torch==2.13.0 -e \".[ray]\" (the pin keeps "
                          "pip from swapping torch)") from None
    if ray.is_initialized():
        return
    quiet = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address == LOCAL:
        # The object store holds only results in flight (weights of toy models: KBs to MBs);
        # Ray's default, 30% of memory, would claim gigabytes of /dev/shm for nothing.
        ray.init(object_store_memory=256 * 2**20, **quiet)
    else:
        try:
            ray.init(address=address, **quiet)
        except ConnectionError as err:
            raise ConnectionError(f"cannot reach a Ray cluster at {address!r} ({err}); start one there with `ray start "
                                  "--head`, or give no address for a cluster on this machine") from None


def _run_on_ray(jobs: Sequence[Job], address: str, retries: int, on_result, results: dict, failures: dict,
                bar: _Progress) -> None:
    connect(address)
    import ray
    from ray.exceptions import RayError, RayTaskError

    # A job that raises is not retried (it would raise again); a worker that dies is.
    _ship_by_value(jobs)
    task = ray.remote(_toylab_job).options(num_cpus=1, max_retries=retries, retry_exceptions=False)
    pending = {task.remote(job.fn, tuple(job.args), dict(job.kwargs)): job for job in jobs}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            try:
                result = ray.get(done[0])
            except RayTaskError as err:  # the job raised: report its own exception
                cause = err.as_instanceof_cause() if err.cause is None else err.cause
                failures[job.name] = _describe(cause)
            except RayError as err:  # the worker died more often than retries allow, or the node was lost
                tries = f"{retries + 1} attempt{'s' * (retries > 0)}"
                failures[job.name] = f"{type(err).__name__}: the worker running it was lost, {tries}"
            else:
                if on_result is not None:
                    on_result(job, result)
                results[job.name] = result
            bar.done(job.name, failures.get(job.name))
    finally:
        for ref in pending:  # interrupted (Ctrl-C, or on_result raised): stop what is still queued
            ray.cancel(ref, force=True)


__all__ = ["LOCAL", "Job", "Outcome", "connect", "run_jobs"]
