"""Stage "towers": the frozen aiSFX embeddings of the split's clips and the frozen MiniLM embeddings of the class
captions and the caption corpus (`diffusion_link.starter.world.tower_embeddings`), cached in the work dir."""

from __future__ import annotations

import os

import torch

from diffusion_link.starter.build.arguments import StarterArguments
from diffusion_link.starter.build.stages import stage
from diffusion_link.starter.world import StarterWorld, tower_embeddings


@stage("towers")
def towers(args: StarterArguments, world: StarterWorld, encoder, split: dict) -> dict[str, torch.Tensor]:
    """`audio` (N, D_audio), `esc_text` (caption rows, D) and `corpus_text` (M, D); see `tower_embeddings`."""
    return tower_embeddings(world, encoder, split, os.path.join(args.work_dir, "towers.safetensors"))
