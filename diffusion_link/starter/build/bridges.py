"""Stages "bridge" and "fold bridges": Diffusion-Link in the heads' space, trained by `training/train_bridge.py` (run
as a recipe) with the starter's bridge recipe. Text side: the AudioCaps + Clotho captions; cross-sample part: the
out-of-fold embeddings of every head fold but one, each with each of its label's captions. The starter's own bridge
leaves out fold 0, which validates it (best checkpoint, early stopping); four more bridges each leave out one of
folds 1-4, so every training clip is linked once by a bridge that never trained on it, and the depth s*/T is picked
on all those held-out pairs (`cross_fitted_depth`) and set on every bridge."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

import torch

from diffusion_link import DiffusionLinkBridge
from diffusion_link.experiments.depth_selection import DEPTH_GRID, pick_depth, sweep_depths_cross_fitted
from diffusion_link.experiments.embedding_files import save_embeddings
from diffusion_link.experiments.recipes import run_recipe
from diffusion_link.experiments.script_arguments import read_json_config
from diffusion_link.starter.build.arguments import StarterArguments
from diffusion_link.starter.build.stages import stage
from diffusion_link.starter.world import CaptionTable


logger = logging.getLogger("build_starter")


@stage("bridge")
def bridge(args: StarterArguments, captions: CaptionTable, towers: dict, head: dict) -> tuple[DiffusionLinkBridge, dict]:
    """Train the bridge on 4 of the 5 head folds; validate it, keep its best checkpoint and pick its depth on the 5th,
    which it never trains on."""
    model, out = fold_bridge(args, captions, towers, head, 0)
    curve = os.path.join(out, "validation_curve.png")
    if os.path.exists(curve):
        os.makedirs(args.results_dir, exist_ok=True)
        shutil.copyfile(curve, os.path.join(args.results_dir, "starter_bridge_validation.png"))
    report = {"validation_clips": int((head["folds"] == 0).sum()), "depth_selection": model.config.depth_selection,
              "fold0_strength": model.config.strength, **bridge_training_report(out)}
    logger.info("  bridge: %s", json.dumps(report))
    return model, report


def bridge_head(args: StarterArguments, world, head: dict) -> dict:
    """The heads' tensors the bridges train on: the training clips of the recipe's `bridge_sources` only (all when
    None), with their folds and labels (the test clips' rows kept as they are)."""
    if not args.bridge_sources:
        return head
    names = list(world.sources)
    unknown = [n for n in args.bridge_sources if n not in names]
    if unknown:
        raise ValueError(f"--bridge_sources {unknown} are not among the world's sources {names}.")
    ntrain = len(head["oof"])
    keep = torch.isin(head["sources"][:ntrain], torch.tensor([names.index(n) for n in args.bridge_sources]))
    return {**head, "oof": head["oof"][keep], "folds": head["folds"][keep],
            "labels": torch.cat([head["labels"][:ntrain][keep], head["labels"][ntrain:]])}


def fold_bridge(args: StarterArguments, captions: CaptionTable, towers: dict, head: dict, fold: int,
                work_dir: str | None = None, out: str | None = None) -> tuple[DiffusionLinkBridge, str]:
    """The bridge (train_bridge.py, the starter's recipe, `args.seed`) trained on every head fold but `fold`, which
    validates it (checkpoint, early stopping); its data files go to `work_dir` (default `args.work_dir`) and it is
    cached in `out` (default `work_dir`/bridge for fold 0, the starter's own, else bridge_fold{k})."""
    work_dir = work_dir or args.work_dir
    out = out or os.path.join(work_dir, "bridge" if fold == 0 else f"bridge_fold{fold}")
    if not os.path.exists(os.path.join(out, "model.safetensors")):
        train_file = bridge_train_file(work_dir, captions, towers, head, fold)
        validation_file = bridge_validation_file(work_dir, captions, towers, head, fold)
        start = time.time()
        run_recipe("train_bridge", bridge_arguments(args, train_file, out, validation_file))
        with open(os.path.join(out, "build_timing.json"), "w", encoding="utf-8") as f:
            json.dump({"train_bridge_seconds": round(time.time() - start, 1)}, f)
    return DiffusionLinkBridge.from_pretrained(out).eval(), out


@stage("fold bridges")
def fold_bridges(args: StarterArguments, captions: CaptionTable, towers: dict, head: dict,
                 bridge_model: DiffusionLinkBridge) -> tuple[list[DiffusionLinkBridge], dict]:
    """One bridge per head fold, each trained without that fold: [the starter's bridge (fold 0), folds 1-4]. Through
    them every training clip is linked by a bridge that never trained on it, which gives the decoding stage its
    held-out set and the depth one pick on all 250 held-out pairs (`cross_fitted_depth`): a fold's ~50 pairs alone
    pick anything from 0.01 to 0.2. Every bridge, the starter's too, gets that depth."""
    folds = range(1, int(head["folds"].max()) + 1)
    bridges = [bridge_model] + [fold_bridge(args, captions, towers, head, fold)[0] for fold in folds]
    report = {"per_fold_strength": [b.config.strength for b in bridges],
              "depth_selection": cross_fitted_depth(bridges, captions, towers, head, depth_grid(args))}
    logger.info("  fold bridges: %s", json.dumps(report))
    return bridges, report


def depth_grid(args: StarterArguments) -> list[float]:
    """The depth candidates of the bridge recipe (train_bridge.py's `depth_grid`)."""
    return list(read_json_config(args.recipe_path(args.bridge_recipe)).get("depth_grid", DEPTH_GRID))


def cross_fitted_depth(bridges: list[DiffusionLinkBridge], captions: CaptionTable, towers: dict, head: dict,
                       strengths) -> dict:
    """Pick the depth by `diffusion_link.experiments.depth_selection`'s rule on every head fold's pairs at once, fold
    k linked by `bridges[k]` (trained without it), and set it on every bridge. A bridge that trains on no audio
    (text-only) is held out from every fold: pass it once per fold."""
    pairs = [fold_pairs(captions, towers, head, fold) for fold in range(len(bridges))]
    pick = pick_depth(sweep_depths_cross_fitted(bridges, [a for a, _ in pairs], [t for _, t in pairs], strengths))
    for b in bridges:
        b.config.strength = pick["strength"]
        b.config.depth_selection = pick
    return pick


def bridge_training_report(out: str) -> dict:
    """The kept checkpoint, the held-out figures of each evaluation and the training time of the bridge in `out`."""
    report = {}
    timing = os.path.join(out, "build_timing.json")
    if os.path.exists(timing):
        with open(timing, encoding="utf-8") as f:
            report.update(json.load(f))
    states = sorted((d for d in os.listdir(out) if d.startswith("checkpoint-")), key=lambda d: int(d.split("-")[1]))
    if states:
        with open(os.path.join(out, states[-1], "trainer_state.json"), encoding="utf-8") as f:
            state = json.load(f)
        report["best_checkpoint"] = os.path.basename(state.get("best_model_checkpoint") or "")
        report["validation_curve"] = [{k: e[k] for k in ("step", "eval_paired_cosine", "eval_retrieval_r1")}
                                      for e in state["log_history"] if "eval_paired_cosine" in e]
    return report


def bridge_train_file(work_dir: str, captions: CaptionTable, towers: dict, head: dict, fold: int = 0) -> str:
    """The bridge's training embeddings: the out-of-fold clips of every head fold but `fold`, each paired with each of
    its label's captions, and the AudioCaps + Clotho captions as unpaired text. `fold` is left for validation."""
    train_file = os.path.join(work_dir, "bridge_train.safetensors" if fold == 0 else f"bridge_train_fold{fold}.safetensors")
    if not os.path.exists(train_file):
        held = head["folds"] == fold
        labels = head["labels"][: len(head["oof"])]
        fit_audio, fit_labels = head["oof"][~held], labels[~held]
        clips, rows = captions.pair_rows(fit_labels)  # each clip with each of its label's captions
        save_embeddings(train_file, {"audio_embeds": fit_audio[clips], "text_embeds": towers["esc_text"][rows],
                                     "unpaired_text_embeds": towers["corpus_text"]})
    return train_file


def bridge_validation_file(work_dir: str, captions: CaptionTable, towers: dict, head: dict, fold: int = 0) -> str:
    """The bridge's validation pairs: the out-of-fold clips of head fold `fold`, each with its label's first caption."""
    path = os.path.join(work_dir, "bridge_validation.safetensors" if fold == 0
                        else f"bridge_validation_fold{fold}.safetensors")
    if not os.path.exists(path):
        audio, text = fold_pairs(captions, towers, head, fold)
        save_embeddings(path, {"audio_embeds": audio, "text_embeds": text})
    return path


def fold_pairs(captions: CaptionTable, towers: dict, head: dict, fold: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(audio, text) of head fold `fold`: (n, D) out-of-fold audio embeddings and their label's first caption's."""
    held = head["folds"] == fold
    labels = head["labels"][: len(head["oof"])][held]
    return head["oof"][held], towers["esc_text"][captions.first_caption_rows(labels)]


def bridge_arguments(args: StarterArguments, train_file: str, out: str, validation_file: str) -> list[str]:
    """The `training/train_bridge.py` command line of the starter's bridge: its recipe, the data, the seed and the
    overrides (shared with training/experiment.py)."""
    argv = [args.recipe_path(args.bridge_recipe), "--train_file", train_file, "--validation_file", validation_file,
            "--output_dir", out, "--seed", str(args.seed)]
    if args.bridge_steps is not None:
        argv += ["--max_steps", str(args.bridge_steps)]
    if args.bridge_hidden_size is not None:
        argv += ["--hidden_size", str(args.bridge_hidden_size)]
    return argv
