"""Calibrating a caption's confidence: fit the logistic model `reranking.confidence` applies, and judge it.

- `fit_confidence_calibration(features, correct)`: L2-regularised logistic regression of "the caption names what is
  heard" (0/1) on `reranking.CONFIDENCE_FEATURES`, standardised; returns the dict stored as the captioner's
  `config.confidence_calibration`. Fit it on held-out clips of the training data, never on the clips you report.
- `expected_calibration_error(probs, correct, num_bins=10)`: the bin-size-weighted mean |accuracy - confidence| over
  equal-width confidence bins.
- `ece_noise_floor(probs)`: the ECE a perfectly calibrated model with these probabilities shows on this many clips
  (sampling noise alone): the floor a measured ECE is judged against.
- `reliability_diagram(probs, correct, path)`: accuracy against confidence per bin, with the counts, as a PNG.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from diffusion_link.reranking import CONFIDENCE_FEATURES


def fit_confidence_calibration(features: Sequence[Sequence[float]], correct: Sequence[bool],
                               l2: float = 1.0, max_iter: int = 200) -> dict:
    """Logistic regression (LBFGS, penalty `l2` on the weights, not the intercept) of `correct` on `features`."""
    x = torch.tensor([list(map(float, f)) for f in features], dtype=torch.float64)
    y = torch.tensor([float(bool(c)) for c in correct], dtype=torch.float64)
    if x.ndim != 2 or x.shape[1] != len(CONFIDENCE_FEATURES):
        raise ValueError(f"`features` must be (N, {len(CONFIDENCE_FEATURES)}) rows of {CONFIDENCE_FEATURES}, got "
                         f"shape {tuple(x.shape)}.")
    if len(y) != len(x):
        raise ValueError(f"`correct` has {len(y)} entries for {len(x)} feature rows.")
    if len(y) < 10 or y.min() == y.max():
        raise ValueError(f"Calibration needs at least 10 clips with both right and wrong captions, got {len(y)} "
                         f"clips, {int(y.sum())} right.")
    mean, scale = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / scale
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * (w @ w) / len(y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return {"features": list(CONFIDENCE_FEATURES), "coef": w.detach().tolist(), "intercept": float(b.detach()),
            "mean": mean.tolist(), "scale": scale.tolist(), "num_clips": len(y), "l2": l2}


def expected_calibration_error(probs: Sequence[float], correct: Sequence[bool], num_bins: int = 10) -> float:
    """Sum over equal-width bins of (bin size / N) * |accuracy in the bin - mean confidence in the bin|."""
    p = torch.tensor([float(v) for v in probs], dtype=torch.float64)
    y = torch.tensor([float(bool(c)) for c in correct], dtype=torch.float64)
    if len(p) != len(y) or not len(p):
        raise ValueError(f"`probs` ({len(p)}) and `correct` ({len(y)}) must be non-empty and of one length.")
    bins = (p * num_bins).long().clamp(0, num_bins - 1)
    error = 0.0
    for k in range(num_bins):
        rows = bins == k
        if rows.any():
            error += float(rows.sum()) / len(p) * abs(float(y[rows].mean() - p[rows].mean()))
    return error


def ece_noise_floor(probs: Sequence[float], num_bins: int = 10, draws: int = 2000, seed: int = 0) -> float:
    """The ECE a perfectly calibrated model with these `probs` would show on this many clips: the mean
    `expected_calibration_error` over `draws` outcome sets drawn as Bernoulli(probs). An ECE near it is as calibrated
    as the number of clips can tell."""
    p = torch.tensor([float(v) for v in probs], dtype=torch.float64)
    if not len(p):
        raise ValueError("`probs` must not be empty.")
    generator = torch.Generator().manual_seed(seed)
    outcomes = torch.rand(draws, len(p), generator=generator, dtype=torch.float64) < p
    return sum(expected_calibration_error(p.tolist(), row.tolist(), num_bins) for row in outcomes) / draws


def reliability_diagram(probs: Sequence[float], correct: Sequence[bool], path: str, title: str = "",
                        num_bins: int = 10) -> str:
    """Accuracy against mean confidence per bin (bars, with clip counts), the diagonal dotted; saved to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = torch.tensor([float(v) for v in probs], dtype=torch.float64)
    y = torch.tensor([float(bool(c)) for c in correct], dtype=torch.float64)
    bins = (p * num_bins).long().clamp(0, num_bins - 1)
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], linestyle=":", color="gray", label="perfect calibration")
    for k in range(num_bins):
        rows = bins == k
        if rows.any():
            ax.bar((k + 0.5) / num_bins, float(y[rows].mean()), width=0.9 / num_bins, color="tab:blue", alpha=0.75)
            ax.text((k + 0.5) / num_bins, float(y[rows].mean()) + 0.02, str(int(rows.sum())), ha="center", fontsize=7)
    ece = expected_calibration_error(p.tolist(), y.tolist(), num_bins)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("confidence")
    ax.set_ylabel("share of captions right")
    ax.set_title(f"{title}\nECE {ece:.3f} on {len(p)} clips", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
