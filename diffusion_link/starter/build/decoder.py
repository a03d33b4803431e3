"""Stage "decoder": SmolLM2-135M-Instruct with LoRA and the soft-prefix projector, trained zero-shot on the text
embeddings of AudioCaps + Clotho captions by `training/train_captioner.py` (run as a recipe). It learns from text
alone, so it does not depend on the bridge: `--decoder_from FOLDER` reuses a trained one when only the bridge
changes, and `with_bridge` slots any bridge in."""

from __future__ import annotations

import logging
import os
import random
import shutil

from diffusion_link import DiffusionLinkBridge, DiffusionLinkForAudioCaptioning
from diffusion_link.experiments.embedding_files import save_embeddings
from diffusion_link.experiments.recipes import run_recipe
from diffusion_link.starter.build.arguments import StarterArguments
from diffusion_link.starter.build.stages import stage
from diffusion_link.starter.world import read_audiocaps_clotho_captions


logger = logging.getLogger("build_starter")


@stage("decoder")
def decoder(args: StarterArguments, towers: dict, encoder_dir: str,
            bridge_model: DiffusionLinkBridge) -> DiffusionLinkForAudioCaptioning:
    """The zero-shot decoder in `work_dir`/decoder (trained, or copied from `--decoder_from`), with `bridge_model`."""
    out = os.path.join(args.work_dir, "decoder")
    train_file = decoder_train_file(args, towers)  # also read by the experiment's noise-injection decoder
    bridge_dir = os.path.join(args.work_dir, "bridge_picked")
    bridge_model.save_pretrained(bridge_dir)
    if args.decoder_from and not os.path.exists(os.path.join(out, "model.safetensors")):
        logger.info("  decoder: reusing the trained decoder of %s (it learns from text alone)", args.decoder_from)
        shutil.copytree(args.decoder_from, out, dirs_exist_ok=True)
    if not os.path.exists(os.path.join(out, "model.safetensors")):
        run_recipe("train_captioner", decoder_arguments(args, encoder_dir, bridge_dir, train_file, out))
    return with_bridge(DiffusionLinkForAudioCaptioning.from_pretrained(out), bridge_model).eval()


def decoder_train_file(args: StarterArguments, towers: dict) -> str:
    """The decoder's training data: the AudioCaps + Clotho caption embeddings (as both sides) with their texts, in
    a seeded order."""
    train_file = os.path.join(args.work_dir, "decoder_train.safetensors")
    if not os.path.exists(train_file):
        corpus_captions = read_audiocaps_clotho_captions(args.data)
        order = random.Random(args.seed).sample(range(len(corpus_captions)), len(corpus_captions))
        embeds = towers["corpus_text"][order]
        save_embeddings(train_file, {"audio_embeds": embeds, "text_embeds": embeds},
                        {"captions": [corpus_captions[i] for i in order]})
    return train_file


def decoder_arguments(args: StarterArguments, encoder_dir: str, bridge_dir: str, train_file: str, out: str) -> list[str]:
    """The `training/train_captioner.py` command line of the zero-shot decoder: its recipe, the parts, the data, the
    seed and the overrides (shared with training/experiment.py)."""
    argv = [
        args.recipe_path(args.decoder_recipe), "--audio_tower_name_or_path", encoder_dir,
        "--bridge_name_or_path", bridge_dir, "--feature_extractor_name_or_path", encoder_dir,
        "--train_file", train_file, "--output_dir", out, "--seed", str(args.seed),
    ]
    if args.decoder_steps is not None:
        argv += ["--max_steps", str(args.decoder_steps)]
    return argv


def with_bridge(captioner: DiffusionLinkForAudioCaptioning, bridge_model: DiffusionLinkBridge
                ) -> DiffusionLinkForAudioCaptioning:
    """The captioner with `bridge_model` in place of the bridge it was trained beside.

    The zero-shot decoder learns from text embeddings only, so it does not depend on the bridge: a rebuilt bridge
    (say, after a change of its config) slots in without retraining the decoder.
    """
    captioner.bridge = bridge_model
    captioner.config.bridge_config = bridge_model.config
    captioner.apply_freezing()
    return captioner
