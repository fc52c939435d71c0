"""Ray backend shared by `dasbi simulate` and `dasbi infer`: keyed tasks, a bounded queue."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .errors import NotAvailableError

__all__ = ["ray_imap"]


def ray_imap(
    fn: Callable[..., Any],
    jobs: Sequence[tuple[Any, tuple[Any, ...]]],
    *,
    workers: int,
    address: str | None = None,
    cpus_per_task: int = 1,
) -> Iterator[tuple[Any, Any]]:
    """Run ``fn(*args)`` for each ``(key, args)`` on Ray; yields ``(key, result)`` as done.

    Starts a local Ray instance with ``workers × cpus_per_task`` CPUs unless one is running
    or ``address`` names a cluster, and keeps at most ``2 × workers`` tasks in flight.
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
    queue = list(jobs)
    while queue or in_flight:
        while queue and len(in_flight) < 2 * workers:
            key, args = queue.pop(0)
            in_flight[task.remote(*args)] = key
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in ready:
            yield in_flight.pop(ref), ray.get(ref)
