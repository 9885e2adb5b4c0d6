"""Tasks a component starts and holds until they are done.

The event loop keeps only weak references to its tasks: one that nobody holds can be
garbage-collected in mid-flight. Every component that fires work off (a session's storage
reads, MO handling, webhook deliveries, a learnt id convention being stored) keeps its tasks
here, and cancels or awaits them when it stops.
"""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, Iterator


class TaskSet:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        """Run ``coro`` as a task held until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task]:
        return iter(list(self._tasks))

    def cancel(self) -> list[asyncio.Task]:
        """Cancel every task still running; returns them, to be awaited."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        return tasks

    async def wait(self) -> None:
        """Wait until every task held now is done (their errors are theirs: not raised)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """Cancel every task and wait until they are done."""
        await asyncio.gather(*self.cancel(), return_exceptions=True)
