"""Noise seeded by content: one rule for the bridge's forward noise and the pipeline's per-window generators.

A seed made from an input's own values makes a result deterministic and independent of what else is in the batch
(`pipe([x, y])[0] == pipe(x)`), while different inputs still get independent noise. Copied next to saved models
(custom code on the Hub): imports only numpy and torch.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def content_seed(values: np.ndarray | torch.Tensor, key: bytes = b"") -> int:
    """A 63-bit seed from the float32 bytes of `values` (BLAKE2b, keyed by `key`)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to(device="cpu", dtype=torch.float32).numpy()
    data = np.ascontiguousarray(values, dtype=np.float32).tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, key=key).digest(), "little") >> 1


def content_generators(rows, key: bytes = b"") -> list[torch.Generator]:
    """One CPU `torch.Generator` per row (an embedding row or a waveform), seeded by `content_seed`."""
    return seeded_generators([content_seed(row, key) for row in rows])


def seeded_generators(seeds: list[int]) -> list[torch.Generator]:
    """Fresh CPU generators for `seeds`: each use of the same noise needs its own, from the start."""
    return [torch.Generator().manual_seed(seed) for seed in seeds]
