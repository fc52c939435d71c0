"""Ray backend shared by `dasbi simulate` and `dasbi infer`: keyed tasks, a bounded queue."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import NotAvailableError

__all__ = ["ray_imap"]


def ray_imap(
    fn: Callable[..., Any],
    jobs: Iterable[tuple[Any, tuple[Any, ...]]],
    *,
    workers: int,
    address: str | None = None,
    cpus_per_task: int = 1,
) -> Iterator[tuple[Any, Any]]:
    """Run ``fn(*args)`` for each ``(key, args)`` on Ray; yields ``(key, result)`` as done.

    Starts a local Ray instance with ``workers × cpus_per_task`` CPUs unless one is running
    or ``address`` names a cluster, and keeps at most ``2 × workers`` tasks in flight;
    ``jobs`` is consumed lazily, so a generator keeps only those in memory.
    """
    try:
        import ray
    except ImportError:
        raise NotAvailableError(
            "backend 'ray' needs Ray: pip install 'dasbi[distributed]'"
        ) from None
    if not ray.is_initialized():
        ray.init(
            address=address,
            num_cpus=None if address else workers * cpus_per_task,
            include_dashboard=False,
            log_to_driver=False,
        )
    task = ray.remote(num_cpus=cpus_per_task)(fn)
    in_flight: dict[Any, Any] = {}
    queue = iter(jobs)
    exhausted = False
    while True:
        while not exhausted and len(in_flight) < 2 * workers:
            job = next(queue, None)
            if job is None:
                exhausted = True
                break
            key, args = job
            in_flight[task.remote(*args)] = key
        if not in_flight:
            return
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in ready:
            yield in_flight.pop(ref), ray.get(ref)
