#!/usr/bin/env python
"""Convert aiSFX's pickled checkpoint (shipped in the `aisfx` wheel) to safetensors, once, at install time.

    python training/convert_aisfx.py [--output PATH]     # default: $DIFFUSION_LINK_CACHE/aisfx/embedding_net.safetensors

The checkpoint is a pickle of `(state_dict, ds_dict)`. It is read with `torch.load(weights_only=True)` (PyTorch's
restricted unpickler) and an allowlist of exactly the two numpy types it holds, so no code in it can run. Only the
embedding network is kept (the dataset classifier heads are dropped). The library never unpickles: it reads the
safetensors file this writes. `make test` and `make demo` run this step.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from safetensors.torch import save_file

from diffusion_link.experiments.atomic_files import atomic_path
from diffusion_link.hub.references import cache_dir, package_path


def convert(output: str) -> str:
    source = package_path("aisfx", "models/checkpoint.pth")
    allow = [(np._core.multiarray.scalar, "numpy.core.multiarray.scalar"), np.dtype,
             (type(np.dtype("int64")), "numpy.dtypes.Int64DType")]
    with torch.serialization.safe_globals(allow):
        state, _datasets = torch.load(source, map_location="cpu", weights_only=True)
    prefix = "embedding_net."
    weights = {k[len(prefix):]: v.contiguous() for k, v in state.items() if k.startswith(prefix)}
    if len(weights) != 48:  # 4 blocks x (2 convs + 2 batch norms x 5 tensors)
        raise ValueError(f"{source}: expected aiSFX's 48 embedding-net tensors, found {len(weights)}.")
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with atomic_path(output) as tmp:
        save_file(weights, tmp, metadata={"source": "aisfx 0.1.2 models/checkpoint.pth (embedding_net)"})
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=os.path.join(cache_dir(), "aisfx", "embedding_net.safetensors"))
    parser.add_argument("--force", action="store_true", help="Convert again even if the output exists.")
    args = parser.parse_args()
    if os.path.exists(args.output) and not args.force:
        print(f"aiSFX weights already converted: {args.output}")
        return
    print(f"converted aiSFX weights to {convert(args.output)}")


if __name__ == "__main__":
    main()
