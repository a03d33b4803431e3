"""Synthetic paired embeddings with a built-in modality gap, for demos, tests and the bridge comparison.

The generative story (all vectors in R^D; every embedding is L2-normalised at the end):

- K concepts c_k are random unit vectors; a pair i of concept k has a content vector
  z_i = c_k + instance_spread * xi_i, shared by its audio and its text (so retrieval is per instance).
- Its text embedding is   normalize(z_i + text_noise * eta_i + gap * m_text).
- Its audio embedding is  normalize(audio_scale * A (z_i + audio_noise * eta'_i) + gap * m_audio),
  with fixed random unit "modality directions" m_text, m_audio (the constant offset of a contrastive cone) and a
  fixed random near-identity linear distortion A = I + distortion * G / sqrt(D). `audio_scale` < 1 makes the audio
  cone narrower than the text cone (audio embeddings more alike than texts), as contrastive encoders often do.

The gap therefore has a centroid offset, which mean-shift removes, and a cone-width difference, a distortion and
extra audio noise, which a constant shift cannot undo (after re-normalisation, a narrower cone keeps a different
centroid) but a model of the text distribution (such as Diffusion-Link) can. With `audio_scale=1`,
`distortion=0` and `audio_noise=text_noise`, the gap is a pure offset and mean-shift is the right tool. Noise vectors have per-coordinate std
1/sqrt(D), so the scales above are lengths relative to a unit vector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffusion_link.validation import check_positive_int


AUDIO_MAPS = ("distorted", "rotated")


def synthetic_gap_embeddings(
    num_pairs: int,
    *,
    embedding_dim: int = 64,
    num_concepts: int = 32,
    num_unpaired_text: int = 0,
    instance_spread: float = 0.5,
    gap: float = 0.6,
    distortion: float = 0.4,
    text_noise: float = 0.1,
    audio_noise: float = 0.3,
    audio_scale: float = 0.6,
    audio_map: str = "distorted",
    seed: int = 0,
    world_seed: int = 1234,
) -> dict[str, torch.Tensor]:
    """Draw N paired audio/text embeddings (and M unpaired texts) with a modality gap.

    Args:
        num_pairs: N paired rows.
        embedding_dim: D.
        num_concepts: K shared concepts ("classes").
        num_unpaired_text: M extra text embeddings (the bridge's text-only data), drawn like paired texts.
        instance_spread: spread of an instance's content around its concept.
        gap: length of the modality offset vectors.
        distortion: scale of the random audio-side linear distortion.
        text_noise, audio_noise: per-modality noise around the shared content.
        audio_scale: length of the audio content relative to the text content (the audio cone's width).
        audio_map: the fixed linear map A of the audio side: `"distorted"`, I + `distortion` * G / sqrt(D) (near the
            identity); or `"rotated"`, a random rotation of a random half of the dimensions followed by a
            per-coordinate stretch in [1 - `distortion`, 1 + `distortion`] (a mean shift cannot undo it).
        seed: seed of the samples (use different seeds for training and held-out draws).
        world_seed: seed of the concepts, modality directions and distortion; keep it fixed so that training and
            held-out draws come from the same world.

    Returns:
        `{"audio_embeds": (N, D), "text_embeds": (N, D), "concepts": (N,) long}`, plus
        `"unpaired_text_embeds": (M, D)` when M > 0.
    """
    for name, value in (("num_pairs", num_pairs), ("embedding_dim", embedding_dim), ("num_concepts", num_concepts)):
        check_positive_int(name, value)
    if num_unpaired_text < 0:
        raise ValueError(f"`num_unpaired_text` must be >= 0, got {num_unpaired_text}.")
    dim = embedding_dim
    world = torch.Generator().manual_seed(world_seed)
    concepts = F.normalize(torch.randn(num_concepts, dim, generator=world), dim=-1)
    m_text = F.normalize(torch.randn(dim, generator=world), dim=0)
    m_audio = F.normalize(torch.randn(dim, generator=world), dim=0)
    if audio_map not in AUDIO_MAPS:
        raise ValueError(f"`audio_map` must be one of {AUDIO_MAPS}, got {audio_map!r}.")
    if audio_map == "distorted":
        distort = torch.eye(dim) + distortion * torch.randn(dim, dim, generator=world) / dim**0.5
    else:
        subspace = torch.randperm(dim, generator=world)[: dim // 2]
        rotation = torch.eye(dim)
        q, _ = torch.linalg.qr(torch.randn(len(subspace), len(subspace), generator=world))
        rotation[subspace[:, None], subspace[None, :]] = q
        stretch = 1 + distortion * (2 * torch.rand(dim, generator=world) - 1)
        distort = stretch[:, None] * rotation  # (D, D): rotate half the space, then stretch each coordinate

    rng = torch.Generator().manual_seed(seed)

    def noise(n: int) -> torch.Tensor:
        return torch.randn(n, dim, generator=rng) / dim**0.5

    def content(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.randint(0, num_concepts, (n,), generator=rng)
        return ids, concepts[ids] + instance_spread * noise(n)

    ids, z = content(num_pairs)
    text = F.normalize(z + text_noise * noise(num_pairs) + gap * m_text, dim=-1)
    audio = F.normalize(audio_scale * (z + audio_noise * noise(num_pairs)) @ distort.T + gap * m_audio, dim=-1)
    out = {"audio_embeds": audio, "text_embeds": text, "concepts": ids}
    if num_unpaired_text:
        _, z_u = content(num_unpaired_text)
        out["unpaired_text_embeds"] = F.normalize(z_u + text_noise * noise(num_unpaired_text) + gap * m_text, dim=-1)
    return out
