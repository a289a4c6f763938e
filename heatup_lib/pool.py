"""Independent training jobs in worker processes of one torch thread each.

On a small CPU, two processes of one thread each train small networks faster than one process
of two threads (their convolutions do not split well across threads). Workers are started with
``spawn`` (safe inside a Jupyter kernel and with CUDA); a job is a picklable callable from an
importable module and its argument. Results come back in the order of the jobs.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

from .checks import check_int

__all__ = ["run_jobs"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def _call(job: tuple[Callable[[Any], T], Any]) -> T:
    fn, arg = job
    return fn(arg)


def run_jobs(fn: Callable[[Any], T], args: Sequence[Any], processes: int = 1, threads: int = 1,
             desc: str = "runs", progress: bool = True) -> list[T]:
    """``[fn(a) for a in args]``, in ``processes`` worker processes (``processes=1``: in this process).

    Each worker uses ``threads`` torch threads. An exception in a job is raised here once the
    running jobs have stopped.
    """
    check_int("processes", processes, min_value=1)
    check_int("threads", threads, min_value=1)
    args = list(args)
    bar = tqdm(total=len(args), desc=desc, unit="run", disable=not progress)
    try:
        if processes == 1 or len(args) <= 1:
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                results = []
                for a in args:
                    results.append(fn(a))
                    bar.update(1)
                return results
            finally:
                torch.set_num_threads(before)
        context = multiprocessing.get_context("spawn")
        with context.Pool(min(processes, len(args)), initializer=_init_worker, initargs=(threads,)) as pool:
            pending = [pool.apply_async(_call, ((fn, a),)) for a in args]
            results = []
            for p in pending:
                results.append(p.get())
                bar.update(1)
            return results
    finally:
        bar.close()
