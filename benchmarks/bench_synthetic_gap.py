#!/usr/bin/env python
"""Quality benchmark: every bridge on synthetic paired embeddings with a built-in modality gap, one table.

    python benchmarks/bench_synthetic_gap.py [--output_dir runs/synthetic_gap] [--seed 0]   # about 3 min on 2 cores

1. Draws training pairs, extra unpaired texts and held-out pairs from one synthetic world
   (`diffusion_link.synthetic.synthetic_gap_embeddings`: a modality offset, a narrower audio cone, a distortion and
   extra audio noise).
2. Trains Diffusion-Link (paired + text) and the text-only "Diffusion Bridge" peer with `training/train_bridge.py`
   (the Trainer), and fits mean-shift on the training embeddings.
3. Picks Diffusion-Link's depth s*/T on a separate validation draw (best paired cosine among depths that keep R@1
   within 2 % of the raw audio's), then scores identity, mean-shift, text-only diffusion and Diffusion-Link (at the
   picked depth and at the paper's 0.1) on the held-out pairs with `modality_gap`.

Prints a Markdown table; writes `gap_table.md`, `gap_results.json` and `gap_plot.png` to `--output_dir`. The last
line printed is one JSON object of ratios measured in this run: Diffusion-Link against the best peer on each
figure (> 1 means better; for distances the ratio is inverted), its retrieval R@1 against the raw audio's, and
`beats_every_peer` (better on paired cosine and centroid distance than every peer, with R@1 at least 0.98 of
identity's).
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

from diffusion_link import DiffusionLinkBridge, IdentityBridge, MeanShiftBridge  # noqa: E402
from diffusion_link.embedding_files import save_embeddings  # noqa: E402
from diffusion_link.metrics import compare_bridges, format_gap_table, modality_gap, plot_modality_gap  # noqa: E402
from diffusion_link.synthetic import synthetic_gap_embeddings  # noqa: E402
from training import train_bridge  # noqa: E402


HIGHER_IS_BETTER = {"paired_cosine": True, "centroid_distance": False}
STRENGTHS = (0.025, 0.05, 0.1, 0.2, 0.4)


def train(kind: str, train_file: str, output_dir: str, args: argparse.Namespace) -> DiffusionLinkBridge:
    argv = [
        "--train_file", train_file, "--output_dir", output_dir, "--bridge_type", kind,
        "--hidden_size", str(args.hidden), "--max_steps", str(args.steps),
        "--per_device_train_batch_size", "128", "--learning_rate", "1e-3", "--lr_scheduler_type", "cosine",
        "--warmup_steps", "100", "--weight_decay", "0.0", "--logging_strategy", "no", "--log_level", "warning",
        "--save_strategy", "no", "--seed", str(args.seed), "--disable_tqdm", "true", "--dataloader_pin_memory", "false",
    ]
    return train_bridge.main(argv).eval()


def pick_strength(bridge: DiffusionLinkBridge, validation: dict[str, torch.Tensor]) -> float:
    """The depth with the best paired cosine among those keeping R@1 within 2 % of the raw audio's (validation)."""
    audio, text = validation["audio_embeds"], validation["text_embeds"]
    floor = 0.98 * modality_gap(audio, text)["retrieval_r1"]
    scores = {s: modality_gap(bridge.link(audio, strength=s), text) for s in STRENGTHS}
    keeping = [s for s, r in scores.items() if r["retrieval_r1"] >= floor] or [min(STRENGTHS)]
    return max(keeping, key=lambda s: scores[s]["paired_cosine"])


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/synthetic_gap")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the training draws and of training.")
    parser.add_argument("--dim", type=int, default=64, help="Embedding size D of the synthetic world.")
    parser.add_argument("--pairs", type=int, default=2000, help="Paired training rows.")
    parser.add_argument("--unpaired", type=int, default=10000, help="Unpaired training texts.")
    parser.add_argument("--held_out", type=int, default=500, help="Held-out (and validation) pairs.")
    parser.add_argument("--hidden", type=int, default=256, help="Bridge width.")
    parser.add_argument("--steps", type=int, default=3000, help="Training steps of each diffusion bridge (batch 128).")
    args = parser.parse_args()
    os.makedirs(args.output_dir, exist_ok=True)
    logging.getLogger("training").setLevel(logging.WARNING)
    start = time.time()

    world = dict(embedding_dim=args.dim)
    train_data = synthetic_gap_embeddings(args.pairs, num_unpaired_text=args.unpaired, seed=args.seed, **world)
    held_out = synthetic_gap_embeddings(args.held_out, seed=args.seed + 1000, **world)
    paired_file = os.path.join(args.output_dir, "train_embeds.safetensors")
    save_embeddings(paired_file, {k: train_data[k] for k in ("audio_embeds", "text_embeds", "unpaired_text_embeds")})
    text_file = os.path.join(args.output_dir, "train_text.safetensors")
    all_text = torch.cat([train_data["text_embeds"], train_data["unpaired_text_embeds"]])
    save_embeddings(text_file, {"unpaired_text_embeds": all_text})

    bridges = {
        "identity": IdentityBridge(),
        "mean-shift": MeanShiftBridge(args.dim).fit(train_data["audio_embeds"], all_text),
        "text-only diffusion": train("text_only_diffusion", text_file, os.path.join(args.output_dir, "text_only"), args),
        "diffusion-link": train("diffusion_link", paired_file, os.path.join(args.output_dir, "diffusion_link"), args),
    }
    # The link depth s*/T is a knob whose best value depends on the encoder space (the paper's 0.1 is for CLAP): pick
    # it on a validation draw, never on the held-out pairs.
    validation = synthetic_gap_embeddings(args.held_out, seed=args.seed + 2000, **world)
    strength = pick_strength(bridges["diffusion-link"], validation)
    picked = f"diffusion-link (s*/T={strength}, picked on validation)"

    results = compare_bridges(bridges, held_out["audio_embeds"], held_out["text_embeds"])
    results[picked] = modality_gap(
        bridges["diffusion-link"].link(held_out["audio_embeds"], strength=strength), held_out["text_embeds"]
    )
    results["diffusion-link (s*/T=0.1, paper default)"] = results.pop("diffusion-link")
    table = format_gap_table(results)
    print(f"\nHeld-out pairs: {args.held_out} (D={args.dim}, seed {args.seed}, {args.steps} steps at width {args.hidden})\n")
    print(table)

    ours = results[picked]
    peers = {k: v for k, v in results.items() if not k.startswith("diffusion-link")}
    ratios = {"picked_strength": strength}
    for column, higher in HIGHER_IS_BETTER.items():
        best_peer = max(peers.values(), key=lambda r: r[column] if higher else -r[column])[column]
        ratios[f"{column}_vs_best_peer"] = ours[column] / best_peer if higher else best_peer / max(ours[column], 1e-12)
    # "Without losing retrieval": against the raw audio the bridge is applied to.
    ratios["retrieval_r1_vs_identity"] = ours["retrieval_r1"] / results["identity"]["retrieval_r1"]
    beats = all(ratios[f"{c}_vs_best_peer"] > 1.0 for c in HIGHER_IS_BETTER) and ratios["retrieval_r1_vs_identity"] >= 0.98

    sweep = {
        f"diffusion-link, s*/T={s}": modality_gap(
            bridges["diffusion-link"].link(held_out["audio_embeds"], strength=s), held_out["text_embeds"]
        )
        for s in STRENGTHS
    }
    print("\nDiffusion-Link at each depth s*/T on the held-out pairs (for reference; not used to pick):\n")
    print(format_gap_table(sweep))
    results.update(sweep)
    table = format_gap_table(results)
    plot_modality_gap(
        held_out["audio_embeds"], held_out["text_embeds"], os.path.join(args.output_dir, "gap_plot.png"),
        bridged_embeds=bridges["diffusion-link"].link(held_out["audio_embeds"], strength=strength),
        title=f"Synthetic world, held-out pairs (Diffusion-Link at s*/T={strength})",
    )
    with open(os.path.join(args.output_dir, "gap_table.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    with open(os.path.join(args.output_dir, "gap_results.json"), "w", encoding="utf-8") as f:
        json.dump({"arguments": vars(args), "results": results}, f, indent=2)
    summary = {**ratios, "beats_every_peer": beats, "seconds": round(time.time() - start, 1)}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
