#!/usr/bin/env python
"""Speed of `DiffusionLinkBridge.link()` against the machine's own matmul speed, measured in one run.

    python benchmarks/bench_bridge.py [--batch 1024] [--dim 512] [--hidden 1024] [--steps 5] [--repeats 5]

The last line printed is one JSON object:
- `throughput`: link() embeddings per second;
- `attainable_flops`: FLOP/s of a plain fp32 matmul of the denoiser's largest shape (B x H @ H x H), best of repeats;
- `achieved_flops`: FLOP/s of link() (FLOPs counted by torch's FlopCounterMode, divided by the best time);
- `efficiency`: achieved / attainable (goal: >= 0.5). Being a ratio of two speeds taken seconds apart on the same
  machine, it does not drift with the machine's load the way absolute times do.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from diffusion_link import DiffusionLinkBridge, DiffusionLinkConfig


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(0)
    bridge = DiffusionLinkBridge(DiffusionLinkConfig(embedding_dim=args.dim, hidden_size=args.hidden)).eval()
    audio = F.normalize(torch.randn(args.batch, args.dim), dim=-1)

    def run_link():
        bridge.link(audio, num_inference_steps=args.steps)

    with FlopCounterMode(display=False) as counter:
        run_link()
    link_flops = counter.get_total_flops()
    link_time = best_time(run_link, args.repeats)

    a, b = torch.randn(args.batch, args.hidden), torch.randn(args.hidden, args.hidden)
    mm_time = best_time(lambda: [torch.mm(a, b) for _ in range(10)], args.repeats) / 10
    attainable = 2 * args.batch * args.hidden * args.hidden / mm_time

    result = {
        "throughput": args.batch / link_time,
        "attainable_flops": attainable,
        "achieved_flops": link_flops / link_time,
        "efficiency": link_flops / link_time / attainable,
        "link_seconds": link_time,
        "link_gflop": link_flops / 1e9,
        "batch": args.batch,
        "dim": args.dim,
        "hidden": args.hidden,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
