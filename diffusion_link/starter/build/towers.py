"""Stage "towers": the frozen aiSFX embeddings of the split's clips and the frozen MiniLM embeddings of the class
captions and the caption corpus (`diffusion_link.starter.world.tower_embeddings`), cached in the work dir."""

from __future__ import annotations

import hashlib
import json
import os

import torch

from diffusion_link.starter.build.arguments import StarterArguments
from diffusion_link.starter.build.stages import stage
from diffusion_link.starter.world import StarterWorld, tower_embeddings


@stage("towers")
def towers(args: StarterArguments, world: StarterWorld, encoder, split: dict) -> dict[str, torch.Tensor]:
    """`audio` (N, D_audio), `esc_text` (caption rows, D) and `corpus_text` (M, D); see `tower_embeddings`. The cache
    file is keyed by the clips and the caption texts, so a world with other sources never reads another's."""
    return tower_embeddings(world, encoder, split, os.path.join(args.work_dir, f"towers_{world_key(world, split)}.safetensors"))


def world_key(world: StarterWorld, split: dict) -> str:
    """A short digest of the split's clips (source, file) and the caption table's texts."""
    clips = [(c.get("source", ""), c["filename"]) for side in ("train", "test") for c in split[side]]
    return hashlib.sha1(json.dumps([clips, world.captions.texts]).encode()).hexdigest()[:10]
