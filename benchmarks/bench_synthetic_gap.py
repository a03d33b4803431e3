#!/usr/bin/env python
"""Quality benchmark: every bridge on held-out synthetic pairs, across training-set sizes and two kinds of world.

    python benchmarks/bench_synthetic_gap.py [--sizes 250 1000 4000 16000] [--worlds distorted rotated]

For each world kind (`diffusion_link.experiments.synthetic_gap`: `distorted`, a near-identity linear distortion of the audio side;
`rotated`, a rotation of half the dimensions and a per-coordinate stretch, which a mean shift cannot undo; both
with a modality offset and a narrower, noisier audio cone) and each number N of training pairs:

1. draw N training pairs, max(2000, N) unpaired texts and 1000 held-out pairs (another seed, never used to fit or
   tune anything);
2. fit or train every method with its **default recipe**: identity; mean-shift (centroids of the training audio and
   texts); the ridge linear map (`LinearMapBridge`, penalty by leave-one-out on the training pairs); caption-memory
   projection (`CaptionMemoryBridge` over all training texts); text-only diffusion and Diffusion-Link with
   `training/train_bridge.py` and no recipe flags (Diffusion-Link then validates on 5 % of its pairs, keeps the best
   checkpoint and picks its depth on them);
3. score each on the held-out pairs: paired cosine, R@1, centroid distance (`diffusion_link.metrics.paired_figures`).

Writes `size_table.md` and `size_results.json` to `--output_dir` and prints the table. The last line printed is one
JSON object of the issue's goals, each measured in this run: Diffusion-Link's held-out paired cosine minus the best
peer's at every N >= 1000, its R@1 minus the raw audio's at every N, and whether it is never worse than the raw audio
at the smallest N (paired cosine and R@1).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import torch


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from diffusion_link import CaptionMemoryBridge, IdentityBridge, LinearMapBridge, MeanShiftBridge  # noqa: E402
from diffusion_link.experiments.embedding_files import save_embeddings  # noqa: E402
from diffusion_link.metrics import paired_figures  # noqa: E402
from diffusion_link.experiments.synthetic_gap import AUDIO_MAPS, synthetic_gap_embeddings  # noqa: E402
from training import train_bridge  # noqa: E402


COLUMNS = ("paired_cosine", "retrieval_r1", "centroid_distance")
PEERS = ("identity", "mean-shift", "linear map", "caption-memory", "text-only diffusion")
HELD_OUT = 1000


def train(kind: str, train_file: str, output_dir: str, seed: int):
    """`train_bridge.py` with its default recipe: only the data, the output folder, the seed and quiet logging."""
    argv = ["--train_file", train_file, "--output_dir", output_dir, "--bridge_type", kind, "--seed", str(seed),
            "--logging_strategy", "no", "--log_level", "error", "--disable_tqdm", "true"]
    return train_bridge.main(argv).eval()


def run_cell(world: str, num_pairs: int, args) -> dict[str, dict[str, float]]:
    """Every method trained on `num_pairs` pairs of `world`, scored on the held-out pairs."""
    train_data = synthetic_gap_embeddings(num_pairs, num_unpaired_text=max(2000, num_pairs), audio_map=world,
                                          embedding_dim=args.dim, seed=args.seed)
    held_out = synthetic_gap_embeddings(HELD_OUT, audio_map=world, embedding_dim=args.dim, seed=args.seed + 1000)
    folder = os.path.join(args.output_dir, f"{world}_{num_pairs}")
    os.makedirs(folder, exist_ok=True)
    paired_file, text_file = os.path.join(folder, "train.safetensors"), os.path.join(folder, "text.safetensors")
    save_embeddings(paired_file, {k: train_data[k] for k in ("audio_embeds", "text_embeds", "unpaired_text_embeds")})
    all_text = torch.cat([train_data["text_embeds"], train_data["unpaired_text_embeds"]])
    save_embeddings(text_file, {"unpaired_text_embeds": all_text})
    audio, text = train_data["audio_embeds"], train_data["text_embeds"]
    bridges = {
        "identity": IdentityBridge(),
        "mean-shift": MeanShiftBridge(args.dim).fit(audio, all_text),
        "linear map": LinearMapBridge(args.dim).fit(audio, text),
        "caption-memory": CaptionMemoryBridge(args.dim).fit(all_text),
        "text-only diffusion": train("text_only_diffusion", text_file, os.path.join(folder, "text_only"), args.seed),
        "diffusion-link": train("diffusion_link", paired_file, os.path.join(folder, "diffusion_link"), args.seed),
    }
    scores = {}
    for name, bridge in bridges.items():
        with torch.no_grad():
            figures = paired_figures(bridge.link(held_out["audio_embeds"]), held_out["text_embeds"])
        scores[name] = {k: figures[k] for k in COLUMNS}
    scores["diffusion-link"]["strength"] = bridges["diffusion-link"].config.strength
    return scores


def table(results: dict) -> str:
    lines = ["| world | N | method | paired cosine | R@1 | centroid distance |", "|---|---:|---|---:|---:|---:|"]
    for world, by_size in results.items():
        for size, scores in by_size.items():
            for name, s in scores.items():
                label = f"{name} (s*/T={s['strength']})" if "strength" in s else name
                lines.append(f"| {world} | {size} | {label} | {s['paired_cosine']:.3f} | {s['retrieval_r1']:.3f} | "
                             f"{s['centroid_distance']:.3f} |")
    return "\n".join(lines)


def goals(results: dict) -> dict:
    """The bridge issue's goals, measured: margins over the best peer and the raw audio (positive is good)."""
    out = {"paired_cosine_margin_over_best_peer": {}, "retrieval_r1_margin_over_identity": {}}
    never_worse = True
    for world, by_size in results.items():
        smallest = min(by_size)
        for size, s in by_size.items():
            dl, identity = s["diffusion-link"], s["identity"]
            best_peer = max(s[p]["paired_cosine"] for p in PEERS)
            key = f"{world}/{size}"
            if size >= 1000:
                out["paired_cosine_margin_over_best_peer"][key] = round(dl["paired_cosine"] - best_peer, 4)
            out["retrieval_r1_margin_over_identity"][key] = round(dl["retrieval_r1"] - identity["retrieval_r1"], 4)
            if size == smallest:
                never_worse &= dl["paired_cosine"] >= identity["paired_cosine"] and dl["retrieval_r1"] >= identity["retrieval_r1"]
    out["goal_cosine_met"] = all(v >= 0.02 for v in out["paired_cosine_margin_over_best_peer"].values())
    out["goal_r1_met"] = all(v >= -0.02 for v in out["retrieval_r1_margin_over_identity"].values())
    out["never_worse_than_identity_at_smallest_n"] = bool(never_worse)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/synthetic_gap")
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 1000, 4000, 16000])
    parser.add_argument("--worlds", nargs="+", default=list(AUDIO_MAPS), choices=AUDIO_MAPS)
    parser.add_argument("--dim", type=int, default=64, help="Embedding size D of the synthetic worlds.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the training draws and of training.")
    args = parser.parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    logging.getLogger("training").setLevel(logging.WARNING)
    start = time.time()
    results = {world: {size: run_cell(world, size, args) for size in args.sizes} for world in args.worlds}
    text = table(results)
    print(f"\nHeld-out pairs: {HELD_OUT} per world (D={args.dim}, seed {args.seed}); every method's default recipe\n")
    print(text)
    summary = {**goals(results), "seconds": round(time.time() - start, 1)}
    with open(os.path.join(args.output_dir, "size_table.md"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    with open(os.path.join(args.output_dir, "size_results.json"), "w", encoding="utf-8") as f:
        json.dump({"arguments": vars(args), "results": results, "summary": summary}, f, indent=2)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
