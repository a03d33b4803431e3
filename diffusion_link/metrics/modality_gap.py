"""How far apart paired audio and text embeddings are: the "modality gap" of contrastive encoders."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from diffusion_link.validation import check_embeddings


# The separability probe's inverse L2 strength (scikit-learn's C). Weak regularisation: the probe should find any
# linear direction that tells the modalities apart, since separability near 0.5 is the claim being tested.
PROBE_INVERSE_REGULARIZATION = 10.0


def modality_gap(
    audio_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    *,
    probe_folds: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """Modality-gap figures of N paired rows (row i of `audio_embeds` belongs with row i of `text_embeds`).

    Args:
        audio_embeds: (N, D) audio embeddings (raw or bridged).
        text_embeds: (N, D) the paired text embeddings. Rows may repeat (several clips with one caption).
        probe_folds: folds of the cross-validated linear probe.
        seed: seed of the probe's fold split.

    Returns:
        A dict of floats, all computed on L2-normalised embeddings:
        - `paired_cosine`: mean cosine of matched pairs (higher is closer);
        - `nearest_text_cosine`: mean over audio rows of the cosine to the most similar text row;
        - `centroid_distance`: L2 distance between the two modality means (0 means no offset);
        - `retrieval_r1`, `retrieval_r5`: audio->text recall@k of the paired row among the N texts (rows whose text
          equals the paired text count as hits);
        - `modality_separability`: cross-validated accuracy of a logistic-regression probe telling audio from text
          (0.5 means the modalities cannot be told apart);
        - `num_pairs`: N.
    """
    audio, text = _paired("audio_embeds", audio_embeds, "text_embeds", text_embeds)
    num_pairs = audio.shape[0]
    if num_pairs < 2 * probe_folds:
        raise ValueError(f"modality_gap needs at least {2 * probe_folds} pairs for a {probe_folds}-fold probe, got {num_pairs}.")
    return {
        **paired_figures(audio, text),
        "modality_separability": _probe_accuracy(
            F.normalize(audio.double(), dim=-1), F.normalize(text.double(), dim=-1), probe_folds, seed),
        "num_pairs": float(num_pairs),
    }


def paired_figures(audio_embeds: torch.Tensor, text_embeds: torch.Tensor) -> dict[str, float]:
    """The figures of `modality_gap` that need no probe (so any N >= 1 paired rows will do): `paired_cosine`,
    `nearest_text_cosine`, `centroid_distance`, `retrieval_r1`, `retrieval_r5`, on L2-normalised rows."""
    audio, text = _paired("audio_embeds", audio_embeds, "text_embeds", text_embeds)
    audio, text = F.normalize(audio.double(), dim=-1), F.normalize(text.double(), dim=-1)
    sims = audio @ text.T  # (N, N) audio x text
    paired = sims.diagonal()
    # A text identical to the paired one is as good a hit as the paired one itself.
    same_text = (text @ text.T) > 1 - 1e-9  # (N, N)
    rank = (sims > paired[:, None]).logical_and(~same_text).sum(dim=1)  # texts strictly better than the pair
    return {
        "paired_cosine": float(paired.mean()),
        "nearest_text_cosine": float(sims.max(dim=1).values.mean()),
        "centroid_distance": float((audio.mean(0) - text.mean(0)).norm()),
        "retrieval_r1": float((rank < 1).double().mean()),
        "retrieval_r5": float((rank < 5).double().mean()),
    }


def _paired(audio_name: str, audio_embeds, text_name: str, text_embeds) -> tuple[torch.Tensor, torch.Tensor]:
    audio, text = _as_embeddings(audio_name, audio_embeds), _as_embeddings(text_name, text_embeds)
    if audio.shape != text.shape:
        raise ValueError(
            f"`{audio_name}` and `{text_name}` must be paired rows of the same shape, got {tuple(audio.shape)} and "
            f"{tuple(text.shape)}."
        )
    return audio, text


def _probe_accuracy(audio: torch.Tensor, text: torch.Tensor, folds: int, seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    features = torch.cat([audio, text]).numpy()
    labels = np.r_[np.zeros(len(audio)), np.ones(len(text))]
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probe = LogisticRegression(C=PROBE_INVERSE_REGULARIZATION, max_iter=5000)
    scores = cross_val_score(probe, features, labels, cv=splits)
    return float(scores.mean())


def _as_embeddings(name: str, embeds) -> torch.Tensor:
    """A (N, D) tensor or numpy array, validated, as a float32 CPU tensor."""
    if isinstance(embeds, np.ndarray):
        embeds = torch.from_numpy(embeds)
    return check_embeddings(name, embeds).detach().cpu().float()
