"""Run a function on several threads at the same moment, for race tests."""

import threading
from collections.abc import Callable, Sequence
from typing import Any

from django.db import connection


def run_at_once(function: Callable[..., Any], arguments: Sequence[Any]) -> list[Any]:
    """Call ``function(argument)`` on one thread per argument, released
    together by a barrier, and return the results in order.

    Each thread closes its own database connection. An exception on any
    thread is raised here once all have finished.
    """
    results: list[Any] = [None] * len(arguments)
    barrier = threading.Barrier(len(arguments))

    def run(index: int, argument: Any) -> None:
        try:
            barrier.wait()
            results[index] = function(argument)
        except BaseException as error:  # re-raised in the calling thread below
            results[index] = error
        finally:
            connection.close()

    threads = [
        threading.Thread(target=run, args=(index, argument))
        for index, argument in enumerate(arguments)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results
