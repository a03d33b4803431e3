"""`stage(name)`: a build stage that logs its start and its wall time."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import TypeVar


logger = logging.getLogger("build_starter")

F = TypeVar("F", bound=Callable)


def stage(name: str) -> Callable[[F], F]:
    """Decorate a stage function so that each call logs "stage NAME: start" and its time when done."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            start = time.time()
            logger.info("stage %s: start", name)
            out = fn(*args, **kwargs)
            logger.info("stage %s: done in %.1f s", name, time.time() - start)
            return out

        return run  # type: ignore[return-value]

    return wrap
