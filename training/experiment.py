#!/usr/bin/env python
"""The paper's table on the starter world: every bridge, one decoder, the 150 held-out ESC-50 clips.

    python training/experiment.py [training/configs/experiment.json] [--data ../shared/data] [--seeds 0 1 2]

The recipe is JSON: `training/configs/experiment.json` (seeds, depth candidates, ablation grids) names the starter's
recipe, whose bridge and decoder recipes every trained row shares; flags override any value.

Diffusion-Link (arXiv 2510.11330) claims that its bridge (1) closes the audio-text modality gap more than earlier
bridges and (2) lifts zero-shot captioning a lot (+52.5 % CIDEr on AudioCaps). This script measures both on the
starter model's space (aiSFX audio head into all-MiniLM-L6-v2 text space, SmolLM2-135M decoder trained on text
embeddings only), with the starter's own split: the 150 test clips train and tune nothing.

Rows (one decoder, trained zero-shot on AudioCaps + Clotho caption embeddings, unless said otherwise):

| row | decoder input |
|---|---|
| identity | the raw audio embedding |
| mean-shift | audio - audio mean + text mean (means from the training clips and the caption corpus) |
| noise-injection | raw audio, into a decoder trained with CapDec noise on its text embeddings (std = the RMS per-coordinate audio-text difference of the training pairs) |
| text-only diffusion | the audio embedding noised to s* and denoised by a bridge trained on text alone ("Diffusion Bridge") |
| caption-memory | a softmax-weighted mix of the corpus caption embeddings nearest to the audio (DeCap/DRCap-style) |
| diffusion-link | the audio embedding through Diffusion-Link |
| text oracle | the text embedding of one of the clip's class captions |

Both diffusion bridges are trained as the starter's bridge is (`training/build_starter.py`: train_bridge.py's default
recipe on 4 of the 5 head folds paired with their class captions, plus the caption corpus; Diffusion-Link keeps its
best checkpoint on the fifth fold) and get their depth s*/T by `diffusion_link.experiments.depth_selection`'s rule (the best
paired cosine among depths whose R@1 stays within 0.02 of the raw audio's) on all 250 training clips held out:
Diffusion-Link links each fold by a twin trained without it (four more bridges per seed, as the starter's build does),
and the text-only bridge, which trains on no audio, links them all itself. Columns: class accuracy (the caption's nearest class
description by MiniLM is the true class), CIDEr-D, BLEU-4, ROUGE-L, METEOR (needs Java) and MiniLM semantic
similarity against the clip's five class captions, and the gap figures of `diffusion_link.modality_gap` against the
first class caption. Ablations of Diffusion-Link: s* in {25, 50, 100, 200, 400} of T=1000, DDIM steps {1, 2, 5, 10},
topology loss off, EMA off. Every bridge is trained once per seed, and the seed also draws the link noise; rows with
no randomness (greedy decoding of a fixed input) have a spread of 0.

Outputs in `--output`: `experiment.json` (every figure, per seed and mean ± std, the environment and wall time),
`experiment.md` (the tables), `experiment_methods.png` and `experiment_ablations.png`. Trained bridges, the
noise-injection decoder and the captions of each row are cached in `--work_dir`, so a rerun only fills in what is
missing. The starter build's cache (`--starter_work_dir`) provides the frozen tower embeddings and the decoder's
training data; it is rebuilt when absent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch

from diffusion_link import CaptionMemoryBridge, DiffusionLinkBridge, DiffusionLinkForAudioCaptioning, MeanShiftBridge
from diffusion_link import modality_gap
from diffusion_link.experiments.atomic_files import atomic_open, atomic_path
from diffusion_link.experiments.recipes import run_recipe
from diffusion_link.experiments.script_arguments import parse_script_args, read_json_config
from diffusion_link.metrics import caption_class_accuracy, caption_score_details
from diffusion_link.starter import STARTER_CAPTIONER
from diffusion_link.starter.build.bridges import (
    bridge_arguments, bridge_train_file, bridge_validation_file, cross_fitted_depth, depth_grid, fold_bridge,
)
from diffusion_link.starter.build.decoder import decoder_arguments
from diffusion_link.starter.build.frozen_parts import (
    EXPERIMENT_WORK_DIR, STARTER_WORK_DIR, FrozenParts, starter_arguments,
)
from diffusion_link.starter.world import REPO_ROOT, embed_texts


logger = logging.getLogger("experiment")

CAPTION_METRICS = ("cider_d", "bleu_4", "rouge_l", "meteor", "semantic_similarity")
GAP_METRICS = ("paired_cosine", "nearest_text_cosine", "centroid_distance", "retrieval_r1", "modality_separability")
EXPERIMENT_RECIPE = os.path.join(REPO_ROOT, "training", "configs", "experiment.json")


@dataclass
class ExperimentArguments:
    """The experiment; the numbers come from the recipe (`training/configs/experiment.json`), not from here."""

    starter_recipe: str = field(metadata={"help": "The starter's build recipe; its bridge and decoder recipes are shared."})
    seeds: list[int] = field(metadata={"help": "Seeds of every trained bridge and of the link noise (distinct)."})
    pick_strengths: list[float] = field(
        metadata={"help": "Depth candidates s*/T of the text-only bridge's pick (its own 0.6 among them); "
                          "Diffusion-Link's are train_bridge.py's `depth_grid`."}
    )
    ablation_strengths: list[float] = field(metadata={"help": "s*/T of the depth ablation."})
    ablation_steps: list[int] = field(metadata={"help": "DDIM steps of the steps ablation."})
    data: str | None = field(default=None, metadata={"help": "The shared data folder ($DIFFUSION_LINK_DATA or ../shared/data)."})
    output: str = field(default=os.path.join(REPO_ROOT, "training", "results"))
    work_dir: str = field(default=EXPERIMENT_WORK_DIR)
    starter_work_dir: str = field(default=STARTER_WORK_DIR)
    captioner: str = field(default=STARTER_CAPTIONER, metadata={"help": "The decoder every row but noise-injection reads."})
    bridge_steps: int | None = field(default=None, metadata={"help": "Override the bridge recipe's max_steps."})
    decoder_steps: int | None = field(default=None, metadata={"help": "Override the noise-injection decoder's max_steps."})
    reuse_noise_injection_from: str | None = field(default=None, metadata={
        "help": "An earlier experiment.json whose noise-injection row is reused instead of training that decoder again "
                "(20-40 min): the row involves no bridge, and its decoder depends only on the heads (their "
                "fingerprint), the decoder recipe and the noise std, which must match. The tables say the row was reused."})
    render_only: bool = field(
        default=False, metadata={"help": "Rewrite experiment.md and the plots from `--output`/experiment.json; run nothing."}
    )

    def __post_init__(self):
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"`seeds` must be distinct and not empty, got {self.seeds}.")


def parse_args(argv: list[str] | None = None) -> ExperimentArguments:
    """`[recipe.json] [--flag value ...]`; without a JSON first, the committed recipe (`EXPERIMENT_RECIPE`)."""
    (args,) = parse_script_args((ExperimentArguments,), argv, default_config=EXPERIMENT_RECIPE)
    return args


class World(FrozenParts):
    """The frozen parts every row shares (`FrozenParts`: tower embeddings, heads, the decoder, the class captions),
    with the experiment's arguments `args`."""

    def __init__(self, args: ExperimentArguments):
        self.args = args
        starter_args = starter_arguments(os.path.join(REPO_ROOT, args.starter_recipe), args.starter_work_dir,
                                         data=args.data, bridge_steps=args.bridge_steps,
                                         decoder_steps=args.decoder_steps)
        super().__init__(starter_args, args.work_dir, args.captioner)


# ---------------------------------------------------------------------------------------------------- training
def trained_bridge(world: World, kind: str, seed: int) -> DiffusionLinkBridge:
    """A bridge of `kind` ("diffusion_link", "no_topology" or "text_only_diffusion") trained with `seed`, its depth
    picked as the starter's is, on all five head folds (cached in `work_dir/bridges`)."""
    out = os.path.join(world.args.work_dir, "bridges", f"{kind}_seed{seed}")
    if not os.path.exists(os.path.join(out, "model.safetensors")):
        train_file = bridge_train_file(world.args.work_dir, world.captions, world.towers, world.head)
        validation_file = bridge_validation_file(world.args.work_dir, world.captions, world.towers, world.head)
        argv = bridge_arguments(dataclasses.replace(world.starter_args, seed=seed), train_file, out, validation_file)
        if kind == "no_topology":
            argv += ["--topology_loss_weight", "0"]
        elif kind == "text_only_diffusion":
            argv += ["--bridge_type", "text_only_diffusion"]
        start = time.time()
        run_recipe("train_bridge", argv)
        logger.info("  trained %s (seed %d) in %.0f s", kind, seed, time.time() - start)
    model = DiffusionLinkBridge.from_pretrained(out).eval()
    folds = int(world.head["folds"].max()) + 1
    if kind == "text_only_diffusion":  # it trains on no audio, so every training clip is held out from it
        cross_fitted_depth([model] * folds, world.captions, world.towers, world.head, world.args.pick_strengths)
    elif kind == "diffusion_link":  # the starter's rule: one depth on every fold, each through a bridge without it
        seeded = dataclasses.replace(world.starter_args, seed=seed)
        bridges = [model] + [fold_bridge(seeded, world.captions, world.towers, world.head, fold,
                                         work_dir=world.args.work_dir, out=f"{out}_fold{fold}")[0]
                             for fold in range(1, folds)]
        cross_fitted_depth(bridges, world.captions, world.towers, world.head, depth_grid(seeded))
    logger.info("  %s seed %d: s*/T=%s (%s)", kind, seed, model.config.strength, json.dumps(model.config.depth_selection))
    return model


def noise_std(world: World) -> float:
    """CapDec's rule: noise as large as the gap, here the RMS per-coordinate difference of the training pairs."""
    ntrain = len(world.head["oof"])
    paired = world.towers["esc_text"][world.captions.first_caption_rows(world.head["labels"][:ntrain])]
    return round(float((world.head["oof"] - paired).pow(2).mean().sqrt()), 2)


def heads_fingerprint(world: World) -> str:
    """A short hash of the test clips' audio embeddings (4 decimals): rows measured on other heads differ."""
    rounded = (world.test_audio.double() * 1e4).round().to(torch.int64).numpy().tobytes()
    return hashlib.sha1(rounded).hexdigest()[:12]


def noise_injection_decoder(world: World) -> DiffusionLinkForAudioCaptioning:
    """The starter's decoder recipe with CapDec noise on the training text embeddings (cached)."""
    out = os.path.join(world.args.work_dir, "noise_decoder")
    marker = os.path.join(out, "noise_injection_std.json")
    std = noise_std(world)
    if read_noise_std(marker) != std:
        work = world.args.starter_work_dir
        train_file = os.path.join(work, "decoder_train.safetensors")
        if not os.path.exists(train_file):
            raise FileNotFoundError(f"{train_file} is missing: run `python training/build_starter.py` first.")
        bridge_dir = os.path.join(work, "bridge_picked")  # read by the builder; a zero-shot decoder never uses it
        argv = decoder_arguments(world.starter_args, os.path.join(work, "encoder"), bridge_dir, train_file, out)
        run_recipe("train_captioner", argv + ["--noise_injection_std", str(std)])
        with open(marker, "w", encoding="utf-8") as f:  # the cache is valid for this std only
            json.dump({"noise_injection_std": std}, f)
    return DiffusionLinkForAudioCaptioning.from_pretrained(out).eval()


def read_noise_std(marker: str) -> float | None:
    """The noise std a cached noise-injection decoder was trained with (its marker file), None without one."""
    if not os.path.exists(marker):
        return None
    with open(marker, encoding="utf-8") as f:
        return json.load(f).get("noise_injection_std")


# ---------------------------------------------------------------------------------------------------- scoring
def score_row(world: World, name: str, embeds: torch.Tensor, decoder=None, decoding: bool = False) -> dict:
    """Caption `embeds` (greedy, or with `decoding` the captioner's default decoding), score the captions and the
    embeddings; captions are cached by row name."""
    name = f"{name}_default_decoding" if decoding else name
    path = os.path.join(world.args.work_dir, "captions", f"{name}.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            captions = json.load(f)
    else:
        captions = world.caption(embeds, decoder, decoding)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_open(path, encoding="utf-8") as f:
            json.dump(captions, f)
    details = caption_score_details(captions, world.references, CAPTION_METRICS)
    row = {"class_accuracy": caption_class_accuracy(
        captions, world.labels, world.head["prototypes"],
        lambda texts: embed_texts(world.encoder, world.text_tokenizer, texts, name))}
    row.update({k: details.scores[k] for k in CAPTION_METRICS if k in details.scores})
    gap = modality_gap(embeds, world.paired_text)  # of the decoder's input
    row.update({k: gap[k] for k in GAP_METRICS})
    row["examples"] = captions[:3]
    logger.info("  %s: class accuracy %.3f, CIDEr-D %.3f; e.g. %r", name, row["class_accuracy"], row["cider_d"],
                captions[0])
    return row


def summarize(runs: list[dict]) -> dict:
    """Mean and (population) std over seeds of every figure."""
    out = {}
    for key in runs[0]:
        if isinstance(runs[0][key], (int, float)):
            values = [r[key] for r in runs]
            out[key] = {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "n": len(values)}
    return out


# ---------------------------------------------------------------------------------------------------- the table
def run(args) -> dict:
    world = World(args)
    raw, seeds = world.test_audio, args.seeds
    corpus = world.towers["corpus_text"]
    rows: dict[str, list[dict]] = {}
    depths: dict[str, list[float]] = {}

    decoded: dict[str, list[dict]] = {}  # the same inputs through the captioner's default decoding
    rows["identity"] = [score_row(world, "identity", raw)]
    decoded["identity"] = [score_row(world, "identity", raw, decoding=True)]
    mean_shift = MeanShiftBridge(raw.shape[1]).fit(world.head["oof"], corpus)
    rows["mean-shift"] = [score_row(world, "mean_shift", mean_shift.link(raw))]
    decoded["mean-shift"] = [score_row(world, "mean_shift", mean_shift.link(raw), decoding=True)]
    reused = {}
    if world.args.reuse_noise_injection_from:
        rows["noise-injection"], reused["noise-injection"] = reused_noise_injection(world)
    else:
        noise_decoder = noise_injection_decoder(world)
        rows["noise-injection"] = [score_row(world, "noise_injection", raw, decoder=noise_decoder)]
        del noise_decoder
    memory = CaptionMemoryBridge(raw.shape[1]).fit(corpus)
    rows["caption-memory"] = [score_row(world, "caption_memory", memory.link(raw))]
    decoded["caption-memory"] = [score_row(world, "caption_memory", memory.link(raw), decoding=True)]

    ablations: dict[str, list[dict]] = {}
    for kind, label in (("text_only_diffusion", "text-only diffusion"), ("diffusion_link", "diffusion-link")):
        for seed in seeds:
            model = trained_bridge(world, kind, seed)
            depths.setdefault(label, []).append(model.config.strength)
            linked = model.link(raw, generator=torch.Generator().manual_seed(seed))
            rows.setdefault(label, []).append(score_row(world, f"{kind}_seed{seed}", linked))
            decoded.setdefault(label, []).append(score_row(world, f"{kind}_seed{seed}", linked, decoding=True))
            if kind != "diffusion_link":
                continue
            strength = model.config.strength
            for s in args.ablation_strengths:
                linked = model.link(raw, strength=s, generator=torch.Generator().manual_seed(seed))
                ablations.setdefault(f"s*={round(s * 1000)}", []).append(
                    score_row(world, f"dl_seed{seed}_strength{s}", linked))
            for steps in args.ablation_steps:
                linked = model.link(raw, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed))
                ablations.setdefault(f"DDIM steps={steps}", []).append(
                    score_row(world, f"dl_seed{seed}_steps{steps}", linked))
            model.config.inference_weights = "raw"
            linked = model.link(raw, generator=torch.Generator().manual_seed(seed))
            ablations.setdefault("EMA off", []).append(score_row(world, f"dl_seed{seed}_raw_weights", linked))
            no_topology = trained_bridge(world, "no_topology", seed)
            no_topology.config.strength = strength  # the same depth as its Diffusion-Link twin: one change at a time
            linked = no_topology.link(raw, generator=torch.Generator().manual_seed(seed))
            ablations.setdefault("topology loss off", []).append(score_row(world, f"dl_seed{seed}_no_topology", linked))

    oracle_rows = []
    for seed in seeds:
        rng = torch.Generator().manual_seed(seed)
        picks = world.captions.random_caption_rows(world.labels, rng)
        oracle = world.towers["esc_text"][picks]
        oracle_rows.append(score_row(world, f"text_oracle_seed{seed}", oracle))
        decoded.setdefault("text oracle", []).append(score_row(world, f"text_oracle_seed{seed}", oracle, decoding=True))
    rows["text oracle"] = oracle_rows
    return {"rows": rows, "ablations": ablations, "depths": depths, "noise_injection_std": noise_std(world),
            "heads_fingerprint": heads_fingerprint(world), "decoder_recipe": decoder_recipe(world),
            "reused": reused, "decoded": decoded,
            "decoding": {k: getattr(world.decoder.config, k) for k in ("num_candidates", "rerank", "rerank_weight")}}


def decoder_recipe(world: World) -> dict:
    """The decoder recipe this run's starter recipe names (the noise-injection decoder's too)."""
    return read_json_config(world.starter_args.recipe_path(world.starter_args.decoder_recipe))


def reused_noise_injection(world: World) -> tuple[list[dict], dict]:
    """The noise-injection row of an earlier run (`--reuse_noise_injection_from`), after checking that its decoder
    would caption the same test embeddings (the heads' fingerprint) with the same decoder (noise std and recipe)."""
    path = world.args.reuse_noise_injection_from
    with open(path, encoding="utf-8") as f:
        earlier = json.load(f)
    if earlier.get("heads_fingerprint") != heads_fingerprint(world):
        raise ValueError(f"{path} was measured on other audio heads (fingerprint {earlier.get('heads_fingerprint')}, "
                         f"this run {heads_fingerprint(world)}): its noise-injection row would caption other test "
                         "embeddings; drop --reuse_noise_injection_from.")
    if earlier.get("noise_injection_std") != noise_std(world):
        raise ValueError(f"{path} used noise std {earlier.get('noise_injection_std')}, this run {noise_std(world)}: "
                         "its noise-injection decoder is not this one; train it (drop --reuse_noise_injection_from).")
    recipe = decoder_recipe(world)
    if earlier.get("decoder_recipe", recipe) != recipe:
        raise ValueError(f"{path} trained its noise-injection decoder with another decoder recipe.")
    rows = earlier["per_seed"]["rows"]["noise-injection"]
    logger.info("  noise_injection: reused from %s (class accuracy %.3f)", path, rows[0]["class_accuracy"])
    return rows, {"from": path, "environment": earlier.get("environment", {})}


def headline(summary: dict) -> dict:
    dl, identity, oracle = summary["diffusion-link"], summary["identity"], summary["text oracle"]
    peers = [m for m in summary if m not in ("diffusion-link", "identity", "text oracle")]
    out = {}
    for key in ("cider_d", "class_accuracy"):
        out[f"{key}_gain_over_identity"] = dl[key]["mean"] / identity[key]["mean"] - 1
        out[f"{key}_ratio_to_oracle"] = dl[key]["mean"] / oracle[key]["mean"]
        out[f"{key}_beats_every_peer"] = all(dl[key]["mean"] > summary[p][key]["mean"] for p in [*peers, "identity"])
        out[f"{key}_best_peer"] = max(peers, key=lambda p: summary[p][key]["mean"])
    return out


# ---------------------------------------------------------------------------------------------------- reports
COLUMNS = (("class_accuracy", "class acc"), ("cider_d", "CIDEr-D"), ("bleu_4", "BLEU-4"), ("rouge_l", "ROUGE-L"),
           ("meteor", "METEOR"), ("semantic_similarity", "sem. sim."), ("paired_cosine", "paired cos"),
           ("centroid_distance", "centroid dist"), ("retrieval_r1", "R@1"), ("modality_separability", "separability"))


def cell(stats: dict | None) -> str:
    if stats is None:
        return "n/a"
    if stats["n"] > 1:
        return f"{stats['mean']:.3f} ± {stats['std']:.3f}"
    return f"{stats['mean']:.3f}"


def markdown(result: dict) -> str:
    lines = [f"Command: `{result['command']}`. Wall time of this run: {result['wall_seconds'] / 60:.0f} min on "
             f"{result['environment']['cpu_count']} CPU cores (parts already in `--work_dir` are reused; a first run also "
             "trains the noise-injection decoder, 20-40 min). "
             f"{len(result['seeds'])} seeds ({', '.join(map(str, result['seeds']))}); mean ± std over seeds. "
             "150 held-out ESC-50 clips; references: the clip's 5 class captions.", ""]
    tables = [("Methods", result["summary"]), ("Diffusion-Link ablations", result["ablation_summary"])]
    if result.get("decoding_summary"):
        d = result["decoding"]
        tables.insert(1, (f"Methods with the captioner's default decoding ({d['num_candidates']} beams, picked by "
                          f"{d['rerank']}; the table above is greedy; noise-injection has its own decoder, left out)",
                          result["decoding_summary"]))
    for title, table in tables:
        lines += [f"### {title}", "", "| method | " + " | ".join(c for _, c in COLUMNS) + " |",
                  "|---|" + "---:|" * len(COLUMNS)]
        for name, stats in table.items():
            lines.append(f"| {name} | " + " | ".join(cell(stats.get(k)) for k, _ in COLUMNS) + " |")
        lines.append("")
    h = result["headline"]
    lines += ["### Headline", "",
              f"- CIDEr-D gain of Diffusion-Link over identity: {h['cider_d_gain_over_identity']:+.1%} (the paper: +52.5 % on AudioCaps).",
              f"- Class-accuracy gain over identity: {h['class_accuracy_gain_over_identity']:+.1%}.",
              f"- Ratio to the text oracle: CIDEr-D {h['cider_d_ratio_to_oracle']:.2f}, class accuracy {h['class_accuracy_ratio_to_oracle']:.2f}.",
              f"- Beats every peer: CIDEr-D {'yes' if h['cider_d_beats_every_peer'] else 'no'} (best peer: {h['cider_d_best_peer']}), "
              f"class accuracy {'yes' if h['class_accuracy_beats_every_peer'] else 'no'} (best peer: {h['class_accuracy_best_peer']}).",
              "- Depths picked on the 250 held-out training clips (s*/T per seed): "
              + "; ".join(f"{k} {v}" for k, v in result["depths"].items()) + ".",
              f"- Noise-injection std: {result['noise_injection_std']}."]
    for name, source in result.get("reused", {}).items():
        lines.append(f"- The {name} row is reused from an earlier run (`{os.path.basename(source['from'])}`): it "
                     "involves no bridge, and its decoder depends only on the heads, the decoder recipe and the noise "
                     "std, which were checked to match.")
    lines.append("")
    return "\n".join(lines)


def plots(result: dict, output: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    names = list(result["summary"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "class_accuracy", "class accuracy"), (axes[1], "cider_d", "CIDEr-D")):
        means = [result["summary"][n][key]["mean"] for n in names]
        stds = [result["summary"][n][key]["std"] for n in names]
        colors = ["tab:red" if n == "diffusion-link" else "tab:gray" if n == "text oracle" else "tab:blue" for n in names]
        ax.bar(range(len(names)), means, yerr=stds, color=colors, capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
        ax.set_title(f"{title}, 150 held-out ESC-50 clips")
    fig.tight_layout()
    paths.append(os.path.join(output, "experiment_methods.png"))
    with atomic_path(paths[-1]) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ablations, identity = result["ablation_summary"], result["summary"]["identity"]
    def grid(prefix: str) -> list[int]:  # the ablation's x values, as the result names its rows
        return sorted(int(name[len(prefix):]) for name in ablations if name.startswith(prefix))

    for ax, prefix, xlabel in ((axes[0], "s*=", "s* (of T=1000)"), (axes[1], "DDIM steps=", "DDIM steps")):
        xs = grid(prefix)
        for key, color in (("class_accuracy", "tab:blue"), ("cider_d", "tab:red")):
            means = [ablations[f"{prefix}{x}"][key]["mean"] for x in xs]
            stds = [ablations[f"{prefix}{x}"][key]["std"] for x in xs]
            ax.errorbar(xs, means, yerr=stds, marker="o", color=color, capsize=3, label=key)
            ax.axhline(identity[key]["mean"], color=color, linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel(xlabel)
        ax.legend(title="dotted: identity")
    axes[0].set_title("Diffusion-Link depth")
    axes[1].set_title("Diffusion-Link DDIM steps (at the picked depth)")
    fig.tight_layout()
    paths.append(os.path.join(output, "experiment_ablations.png"))
    with atomic_path(paths[-1]) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return paths


def environment() -> dict:
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.render_only:
        with open(os.path.join(args.output, "experiment.json"), encoding="utf-8") as f:
            result = json.load(f)
        write_reports(result, args.output)
        return result
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    os.makedirs(args.work_dir, exist_ok=True)
    os.makedirs(args.output, exist_ok=True)
    start = time.time()
    torch.manual_seed(0)
    measured = run(args)
    summary = {name: summarize(runs) for name, runs in measured["rows"].items()}
    order = ("identity", "mean-shift", "noise-injection", "text-only diffusion", "caption-memory", "diffusion-link",
             "text oracle")
    summary = {name: summary[name] for name in order}
    result = {
        "command": " ".join(["python training/experiment.py", *(sys.argv[1:] if argv is None else argv)]),
        "seeds": args.seeds,
        "summary": summary,
        "ablation_summary": {name: summarize(runs) for name, runs in measured["ablations"].items()},
        "decoding": measured["decoding"],
        "decoding_summary": {name: summarize(runs) for name, runs in measured["decoded"].items()},
        "headline": headline(summary),
        "depths": measured["depths"],
        "noise_injection_std": measured["noise_injection_std"],
        "heads_fingerprint": measured["heads_fingerprint"],
        "decoder_recipe": measured["decoder_recipe"],
        "reused": measured["reused"],
        "per_seed": {"rows": measured["rows"], "ablations": measured["ablations"], "decoded": measured["decoded"]},
        "environment": environment(),
        "wall_seconds": round(time.time() - start, 1),
    }
    with atomic_open(os.path.join(args.output, "experiment.json"), encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    write_reports(result, args.output)
    return result


def write_reports(result: dict, output: str) -> None:
    with atomic_open(os.path.join(output, "experiment.md"), encoding="utf-8") as f:
        f.write(markdown(result))
    for path in plots(result, output):
        logger.info("wrote %s", path)
    print(markdown(result))


if __name__ == "__main__":
    main()
