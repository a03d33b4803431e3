#!/usr/bin/env python
"""Build the starter captioner from real pretrained parts, offline, reproducibly (fixed seed, logged stages).

    python training/build_starter.py [training/configs/starter.json] [--data ../shared/data] [--decoder_steps 700]

The recipe is JSON: `training/configs/starter.json` (the heads, the depth candidates, which bridge and decoder recipes)
names `starter_bridge.json` and `starter_decoder.json`, the `train_bridge.py` / `train_captioner.py` configs of the
two trained parts; flags override any value (`--bridge_steps`, `--decoder_steps`, `--bridge_hidden_size` override
those sub-recipes' `max_steps` / `hidden_size`).

This script only runs the stages, in order; each lives in `diffusion_link/starter/build/` and caches its result in
`--work_dir` (default `$DIFFUSION_LINK_CACHE/starter_build`), so a rerun resumes. The data (sources, split, folds,
captions per label) is `diffusion_link.starter.world`'s.

1. split    the recipe's `sources`: ESC-50 fold 4 (`--data`/esc50), per class 5 clips train / 3 test,
            deterministically, keeping clips cut from one source recording on one side where the class allows it (the
            150 test clips train nothing); and the 18 Debian collections (`diffusion_link.starter.debian.sources`,
            2,094 recordings fetched beforehand by `training/debian_sounds.py`), all training clips, each labelled by
            its concept (502 concepts, five caption variants each: diffusion_link/starter/debian_captions.json).
2. towers   frozen aiSFX embeddings of the 2,494 clips; frozen MiniLM embeddings of the class captions
            (diffusion_link/starter/esc50_captions.json, debian_captions.json), AudioCaps train and Clotho
            development captions; cached under a key of the clips and captions.
3. heads    the audio head into MiniLM's space (InfoNCE) and 5-fold cross-fitted heads whose out-of-fold embeddings
            give the bridge realistic audio (folds by recording, stratified by class: `world.source_folds`); with
            `--head_augmentation_copies N` they also see N augmented versions of each training clip (stage
            "augment"; the committed starter used 8 when it had ESC-50 alone, and none since the Debian recordings
            joined). `--stop_after heads` ends the build here.
4. bridge   Diffusion-Link by train_bridge.py on 4/5 of the out-of-fold clips with their class captions plus the
            caption corpus, validated on head fold 0 (`--results_dir`/starter_bridge_validation.png).
   fold bridges  four more bridges, each trained without one of folds 1-4; the depth s*/T is picked on all the
            held-out pairs (`sweep_depths_cross_fitted`) and set on every bridge.
5. decoder  SmolLM2-135M-Instruct with LoRA and the soft-prefix projector, trained zero-shot on caption embeddings
            (train_captioner.py); `--decoder_from FOLDER` reuses a trained one.
6. evaluate the 150 test clips: class accuracy with and without the bridge and with the text oracle, gap figures.
7. decoding the default decoding and the confidence calibration, picked on held-out training clips (the 250 ESC-50
            ones and 250 drawn from the Debian ones; each clip named among its own source's labels) within
            `decoding_time_budget` x greedy's time (`--results_dir`/starter_reliability.png).
8. assemble `--output`/encoder and `--output`/captioner: only the trained parts, bases referenced, with a model card.
"""

from __future__ import annotations

import json
import logging
import os
import time

import torch

from diffusion_link import StarterAudioTextEncoder, StarterFeatureExtractor
from diffusion_link.starter.build.arguments import StarterArguments, parse_args
from diffusion_link.starter.build.assemble import assemble
from diffusion_link.starter.build.bridges import bridge, bridge_arguments, bridge_head, fold_bridges
from diffusion_link.starter.build.decoder import decoder, decoder_arguments
from diffusion_link.starter.build.decoding import decoding
from diffusion_link.starter.build.evaluate import evaluate
from diffusion_link.starter.build.heads import heads
from diffusion_link.starter.build.stages import stage
from diffusion_link.starter.build.towers import towers
from diffusion_link.starter.world import StarterWorld, sources_report, write_split


__all__ = ["main", "parse_args", "bridge_arguments", "decoder_arguments"]  # the recipe tests read the command lines

logger = logging.getLogger("build_starter")


@stage("split")
def split_clips(args: StarterArguments, world: StarterWorld) -> dict:
    """The world's train/test split, also written to `--output`/split.json."""
    split = world.split()
    logger.info("  split: %d train / %d test clips; split within one recording: %s", len(split["train"]),
                len(split["test"]), split["split_within_source"])
    os.makedirs(args.output, exist_ok=True)
    write_split(split, os.path.join(args.output, "split.json"))
    return split


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    os.makedirs(args.work_dir, exist_ok=True)
    torch.manual_seed(args.seed)
    start = time.time()
    reports = {}

    world = args.world()
    split = split_clips(args, world)
    reports["sources"] = sources_report(world, split)
    encoder = StarterAudioTextEncoder.from_bases()
    embeddings = towers(args, world, encoder, split)
    head = heads(args, world, encoder, split, embeddings)
    reports["heads"] = head["report"]
    if args.stop_after == "heads":
        return reports
    encoder_dir = os.path.join(args.work_dir, "encoder")
    encoder.save_pretrained(encoder_dir)
    StarterFeatureExtractor().save_pretrained(encoder_dir)
    linked = bridge_head(args, world, head)  # the clips the bridges pair with captions (`bridge_sources`)
    bridge_model, reports["bridge"] = bridge(args, world.captions, embeddings, linked)
    bridges, reports["fold_bridges"] = fold_bridges(args, world.captions, embeddings, linked, bridge_model)  # the depth
    captioner = decoder(args, embeddings, encoder_dir, bridge_model)
    decoder_dir = os.path.join(args.work_dir, "decoder")
    if not args.skip_eval:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(decoder_dir)
        reports["evaluate"] = evaluate(args, world, captioner, tokenizer, embeddings, head)
        reports["decoding"] = decoding(args, world, captioner, tokenizer, head, bridges)
    out = assemble(args, encoder_dir, decoder_dir, bridge_model, reports)
    reports["build_seconds"] = round(time.time() - start, 1)
    write_reports(args, reports)
    logger.info("starter written to %s in %.1f min", out, (time.time() - start) / 60)
    return reports


def write_reports(args: StarterArguments, reports: dict) -> None:
    """Every report to `--work_dir`/starter_eval.json; without the caption examples to `--output`/build_report.json."""
    with open(os.path.join(args.work_dir, "starter_eval.json"), "w", encoding="utf-8") as f:
        json.dump(reports, f, indent=2)
    with open(os.path.join(args.output, "build_report.json"), "w", encoding="utf-8") as f:
        json.dump({k: v for k, v in reports.items() if k != "evaluate"} | {
            "evaluate": {k: v for k, v in reports.get("evaluate", {}).items() if k != "examples"}}, f, indent=2)


if __name__ == "__main__":
    main()
