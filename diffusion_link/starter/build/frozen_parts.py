"""The frozen parts that every measurement on the starter world shares: its tower embeddings, its heads (cached),
a decoder and the tokenizers. `training/experiment.py` (every row of its table) and `training/depth_pool.py` build on
them; the starter build's cache (`starter_work_dir`) provides the tower embeddings and is filled in when absent."""

from __future__ import annotations

import os

import torch

from diffusion_link import DiffusionLinkForAudioCaptioning, StarterAudioTextEncoder
from diffusion_link.hub.references import cache_dir
from diffusion_link.configuration_diffusion_link_captioner import DEFAULT_MAX_NEW_TOKENS
from diffusion_link.reranking import rank_candidates
from diffusion_link.starter import STARTER_CAPTIONER
from diffusion_link.starter.build.arguments import StarterArguments, parse_args
from diffusion_link.starter.build.heads import heads
from diffusion_link.starter.build.towers import towers
from diffusion_link.starter.world import StarterWorld, cached_tensors, text_tokenizer


EXPERIMENT_WORK_DIR = os.path.join(cache_dir(), "experiment")
STARTER_WORK_DIR = os.path.join(cache_dir(), "starter_build")
HEAD_KEYS = ("oof", "folds", "test", "labels", "prototypes", "sources", "candidates")


def starter_arguments(recipe: str, starter_work_dir: str, *, data: str | None = None, bridge_steps: int | None = None,
                      decoder_steps: int | None = None) -> StarterArguments:
    """The starter build's arguments from its `recipe` with its cache in `starter_work_dir` and the given overrides."""
    overrides = ["--work_dir", starter_work_dir]
    for flag, value in (("--data", data), ("--bridge_steps", bridge_steps), ("--decoder_steps", decoder_steps)):
        if value is not None:
            overrides += [flag, str(value)]
    return parse_args([recipe, *overrides])


def cached_heads(work_dir: str, starter_args: StarterArguments, world: StarterWorld, encoder, split: dict,
                 embeddings: dict) -> dict[str, torch.Tensor]:
    """The heads stage's tensors (`HEAD_KEYS`), cached in `work_dir`/heads.safetensors."""

    def compute() -> dict[str, torch.Tensor]:
        head = heads(starter_args, world, encoder, split, embeddings)
        return {k: head[k] for k in HEAD_KEYS}

    return cached_tensors(os.path.join(work_dir, "heads.safetensors"), compute)


class FrozenParts:
    """The starter world's frozen parts for measurements in `work_dir`.

    Attributes: `world`, `captions` (its caption table), `towers` (the tower embeddings), `head` (the heads'
    tensors: `oof` (N_train, D), `folds`, `test` (N_test, D), `labels`, `prototypes`), `labels` and `test_audio` of
    the test clips, their `references` (their labels' captions) and `paired_text` (their labels' first caption
    embeddings, (N_test, D)), the `decoder` from `captioner` with its `tokenizer`, `encoder` and its
    `text_tokenizer` (MiniLM), which also scores the decoder's caption candidates."""

    def __init__(self, starter_args: StarterArguments, work_dir: str, captioner: str = STARTER_CAPTIONER):
        self.starter_args = starter_args
        os.makedirs(starter_args.work_dir, exist_ok=True)
        os.makedirs(work_dir, exist_ok=True)
        self.world = starter_args.world()
        self.captions = self.world.captions
        split = self.world.split()
        self.encoder = StarterAudioTextEncoder.from_bases()
        self.towers = towers(starter_args, self.world, self.encoder, split)
        self.head = cached_heads(work_dir, starter_args, self.world, self.encoder, split, self.towers)
        ntrain = len(self.head["oof"])
        self.labels = self.head["labels"][ntrain:]
        self.test_audio = self.head["test"]
        self.references = self.world.references(self.labels)
        self.paired_text = self.towers["esc_text"][self.captions.first_caption_rows(self.labels)]
        self.decoder = DiffusionLinkForAudioCaptioning.from_pretrained(captioner).eval()
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(captioner)
        self.text_tokenizer = text_tokenizer(self.encoder)
        self.decoder.audio_text_tokenizer = self.text_tokenizer

    def caption(self, embeds: torch.Tensor, decoder=None, decoding: bool = False) -> list[str]:
        """Greedy captions of the decoder inputs `embeds` (N, D), or with `decoding`, the captioner's default
        decoding (`config.num_candidates` beams, picked by `config.rerank`), scored against the clips' raw audio."""
        decoder = decoder or self.decoder
        if not decoding:
            return decoder.caption_embeds(embeds, self.tokenizer, max_new_tokens=DEFAULT_MAX_NEW_TOKENS, batch_size=16)
        return default_decoding(decoder, self.tokenizer, embeds, self.test_audio)


def default_decoding(decoder, tokenizer, embeds: torch.Tensor, audio: torch.Tensor) -> list[str]:
    """The captioner's default decoding of the (N, D) decoder inputs `embeds`: greedy, or `config.num_candidates`
    beams picked by `config.rerank`, scored against the clips' (N, D) raw `audio` embeddings."""
    config = decoder.config
    if config.num_candidates == 1:
        return decoder.caption_embeds(embeds, tokenizer, max_new_tokens=DEFAULT_MAX_NEW_TOKENS, batch_size=16)
    found = decoder.caption_embeds(embeds, tokenizer, num_candidates=config.num_candidates, audio_embeds=audio,
                                   max_new_tokens=DEFAULT_MAX_NEW_TOKENS)
    return [rank_candidates(c, config.rerank, config.rerank_weight)[0]["text"] for c in found]
