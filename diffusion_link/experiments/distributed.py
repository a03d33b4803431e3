"""What a script needs to know about the machine and the process group it runs in.

`accelerator_available` tells `script_arguments` whether to default `use_cpu` (so that `torchrun` processes on a
CPU-only machine really train data-parallel); `finish_distributed` ends a `torchrun` / `accelerate launch` run without
the known teardown hangs. Both are no-ops for a plain single-process run.
"""

from __future__ import annotations

import logging
import os
import sys


logger = logging.getLogger(__name__)


def accelerator_available() -> bool:
    """Whether torch sees a CUDA, XPU or MPS device."""
    import torch

    xpu = getattr(torch, "xpu", None)
    mps = getattr(torch.backends, "mps", None)
    return bool(torch.cuda.is_available() or (xpu is not None and xpu.is_available())
                or (mps is not None and mps.is_available()))


def finish_distributed(teardown_timeout: float = 120.0) -> None:
    """End a `torchrun` / `accelerate launch` run cleanly: wait for every process, then tear the process group down.

    A process that exits with its gloo group still alive can abort at interpreter shutdown ("terminate called without
    an active exception") after all its work is done, failing the whole launch. And `destroy_process_group` itself
    now and then never returns after its peers have left (pytorch/pytorch#75097; seen once here, a two-process CPU
    run stuck for minutes after writing its checkpoint). So the teardown runs in a daemon thread: past the barrier
    every process has done its work, and one whose teardown outlasts `teardown_timeout` seconds says so and exits 0.
    A no-op outside distributed runs."""
    import threading

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    torn_down = threading.Event()

    def teardown():
        dist.destroy_process_group()
        torn_down.set()

    threading.Thread(target=teardown, daemon=True, name="destroy_process_group").start()
    if not torn_down.wait(teardown_timeout):
        logger.warning("destroy_process_group did not return within %.0f s after every process finished its work "
                       "(pytorch/pytorch#75097); exiting without it.", teardown_timeout)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
