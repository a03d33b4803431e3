import pytest
import torch

from diffusion_link import MeanShiftBridge, modality_gap
from diffusion_link.experiments.synthetic_gap import synthetic_gap_embeddings


def test_shapes_and_unit_norms():
    data = synthetic_gap_embeddings(50, embedding_dim=16, num_concepts=5, num_unpaired_text=20, seed=3)
    assert data["audio_embeds"].shape == (50, 16) and data["text_embeds"].shape == (50, 16)
    assert data["unpaired_text_embeds"].shape == (20, 16) and data["concepts"].max() < 5
    for key in ("audio_embeds", "text_embeds", "unpaired_text_embeds"):
        torch.testing.assert_close(data[key].norm(dim=-1), torch.ones(len(data[key])))


def test_same_world_different_samples():
    a = synthetic_gap_embeddings(30, embedding_dim=16, seed=0)
    b = synthetic_gap_embeddings(30, embedding_dim=16, seed=0)
    c = synthetic_gap_embeddings(30, embedding_dim=16, seed=1)
    torch.testing.assert_close(a["audio_embeds"], b["audio_embeds"])
    assert not torch.allclose(a["audio_embeds"], c["audio_embeds"])


def test_the_world_has_a_gap_that_a_shift_only_partly_closes():
    train = synthetic_gap_embeddings(1000, seed=0)
    held_out = synthetic_gap_embeddings(300, seed=1)
    raw = modality_gap(held_out["audio_embeds"], held_out["text_embeds"])
    assert raw["centroid_distance"] > 0.4 and raw["modality_separability"] > 0.95
    assert raw["retrieval_r1"] > 0.8  # pairs share their content, so retrieval is meaningful
    shifted = MeanShiftBridge(64).fit(train["audio_embeds"], train["text_embeds"]).link(held_out["audio_embeds"])
    gap = modality_gap(shifted, held_out["text_embeds"])
    assert gap["centroid_distance"] < 0.5 * raw["centroid_distance"]
    assert gap["paired_cosine"] < 0.95  # the distortion and the narrower audio cone remain


def test_a_pure_offset_world_is_closed_by_mean_shift():
    kw = dict(audio_scale=1.0, distortion=0.0, audio_noise=0.1)
    train, held_out = synthetic_gap_embeddings(1000, seed=0, **kw), synthetic_gap_embeddings(300, seed=1, **kw)
    shifted = MeanShiftBridge(64).fit(train["audio_embeds"], train["text_embeds"]).link(held_out["audio_embeds"])
    assert modality_gap(shifted, held_out["text_embeds"])["paired_cosine"] > 0.97


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="num_pairs"):
        synthetic_gap_embeddings(0)
    with pytest.raises(ValueError, match="num_unpaired_text"):
        synthetic_gap_embeddings(3, num_unpaired_text=-1)


def test_the_rotated_world_is_undone_by_a_linear_map_not_by_a_mean_shift():
    from diffusion_link import LinearMapBridge, MeanShiftBridge
    from diffusion_link.metrics import paired_figures

    train = synthetic_gap_embeddings(400, embedding_dim=32, audio_map="rotated", seed=0)
    held = synthetic_gap_embeddings(200, embedding_dim=32, audio_map="rotated", seed=1)
    shifted = MeanShiftBridge(32).fit(train["audio_embeds"], train["text_embeds"]).link(held["audio_embeds"])
    mapped = LinearMapBridge(32).fit(train["audio_embeds"], train["text_embeds"]).link(held["audio_embeds"])
    assert paired_figures(shifted, held["text_embeds"])["paired_cosine"] < 0.7
    assert paired_figures(mapped, held["text_embeds"])["paired_cosine"] > 0.9
    with pytest.raises(ValueError, match="audio_map"):
        synthetic_gap_embeddings(4, audio_map="sheared")
