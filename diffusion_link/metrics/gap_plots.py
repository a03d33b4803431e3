"""Pictures of the modality gap: a 2-D projection of the embeddings and histograms of paired cosines."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F


def pca_projection(points: torch.Tensor) -> torch.Tensor:
    """The rows of `points` (N, D) in their first two principal components (N, 2): centred on their mean and projected
    on the top two right singular vectors. The one projection of the gap pictures (`plot_modality_gap`, and the web
    page's plot of where a clip lands)."""
    if points.ndim != 2:
        raise ValueError(f"`points` must be (N, D), got shape {tuple(points.shape)}.")
    centred = points - points.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[:2].T


def plot_modality_gap(
    audio_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    path: str | os.PathLike,
    *,
    bridged_embeds: torch.Tensor | None = None,
    title: str = "Modality gap",
) -> str:
    """Save a PNG with two panels and return its path.

    Left: a 2-D PCA projection (fitted on all rows) of the L2-normalised audio (N, D), text (M, D) and, when given,
    bridged (N, D) embeddings. Right: histograms of the paired cosines cos(audio_i, text_i) and cos(bridged_i,
    text_i); these need N == M (paired rows) and are skipped otherwise.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {"audio": audio_embeds, "text": text_embeds}
    if bridged_embeds is not None:
        groups["bridged audio"] = bridged_embeds
    groups = {k: F.normalize(torch.as_tensor(v).detach().cpu().float(), dim=-1) for k, v in groups.items()}
    dims = {v.shape[-1] for v in groups.values()}
    if len(dims) != 1 or any(v.ndim != 2 for v in groups.values()):
        raise ValueError(f"All embeddings must be (N, D) with one D, got {[tuple(v.shape) for v in groups.values()]}.")

    coords = pca_projection(torch.cat(list(groups.values()))).split([len(g) for g in groups.values()])

    fig, (ax_pca, ax_hist) = plt.subplots(1, 2, figsize=(11, 4.5))
    colors = {"audio": "tab:orange", "text": "tab:blue", "bridged audio": "tab:green"}
    for (name, _), xy in zip(groups.items(), coords):
        ax_pca.scatter(xy[:, 0], xy[:, 1], s=8, alpha=0.6, label=name, color=colors[name])
    ax_pca.set_title("PCA of L2-normalised embeddings")
    ax_pca.legend()

    audio, text = groups["audio"], groups["text"]
    if len(audio) == len(text):
        bins = torch.linspace(-1, 1, 41).tolist()
        ax_hist.hist((audio * text).sum(-1).tolist(), bins=bins, alpha=0.6, label="audio-text", color=colors["audio"])
        if "bridged audio" in groups:
            bridged = (groups["bridged audio"] * text).sum(-1).tolist()
            ax_hist.hist(bridged, bins=bins, alpha=0.6, label="bridged-text", color=colors["bridged audio"])
        ax_hist.set_title("Paired cosine similarity")
        ax_hist.legend()
    else:
        ax_hist.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    path = os.fspath(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
