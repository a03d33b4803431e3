"""Does a candidate pool drawn from several bridge depths caption better than the beams of one depth?

The captioner's default decoding takes `num_candidates` beams from the audio embedding bridged at the bridge's own
depth s*/T and picks one by `rerank`. Here the pool also takes as many beams from the same clip bridged at other depths
(0: the raw audio embedding, no bridge), and the pick is made among all of them, by the LM, by the audio-caption
similarity in the joint space, or by both (the captioner's `rerank_weight`). Measured on head fold 0 (training clips
that neither the bridge nor the decoder trained on: where a choice would be made) and on the 150 test clips
(reported only), with the decoding time of each pool against the default's:

    python training/depth_pool.py --work_dir DIR --starter_work_dir DIR [--depths 0 0.05 0.1 0.2]

It reuses the experiment's cached heads (`training/experiment.py --work_dir`) and the committed starter captioner,
and writes `--output`/depth_pool.json and depth_pool.md.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field

import torch

from diffusion_link.experiments.atomic_files import atomic_open
from diffusion_link.experiments.script_arguments import parse_script_args
from diffusion_link.metrics import caption_class_correct
from diffusion_link.configuration_diffusion_link_captioner import DEFAULT_MAX_NEW_TOKENS
from diffusion_link.reranking import rank_candidates
from diffusion_link.starter import STARTER_CAPTIONER
from diffusion_link.starter.build.arguments import STARTER_RECIPE
from diffusion_link.starter.build.frozen_parts import (
    EXPERIMENT_WORK_DIR, STARTER_WORK_DIR, FrozenParts, starter_arguments,
)
from diffusion_link.starter.world import REPO_ROOT, embed_texts


logger = logging.getLogger("depth_pool")


@dataclass
class DepthPoolArguments:
    depths: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2], metadata={
        "help": "Other depths s*/T whose beams may join the default's (0: the raw audio embedding)."})
    work_dir: str = field(default=EXPERIMENT_WORK_DIR, metadata={"help": "The experiment's work dir (its cached heads)."})
    starter_work_dir: str = field(default=STARTER_WORK_DIR)
    captioner: str = field(default=STARTER_CAPTIONER)
    data: str | None = field(default=None)
    output: str = field(default=os.path.join(REPO_ROOT, "training", "results"))


def pools(own: float, depths: list[float]) -> list[tuple[float, ...]]:
    """The default's depth alone, with each other depth, and with all of them."""
    others = [d for d in depths if d != own]
    out = [(own,), *[(own, d) for d in others]]
    if len(others) > 1:
        out.append((own, *others))
    return out


def measure(args: DepthPoolArguments) -> dict:
    world = FrozenParts(starter_arguments(STARTER_RECIPE, args.starter_work_dir, data=args.data), args.work_dir,
                        args.captioner)
    captioner, config = world.decoder, world.decoder.config
    own = captioner.bridge.config.strength
    ntrain = len(world.head["oof"])
    fold0 = world.head["folds"] == 0
    sets = {"fold0": (world.head["oof"][fold0], world.head["labels"][:ntrain][fold0]),
            "test": (world.test_audio, world.labels)}

    def correct(captions, labels):
        return caption_class_correct(captions, labels, world.head["prototypes"],
                                     lambda texts: embed_texts(world.encoder, world.text_tokenizer, texts, "pool"))

    depths = sorted({own, *args.depths})
    found, seconds = {}, {}
    for name, (audio, _) in sets.items():
        for depth in depths:
            embeds = audio if depth == 0 else captioner.link(audio, strength=depth,
                                                             generator=torch.Generator().manual_seed(0))
            start = time.time()
            found[name, depth] = captioner.caption_embeds(embeds, world.tokenizer, num_candidates=config.num_candidates,
                                                          audio_embeds=audio, max_new_tokens=DEFAULT_MAX_NEW_TOKENS)
            seconds[name, depth] = time.time() - start
    rules = [(config.rerank, config.rerank_weight), ("similarity", 1.0), ("combined", config.rerank_weight)]
    rules = list(dict.fromkeys(rules))
    rows = []
    for pool in pools(own, depths):
        for rerank, weight in rules:
            row = {"depths": list(pool), "rerank": rerank, "rerank_weight": weight,
                   "time_x_default": round(sum(seconds["test", d] for d in pool) / seconds["test", own], 2)}
            for name, (_, labels) in sets.items():
                merged = [sum((found[name, d][i] for d in pool), []) for i in range(len(labels))]
                captions = [rank_candidates(c, rerank, weight)[0]["text"] for c in merged]
                row[f"{name}_class_accuracy"] = round(sum(correct(captions, labels)) / len(labels), 4)
            rows.append(row)
            logger.info("  %s", json.dumps(row))
    return {"default": {"strength": own, "num_candidates": config.num_candidates, "rerank": config.rerank,
                        "rerank_weight": config.rerank_weight}, "rows": rows,
            "clips": {name: len(labels) for name, (_, labels) in sets.items()}}


def markdown(result: dict) -> str:
    default = result["default"]
    lines = [f"Default decoding: {default['num_candidates']} beams at s*/T = {default['strength']}, picked by "
             f"{default['rerank']}. Pools add as many beams per other depth (0 = raw audio). Class accuracy on head "
             f"fold 0 ({result['clips']['fold0']} clips, where a choice would be made) and on the "
             f"{result['clips']['test']} test clips (report only).", "",
             "| depths in the pool | pick | fold 0 | test | time × default |", "|---|---|---:|---:|---:|"]
    for r in result["rows"]:
        pick = r["rerank"] + (f" w={r['rerank_weight']}" if r["rerank"] == "combined" else "")
        lines.append(f"| {', '.join(str(d) for d in r['depths'])} | {pick} | {r['fold0_class_accuracy']:.3f} | "
                     f"{r['test_class_accuracy']:.3f} | {r['time_x_default']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    (args,) = parse_script_args((DepthPoolArguments,), list(sys.argv[1:] if argv is None else argv))
    result = measure(args)
    os.makedirs(args.output, exist_ok=True)
    with atomic_open(os.path.join(args.output, "depth_pool.json"), encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    with atomic_open(os.path.join(args.output, "depth_pool.md"), encoding="utf-8") as f:
        f.write(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
