#!/usr/bin/env python
"""Leave one source out: the starter's joint space and bridge rebuilt without a Debian collection, then that
collection's recordings classified zero-shot and captioned (`diffusion_link.experiments.leave_one_source_out`).

    python training/leave_one_source_out.py [training/configs/starter_debian.json] [--held_out ufoai-sound openclonk-data ...]
        [--compare CAPTIONER_DIR ENCODER_DIR] [--report training/results/leave_one_source_out.json]

The starter recipe (default starter_debian.json: esc50 + debian) gives the heads and the bridge (its `--sources`, default esc50 + debian, must hold the held-out
ones; fetch them with `python training/debian_sounds.py`). `--compare` scores a trained captioner and encoder (default:
the committed starter) on the same clips, whole, so the table shows a model that never heard any of them beside the
rebuilt one. Each held-out source's parts are cached in `--work_dir`/leave_one_source_out/SOURCE, and the report is
written after each source: a stopped run goes on where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field

import torch
from transformers import AutoTokenizer

from diffusion_link import DiffusionLinkForAudioCaptioning, StarterAudioTextEncoder
from diffusion_link.experiments.atomic_files import atomic_open
from diffusion_link.experiments.leave_one_source_out import (
    never_named, project, score_source, source_clips, source_prototypes, subset_towers,
)
from diffusion_link.experiments.script_arguments import parse_script_args
from diffusion_link.starter import STARTER_CAPTIONER, STARTER_DIR
from diffusion_link.starter.build.arguments import StarterArguments
from diffusion_link.starter.build.bridges import bridge_head, fold_bridge
from diffusion_link.starter.build.decoder import with_bridge
from diffusion_link.starter.build.heads import heads
from diffusion_link.starter.build.towers import towers
from diffusion_link.starter.world import REPO_ROOT, embed_texts, text_tokenizer


logger = logging.getLogger("leave_one_source_out")
DEBIAN_RECIPE = os.path.join(REPO_ROOT, "training", "configs", "starter_debian.json")
HELD_OUT = ["ufoai-sound", "openclonk-data", "megaglest-data", "redeclipse-data", "widelands-data"]


@dataclass
class LeaveOneSourceOutArguments:
    held_out: list[str] = field(default_factory=lambda: list(HELD_OUT),
                                metadata={"help": "The Debian collections to leave out, one at a time."})
    compare: list[str] = field(default_factory=lambda: [STARTER_CAPTIONER, os.path.join(STARTER_DIR, "encoder")],
                               metadata={"help": "A captioner folder and its encoder folder to score on the same clips."})
    decoder: str = field(default=STARTER_CAPTIONER, metadata={
        "help": "The captioner whose decoder (trained on text alone) captions the rebuilt parts' embeddings."})
    report: str = field(default=os.path.join(REPO_ROOT, "training", "results", "leave_one_source_out.json"),
                        metadata={"help": "Where the figures go (JSON)."})


def main(argv: list[str] | None = None) -> dict:
    loso, args = parse_script_args((LeaveOneSourceOutArguments, StarterArguments), argv, default_config=DEBIAN_RECIPE)
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    start = time.time()
    world = args.world()
    missing = [s for s in loso.held_out if s not in world.sources]
    if missing:
        raise ValueError(f"--held_out {missing} are not among the recipe's sources {list(world.sources)}.")
    split = world.split()
    encoder = StarterAudioTextEncoder.from_bases()
    full = towers(args, world, encoder, split)
    minilm_tokenizer = text_tokenizer(encoder)

    def embed(texts):
        return embed_texts(encoder, minilm_tokenizer, texts, "captions")

    decoder_tokenizer = AutoTokenizer.from_pretrained(loso.decoder)
    compare = DiffusionLinkForAudioCaptioning.from_pretrained(loso.compare[0]).eval()
    compare_tokenizer = AutoTokenizer.from_pretrained(loso.compare[0])
    compare_encoder = StarterAudioTextEncoder.from_pretrained(loso.compare[1]).eval()
    compare.audio_text_tokenizer = minilm_tokenizer
    results = {"held_out": {}, "compare": loso.compare, "recipe_sources": args.sources}
    done = {}
    if os.path.exists(loso.report):  # a stopped run goes on: each finished source is kept
        with open(loso.report, encoding="utf-8") as f:
            done = json.load(f).get("held_out", {})
    for name in loso.held_out:
        if name in done and "rebuilt" in done[name]:
            results["held_out"][name] = done[name]
            continue
        clips, audio = source_clips(world, split, full, name)
        labels, prototypes = source_prototypes(world, full, name)
        row = done.get(name) or {"compare": score_source(compare, compare_tokenizer, embed,
                                                         project(compare_encoder, audio), clips, labels, prototypes)}
        results["held_out"][name] = row
        write(loso.report, results)
        logger.info("%s, compared model: %s", name, {k: v for k, v in row["compare"].items() if k != "examples"})
        sub_args = dataclasses.replace(args, work_dir=os.path.join(args.work_dir, "leave_one_source_out", name))
        os.makedirs(sub_args.work_dir, exist_ok=True)
        sub_world = args.world(leave_out=name)
        sub_split = sub_world.split()
        sub_towers = subset_towers(world, split, full, sub_world, sub_split)
        head = heads(sub_args, sub_world, encoder, sub_split, sub_towers)  # the encoder keeps the final head
        bridge, _ = fold_bridge(sub_args, sub_world.captions, sub_towers, bridge_head(sub_args, sub_world, head), 0)
        captioner = with_bridge(DiffusionLinkForAudioCaptioning.from_pretrained(loso.decoder), bridge).eval()
        captioner.audio_text_tokenizer = minilm_tokenizer
        row["rebuilt"] = score_source(captioner, decoder_tokenizer, embed, project(encoder, audio), clips, labels,
                                      prototypes)
        row["rebuilt"]["heads"] = head["report"]
        logger.info("%s, rebuilt without it: %s", name, {k: v for k, v in row["rebuilt"].items() if k != "examples"})
        write(loso.report, results)
    for model in ("compare", "rebuilt"):
        rows = [r[model] for r in results["held_out"].values()]
        results[f"mean_{model}"] = {k: sum(r[k] for r in rows) / len(rows)
                                    for k in ("zero_shot_accuracy", "caption_class_accuracy", "search_precision_at_5")}
        results[f"never_named_{model}"] = never_named({n: r[model] for n, r in results["held_out"].items()})
    results["seconds"] = round(time.time() - start, 1)
    write(loso.report, results)
    logger.info("means: compared %s, rebuilt %s; %.1f min", results["mean_compare"], results["mean_rebuilt"],
                (time.time() - start) / 60)
    return results


def write(path: str, results: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_open(path, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
