"""aiSFX's pickled checkpoint (shipped in the `aisfx` wheel) read without running its code, and saved as safetensors.

The checkpoint is a pickle of `(state_dict, ds_dict)`. `read_embedding_net` reads it with
`torch.load(weights_only=True)` (PyTorch's restricted unpickler) and an allowlist of exactly the numpy types it
holds; a pickle naming any other global is refused (`ValueError` naming the file), so nothing in it can run. Only the
embedding network is kept (the dataset classifier heads are dropped). The library itself never unpickles: it reads
the safetensors file `convert` writes, once, from `diffusion-link setup-starter`.
"""

from __future__ import annotations

import os
import pickle


AISFX_CHECKPOINT = "models/checkpoint.pth"  # inside the installed `aisfx` package
AISFX_WEIGHTS = "aisfx/embedding_net.safetensors"  # inside the cache; the starter's configs say `cache:` + this
EMBEDDING_NET_TENSORS = 48  # 4 blocks x (2 convs + 2 batch norms x 5 tensors)


def _numpy_globals() -> list:
    """The only globals the checkpoint's pickle may name: numpy's scalar reconstructor and two dtype classes."""
    import numpy as np

    scalar = np._core.multiarray.scalar  # named `numpy.core...` by the numpy 1 that pickled aiSFX's checkpoint
    return [(scalar, "numpy.core.multiarray.scalar"), scalar, np.dtype,
            (type(np.dtype("int64")), "numpy.dtypes.Int64DType")]


def read_embedding_net(source: str) -> dict:
    """The 48 embedding-net tensors of an aiSFX checkpoint, read by the restricted unpickler."""
    import torch

    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            loaded = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = next((line.strip() for line in str(err).splitlines() if "Unsupported" in line), "not allowed")
        raise ValueError(f"{source}: refused to read this checkpoint, it names objects outside the allowed numpy "
                         f"types ({reason})") from None
    if not (isinstance(loaded, (tuple, list)) and len(loaded) == 2 and isinstance(loaded[0], dict)):
        raise ValueError(f"{source}: expected aiSFX's (state_dict, datasets) pair, found {type(loaded).__name__}.")
    prefix = "embedding_net."
    weights = {k[len(prefix):]: v.contiguous() for k, v in loaded[0].items() if k.startswith(prefix)}
    if len(weights) != EMBEDDING_NET_TENSORS:
        raise ValueError(f"{source}: expected aiSFX's {EMBEDDING_NET_TENSORS} embedding-net tensors, found "
                         f"{len(weights)}.")
    return weights


def convert(output: str, source: str | None = None) -> str:
    """Write the embedding net of `source` (default: the installed aisfx wheel's checkpoint) to `output`."""
    from safetensors.torch import save_file

    from diffusion_link.experiments.atomic_files import atomic_path
    from diffusion_link.hub.references import package_path

    source = source or package_path("aisfx", AISFX_CHECKPOINT)
    weights = read_embedding_net(source)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with atomic_path(output) as tmp:
        save_file(weights, tmp, metadata={"source": "aisfx 0.1.2 models/checkpoint.pth (embedding_net)"})
    return output
