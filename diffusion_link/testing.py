"""Tiny random models of the real classes, for tests and for trying the API in seconds (no download, no Hub)."""

from __future__ import annotations

import torch


_CORPUS = [
    "a dog barks while cars pass by",
    "rain falls steadily on a tin roof",
    "a man speaks and a crowd laughs",
    "birds chirp in the early morning",
    "an engine idles and then revs loudly",
    "water runs from a tap into a sink",
    "a baby cries and a woman talks softly",
    "footsteps on a wooden floor",
    "wind blows through the trees",
    "a bell rings several times",
]


def tiny_clap(seed: int = 0, projection_dim: int = 24):
    """A tiny random transformers `ClapModel` and its `ClapProcessor` (tokenizer trained in memory).

    The audio tower keeps `spec_size=256` with 64 mel bins (smaller spectrogram sizes reject 10 s clips) and uses
    the non-fusion `rand_trunc` feature extractor, like laion/clap-htsat-unfused.
    """
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    tokenizer = RobertaTokenizer().train_new_from_iterator(_CORPUS * 4, vocab_size=300)
    config = ClapConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=72,
        ),
        audio_config=dict(
            spec_size=256, num_mel_bins=64, patch_embeds_hidden_size=8, hidden_size=64, depths=[1, 1, 1, 1],
            num_attention_heads=[2, 2, 2, 2], window_size=8, enable_fusion=False, patch_stride=(4, 4),
        ),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    model = ClapModel(config).eval()
    processor = ClapProcessor(feature_extractor=ClapFeatureExtractor(feature_size=64, truncation="rand_trunc"), tokenizer=tokenizer)
    return model, processor
