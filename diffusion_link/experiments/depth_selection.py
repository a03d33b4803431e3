"""Picking the bridge's depth `strength` (s*/T) on held-out pairs: one rule for `training/train_bridge.py`, the
starter's build and the benchmarks.

The rule (`pick_depth`): among the candidate depths whose audio->text R@1 on the held-out pairs stays within
`R1_TOLERANCE` (0.02) of the raw audio's, the one with the best held-out paired cosine (the shallower of ties). The
bridge exists to move audio onto its caption, but not at the price of which caption it is. When no depth keeps R@1
that close, the rule says so (`qualified=False`) and falls back to the depth that loses the least R@1.

Never pick on the clips you report: the held-out pairs here are a validation split of the training data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch

from diffusion_link.metrics.modality_gap import paired_figures


DEPTH_GRID = (0.01, 0.025, 0.05, 0.1, 0.2, 0.4)
R1_TOLERANCE = 0.02


@torch.no_grad()
def sweep_depths(bridge, audio_embeds: torch.Tensor, text_embeds: torch.Tensor,
                 strengths: Sequence[float] = DEPTH_GRID) -> dict:
    """`paired_figures` of the raw (N, D) audio (`identity`) and of `bridge.link(audio, strength=s)` for each s,
    against the paired (N, D) texts. The link noise is content-seeded, so the sweep repeats exactly."""
    return {
        "num_pairs": len(audio_embeds),
        "identity": paired_figures(audio_embeds, text_embeds),
        "by_strength": {float(s): paired_figures(bridge.link(audio_embeds, strength=s), text_embeds) for s in strengths},
    }


@torch.no_grad()
def sweep_depths_cross_fitted(bridges: Sequence, audio_by_fold: Sequence[torch.Tensor],
                              text_by_fold: Sequence[torch.Tensor], strengths: Sequence[float] = DEPTH_GRID) -> dict:
    """`sweep_depths` over the pooled held-out pairs of k folds, each fold's (N_i, D) audio linked by the bridge that
    did not train on it (`bridges[i]`): one depth picked on all the pairs instead of k noisy picks on a fold each."""
    if not len(bridges) == len(audio_by_fold) == len(text_by_fold) or not len(bridges):
        raise ValueError(f"Need one bridge per fold of audio and of text, got {len(bridges)} bridges, "
                         f"{len(audio_by_fold)} audio and {len(text_by_fold)} text folds.")
    audio, text = torch.cat(list(audio_by_fold)), torch.cat(list(text_by_fold))

    def linked(s: float) -> torch.Tensor:
        return torch.cat([b.link(a, strength=s) for b, a in zip(bridges, audio_by_fold)])

    return {
        "num_pairs": len(audio),
        "num_folds": len(bridges),
        "identity": paired_figures(audio, text),
        "by_strength": {float(s): paired_figures(linked(s), text) for s in strengths},
    }


def pick_depth(sweep: dict, tolerance: float = R1_TOLERANCE) -> dict:
    """Apply the rule above to a `sweep_depths` result. Returns `{"strength", "qualified", "rule", ...}`."""
    identity_r1 = sweep["identity"]["retrieval_r1"]
    by_strength = sweep["by_strength"]
    keeping = [s for s, f in by_strength.items() if f["retrieval_r1"] >= identity_r1 - tolerance - 1e-12]
    if keeping:
        strength = max(keeping, key=lambda s: (by_strength[s]["paired_cosine"], -s))
    else:
        strength = max(by_strength, key=lambda s: (by_strength[s]["retrieval_r1"], by_strength[s]["paired_cosine"], -s))
    return {
        "strength": strength,
        "qualified": bool(keeping),
        "rule": f"best held-out paired cosine among depths with R@1 >= identity's - {tolerance}",
        "num_pairs": sweep["num_pairs"],
        **({"num_folds": sweep["num_folds"]} if "num_folds" in sweep else {}),
        "identity_retrieval_r1": identity_r1,
        "identity_paired_cosine": sweep["identity"]["paired_cosine"],
        "retrieval_r1": by_strength[strength]["retrieval_r1"],
        "paired_cosine": by_strength[strength]["paired_cosine"],
    }


def write_depth_sweep(sweep: dict, pick: dict, output_dir: str) -> list[str]:
    """`depth_sweep.json` (the sweep and the pick) and `depth_sweep.png` (paired cosine and R@1 against depth, the
    raw audio's as dotted lines, the pick marked) in `output_dir`. Returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(output_dir, exist_ok=True)
    paths = [os.path.join(output_dir, "depth_sweep.json"), os.path.join(output_dir, "depth_sweep.png")]
    with open(paths[0], "w", encoding="utf-8") as f:
        json.dump({"sweep": {**sweep, "by_strength": {str(k): v for k, v in sweep["by_strength"].items()}},
                   "pick": pick}, f, indent=2)
    xs = sorted(sweep["by_strength"])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, label, color in (("paired_cosine", "paired cosine", "tab:red"), ("retrieval_r1", "R@1", "tab:blue")):
        ax.plot(xs, [sweep["by_strength"][s][key] for s in xs], marker="o", color=color, label=label)
        ax.axhline(sweep["identity"][key], color=color, linestyle=":", linewidth=1)
    ax.axvline(pick["strength"], color="black", linewidth=1, linestyle="--",
               label=f"picked {pick['strength']}" + ("" if pick["qualified"] else " (no depth kept R@1)"))
    ax.set_xscale("log")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.minorticks_off()
    ax.set_xlabel("strength s*/T")
    ax.set_title(f"Depth on {sweep['num_pairs']} held-out pairs (dotted: raw audio)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths
