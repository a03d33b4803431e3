#!/usr/bin/env python
"""Train a Diffusion-Link bridge (or the text-only "Diffusion Bridge" peer) on pre-extracted embeddings.

    python training/train_bridge.py config.json
    python training/train_bridge.py --train_file embeds.safetensors --output_dir out --max_steps 2000
    torchrun --nproc_per_node=2 training/train_bridge.py config.json      # DDP (gloo on CPU)

The train file is the safetensors format of `diffusion_link.experiments.embedding_files`: paired `audio_embeds` / `text_embeds`
rows and optional `unpaired_text_embeds`. D is read from the data. The EMA of the denoiser is updated after every
optimiser step by a callback; it is part of the model's weights, so checkpoints carry it and `resume_from_checkpoint`
restores it. Re-running the same command resumes from the newest intact checkpoint (a damaged one is logged and
passed over) and refuses one saved with another architecture, naming the fields that differ
(`diffusion_link.experiments.script_arguments.resume_checkpoint`). The result is a `save_pretrained` folder
(`AutoModel.from_pretrained(out, trust_remote_code=True)`).

Validation (a Diffusion-Link bridge with paired rows): `--validation_file`, or else `--validation_split_percentage`
(5) of the paired rows, drawn with the seed and never trained on. At every save the Trainer evaluates `link()` at the
configured depth on them (`compute_metrics`: held-out paired cosine, nearest-text cosine, centroid distance, R@1,
R@5 and `selection_score` = paired cosine + R@1), keeps the checkpoint with the best `selection_score` (moving
audio onto its caption without losing which caption it is) and stops after `--early_stopping_patience` evaluations
without improvement. Then `strength` is picked on the same pairs by `diffusion_link.experiments.depth_selection` and saved in the
config, with the sweep in `depth_sweep.json` / `depth_sweep.png`. The held-out figures of every evaluation are drawn
against the step in `validation_curve.png` (the kept checkpoint marked).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments, set_seed

from diffusion_link import DiffusionLinkBridge, DiffusionLinkConfig, modality_gap, text_only_diffusion_config
from diffusion_link.experiments.depth_selection import DEPTH_GRID, pick_depth, sweep_depths, write_depth_sweep
from diffusion_link.experiments.embedding_files import UNPAIRED_KEY, load_embeddings
from diffusion_link.metrics import paired_figures
from diffusion_link.experiments.distributed import finish_distributed
from diffusion_link.experiments.script_arguments import (
    config_field,
    parse_script_args,
    read_json_config,
    resume_checkpoint,
    run_script,
)
from diffusion_link.validation import check_choice, check_non_negative_int


logger = logging.getLogger(__name__)

# What this script trains: the paper's bridge or the text-only peer. (Not the kinds of bridge a captioner can hold,
# which `DiffusionLinkCaptionerConfig.bridge_type` names.)
TRAINABLE_BRIDGE_TYPES = ("diffusion_link", "text_only_diffusion")


@dataclass
class ModelArguments:
    """The bridge's recipe. The fields that set a `DiffusionLinkConfig` argument take their defaults from it."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved bridge to continue training from. Default: a new bridge."}
    )
    bridge_type: str = field(
        default="diffusion_link",
        metadata={"help": "'diffusion_link' (paired + text, the paper) or 'text_only_diffusion' (the text-only peer)."},
    )
    hidden_size: int | None = field(
        default=None, metadata={"help": "Width of the residual MLP. Default: 2D (the paper's 'about 2D')."}
    )
    num_blocks: int = config_field(DiffusionLinkConfig, "num_blocks", help="Number of residual blocks.")
    dropout: float = config_field(DiffusionLinkConfig, "dropout", help="Dropout inside the residual blocks.")
    max_train_timestep: int | None = config_field(
        DiffusionLinkConfig, "max_train_timestep",
        help="Draw training timesteps from [0, this). Default: the whole schedule.",
    )
    topology_loss_weight: float | None = field(
        default=None, metadata={"help": "lambda of the topology loss. Default: the bridge type's (1.0 / 0.0)."}
    )
    ema_decay: float = config_field(DiffusionLinkConfig, "ema_decay", help="EMA decay of the denoiser weights.")
    x0_parameterization: str = config_field(
        DiffusionLinkConfig, "x0_parameterization",
        help="'direct' (the network outputs x0) or 'skip' (x0 = sqrt(a_t) x_t + sqrt(1 - a_t) F).",
    )
    strength: float | None = field(
        default=None, metadata={"help": "Default link() depth s*/T saved in the config (0.1 / 0.6 by type)."}
    )
    num_inference_steps: int = config_field(
        DiffusionLinkConfig, "num_inference_steps", help="Default number of DDIM steps of link()."
    )
    standardization: str = config_field(DiffusionLinkConfig, "standardization",
                                        help="'scalar' or 'per_dim' text-embedding std.")
    input_normalization: str = config_field(DiffusionLinkConfig, "input_normalization",
                                            help="'l2' (unit vectors, CLAP) or 'none'.")
    audio_adapter: str = config_field(
        DiffusionLinkConfig, "audio_adapter",
        help="'none' (the paper) or 'linear' (start the diffusion from a ridge map of the audio, fit in closed form "
             "on the training pairs; DiffusionLinkConfig.audio_adapter).",
    )

    def __post_init__(self):
        check_choice("bridge_type", self.bridge_type, TRAINABLE_BRIDGE_TYPES)
        # The config's own checks of every field it takes (sizes, rates, modes), before any data is read; D is the
        # data's, any D does here.
        self.build_config(embedding_dim=1)

    def build_config(self, embedding_dim: int) -> DiffusionLinkConfig:
        fields = dict(
            embedding_dim=embedding_dim,
            hidden_size=2 * embedding_dim if self.hidden_size is None else self.hidden_size,
            num_blocks=self.num_blocks,
            dropout=self.dropout,
            max_train_timestep=self.max_train_timestep,
            ema_decay=self.ema_decay,
            x0_parameterization=self.x0_parameterization,
            num_inference_steps=self.num_inference_steps,
            standardization=self.standardization,
            input_normalization=self.input_normalization,
            audio_adapter="none" if self.bridge_type == "text_only_diffusion" else self.audio_adapter,
        )
        if self.topology_loss_weight is not None:
            fields["topology_loss_weight"] = self.topology_loss_weight
        if self.strength is not None:
            fields["strength"] = self.strength
        if self.bridge_type == "text_only_diffusion":
            return text_only_diffusion_config(**fields)
        return DiffusionLinkConfig(**fields)


@dataclass
class DataArguments:
    train_file: str = field(
        metadata={"help": "safetensors file with `audio_embeds`/`text_embeds` (N, D) and optional unpaired text."}
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Paired embeddings to validate on (default: a split of the train file)."}
    )
    validation_split_percentage: int = field(
        default=5,
        metadata={"help": "Without --validation_file: the share of paired rows held out (by seed) to validate on; "
                          "0 trains on all of them."},
    )
    early_stopping_patience: int = field(
        default=5, metadata={"help": "Evaluations without a better selection_score before training stops; 0: never."}
    )
    pick_depth: bool = field(
        default=True,
        metadata={"help": "After training, pick `strength` on the validation pairs (diffusion_link.experiments.depth_selection)."},
    )
    depth_grid: list[float] = field(
        default_factory=lambda: list(DEPTH_GRID), metadata={"help": "Candidate depths s*/T of the pick."}
    )
    paired_fraction: float = field(
        default=0.5,
        metadata={
            "help": "Share of training rows drawn from the paired data when the file also has unpaired text; the "
            "smaller set is cycled. Without it a large text corpus would starve the cross-sample (audio) branch."
        },
    )

    def __post_init__(self):
        if not 0.0 < self.paired_fraction < 1.0:  # NaN fails it too
            raise ValueError(f"`paired_fraction` must lie in (0, 1), got {self.paired_fraction}.")
        if check_non_negative_int("validation_split_percentage", self.validation_split_percentage) >= 100:
            raise ValueError(f"`validation_split_percentage` must lie in [0, 100), got {self.validation_split_percentage}.")
        check_non_negative_int("early_stopping_patience", self.early_stopping_patience)
        if not self.depth_grid or not all(0 < s <= 1 for s in self.depth_grid):
            raise ValueError(f"`depth_grid` must hold depths in (0, 1], got {self.depth_grid}.")


class BridgeEmbeddingDataset(Dataset):
    """Training rows for the bridge: paired (audio, text) rows and unpaired text rows (with `audio_mask=False`).

    When both kinds exist, an epoch holds them in the proportion `paired_fraction` : 1 - `paired_fraction`, cycling
    the smaller set, so every shuffled batch feeds both branches. A text-only bridge sees all texts once an epoch.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], text_only: bool = False, paired_fraction: float = 0.5):
        self.text_only = text_only
        paired_text = tensors.get("text_embeds")
        unpaired_text = tensors.get(UNPAIRED_KEY)
        if not text_only and paired_text is None:
            raise ValueError(
                "bridge_type='diffusion_link' needs paired `audio_embeds`/`text_embeds`; the file has text only. "
                "Use --bridge_type text_only_diffusion to train the text-only peer."
            )
        texts = [t for t in (paired_text, unpaired_text) if t is not None]
        self.text_embeds = torch.cat(texts).float()  # (Np + Nu, D): paired rows first
        num_paired = 0 if paired_text is None else len(paired_text)
        self.audio_embeds = torch.zeros_like(self.text_embeds)
        if num_paired:
            self.audio_embeds[:num_paired] = tensors["audio_embeds"].float()
        self.audio_mask = torch.arange(len(self.text_embeds)) < num_paired
        num_unpaired = len(self.text_embeds) - num_paired
        if text_only or not num_paired or not num_unpaired:
            self.rows = torch.arange(len(self.text_embeds))
        else:
            length = math.ceil(max(num_paired / paired_fraction, num_unpaired / (1 - paired_fraction)))
            take_paired = round(length * paired_fraction)
            self.rows = torch.cat([
                torch.arange(take_paired) % num_paired,
                num_paired + torch.arange(length - take_paired) % num_unpaired,
            ])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self._take(self.rows[i])

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """The rows `indices` as one batch ((B, D) tensors and the (B,) `audio_mask`), by one gather per tensor.

        The DataLoader calls this for a batch instead of B `__getitem__` calls and a stack (`collate_embeddings`
        passes the batch through); the batch holds the same values."""
        return self._take(self.rows[torch.as_tensor(indices, dtype=torch.long)])

    def _take(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.text_only:
            return {"text_embeds": self.text_embeds[rows]}
        return {
            "audio_embeds": self.audio_embeds[rows],
            "text_embeds": self.text_embeds[rows],
            "audio_mask": self.audio_mask[rows],
        }


def collate_embeddings(rows: list[dict[str, torch.Tensor]] | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One batch of training rows: a list of `BridgeEmbeddingDataset` rows stacked, or a batch its `__getitems__`
    already gathered, as it is."""
    if isinstance(rows, dict):
        return rows
    return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}


class BridgeEMACallback(TrainerCallback):
    """Update the bridge's EMA weights after every optimiser step (they live in the model, so checkpoints keep them)."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        model.update_ema()


def split_validation_pairs(tensors: dict[str, torch.Tensor], percentage: int, seed: int):
    """(train, validation) tensors: about `percentage` % of the paired rows, drawn with `seed`, become validation
    pairs (at least 2 clips held out, at least 2 kept); unpaired texts all stay in training. None for validation when
    the file has no pairs or `percentage` is 0.

    The split is by clip: the rows of one audio embedding (a clip with several captions, as AudioCaps and Clotho
    have) all go to one side, so no held-out clip was seen in training under another caption."""
    if not percentage or "audio_embeds" not in tensors:
        return tensors, None
    _, clip_of_row = torch.unique(tensors["audio_embeds"], dim=0, return_inverse=True)  # (N,) clip index per row
    num_clips = int(clip_of_row.max()) + 1
    num_val = max(2, round(num_clips * percentage / 100))
    if num_clips - num_val < 2:
        logger.warning("only %d clips: too few to hold out a validation split; training on all of them", num_clips)
        return tensors, None
    held_clips = torch.randperm(num_clips, generator=torch.Generator().manual_seed(seed))[:num_val]
    is_held = torch.isin(clip_of_row, held_clips)
    held, kept = is_held.nonzero().flatten(), (~is_held).nonzero().flatten()
    train = {**tensors, "audio_embeds": tensors["audio_embeds"][kept], "text_embeds": tensors["text_embeds"][kept]}
    return train, {"audio_embeds": tensors["audio_embeds"][held], "text_embeds": tensors["text_embeds"][held]}


def link_metrics(eval_prediction) -> dict[str, float]:
    """`compute_metrics` of the bridge: `paired_figures` of `link(audio)` (the predictions) against the paired texts
    (the labels), and `selection_score` = paired cosine + R@1, the criterion of the best checkpoint."""
    linked, text = (torch.as_tensor(x) for x in (eval_prediction.predictions, eval_prediction.label_ids))
    figures = paired_figures(linked, text)
    figures["selection_score"] = figures["paired_cosine"] + figures["retrieval_r1"]
    return figures


class BridgeTrainer(Trainer):
    """The Trainer, evaluating what a bridge is for: the prediction of a validation row is `link(audio)` at the
    configured depth (content-seeded noise, so every evaluation sees the same noise), its label the paired text."""

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        with torch.no_grad():
            loss = model(**inputs).loss.detach()
            if prediction_loss_only:
                return loss, None, None
            linked = self.accelerator.unwrap_model(model).link(inputs["audio_embeds"])
        return loss, linked, inputs["text_embeds"]


def enable_validation(training_args: TrainingArguments, data_args: DataArguments) -> list[TrainerCallback]:
    """Evaluate at every save, keep the best checkpoint by `selection_score` and stop early, unless the command
    configured evaluation itself. Returns the callbacks to add."""
    if training_args.eval_strategy == "no":
        if training_args.save_strategy == "no":
            steps = max(1, training_args.max_steps // 10) if training_args.max_steps > 0 else None
            training_args.set_evaluate(strategy="steps" if steps else "epoch", steps=steps or 500, delay=0,
                                       batch_size=training_args.per_device_eval_batch_size)
            logger.info("validation without checkpoints (--save_strategy no): logged only, no best-model pick")
            return []
        training_args.set_evaluate(strategy=training_args.save_strategy, steps=int(training_args.save_steps), delay=0,
                                   batch_size=training_args.per_device_eval_batch_size)
        training_args.load_best_model_at_end = True
        training_args.metric_for_best_model = "selection_score"
        training_args.greater_is_better = True
    if training_args.load_best_model_at_end and data_args.early_stopping_patience:
        return [EarlyStoppingCallback(early_stopping_patience=data_args.early_stopping_patience)]
    return []


def pick_and_save_depth(bridge: DiffusionLinkBridge, validation: dict[str, torch.Tensor], data_args: DataArguments,
                        output_dir: str) -> dict:
    """Sweep `strength` on the validation pairs, store the pick in `bridge.config` and the sweep in `output_dir`."""
    sweep = sweep_depths(bridge, validation["audio_embeds"], validation["text_embeds"], data_args.depth_grid)
    pick = pick_depth(sweep)
    bridge.config.strength = pick["strength"]
    bridge.config.depth_selection = pick
    write_depth_sweep(sweep, pick, output_dir)
    if pick["qualified"]:
        logger.info("depth: strength %s on %d validation pairs (%s)", pick["strength"], pick["num_pairs"], pick["rule"])
    else:
        logger.warning(
            "depth: no depth keeps R@1 within the tolerance of the raw audio's (%.3f) on %d validation pairs; kept "
            "strength %s, which loses the least (R@1 %.3f)", pick["identity_retrieval_r1"], pick["num_pairs"],
            pick["strength"], pick["retrieval_r1"],
        )
    return pick


def write_validation_curve(log_history: list[dict], output_dir: str, best_step: int | None = None,
                           identity: dict | None = None) -> str | None:
    """`validation_curve.png` in `output_dir`: the held-out paired cosine and R@1 of every evaluation in the Trainer's
    `log_history` against the step, the kept checkpoint marked and the raw audio's figures (`identity`, a
    `paired_figures` dict) dotted. Returns the path (None without evaluations)."""
    evals = [e for e in log_history if "eval_paired_cosine" in e and "eval_retrieval_r1" in e]
    if not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [e["step"] for e in evals]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, label, color in (("eval_paired_cosine", "paired cosine", "tab:red"), ("eval_retrieval_r1", "R@1", "tab:blue")):
        ax.plot(steps, [e[key] for e in evals], marker="o", color=color, label=label)
        if identity is not None:
            ax.axhline(identity[key[len("eval_"):]], color=color, linestyle=":", linewidth=1)
    if best_step is not None:
        ax.axvline(best_step, color="black", linewidth=1, linestyle="--", label=f"kept: step {best_step}")
    ax.set_xlabel("training step")
    ax.set_ylim(0, 1)
    ax.set_title("Held-out pairs during training" + (" (dotted: raw audio)" if identity is not None else ""))
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(output_dir, "validation_curve.png")
    os.makedirs(output_dir, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def checkpoint_step(checkpoint: str | None) -> int | None:
    """The step of a `checkpoint-N` folder (the Trainer's `best_model_checkpoint`), or None."""
    name = os.path.basename(os.path.normpath(checkpoint)) if checkpoint else ""
    return int(name.split("-")[-1]) if name.startswith("checkpoint-") and name.split("-")[-1].isdigit() else None


def initial_bridge(model_args: ModelArguments, train_tensors: dict[str, torch.Tensor]) -> DiffusionLinkBridge:
    """The bridge training starts from: the saved one of `--model_name_or_path`, or a new one whose normalisation
    (and, with `audio_adapter="linear"`, ridge map) is fit on the training rows (N, D) and whose EMA starts at its
    weights. (A captioner builds its own bridge from its config; this is the training script's start.)"""
    dim = next(iter(train_tensors.values())).shape[1]
    if model_args.model_name_or_path:
        bridge = DiffusionLinkBridge.from_pretrained(model_args.model_name_or_path)
        if bridge.config.embedding_dim != dim:
            raise ValueError(
                f"{model_args.model_name_or_path} has embedding_dim={bridge.config.embedding_dim} but the train file "
                f"has D={dim}."
            )
        return bridge
    bridge = DiffusionLinkBridge(model_args.build_config(dim))
    texts = [train_tensors[k] for k in ("text_embeds", UNPAIRED_KEY) if k in train_tensors]
    bridge.fit_normalization(torch.cat(texts))
    if bridge.config.audio_adapter == "linear":
        ridge = bridge.fit_audio_adapter(train_tensors["audio_embeds"], train_tensors["text_embeds"])
        logger.info("audio adapter: ridge map fit on %d training pairs (penalty %s by leave-one-out)",
                    len(train_tensors["audio_embeds"]), ridge)
    bridge.reset_ema()
    return bridge


DEFAULT_RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "bridge_defaults.json")
# The validation batch. The Trainer's default (8) is sized for large models; for the bridge it made one evaluation of
# `link()` on 2000 held-out pairs cost as much as 40-100 training steps on 2 CPU cores, against about 6 steps at
# 1024 (benchmarks/bench_train_bridge.py). `link()` is batch-invariant, so the figures of an evaluation do not depend
# on it (`eval_loss`, from random timesteps and in-batch similarities, does).
EVAL_BATCH_SIZE = 1024


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """`[config.json] [--flag value ...]` (see `diffusion_link.experiments.script_arguments`) over the script's default recipe,
    `training/configs/bridge_defaults.json` (what the script does without flags), and `EVAL_BATCH_SIZE`."""
    return parse_script_args((ModelArguments, DataArguments, TrainingArguments), argv,
                             defaults={"per_device_eval_batch_size": EVAL_BATCH_SIZE, **read_json_config(DEFAULT_RECIPE)})


def main(argv: list[str] | None = None) -> DiffusionLinkBridge:
    model_args, data_args, training_args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    set_seed(training_args.seed)

    train_tensors, _ = load_embeddings(data_args.train_file)
    text_only = model_args.bridge_type == "text_only_diffusion"
    eval_tensors = None
    if data_args.validation_file:
        eval_tensors, _ = load_embeddings(data_args.validation_file)
    elif not text_only:
        train_tensors, eval_tensors = split_validation_pairs(
            train_tensors, data_args.validation_split_percentage, training_args.seed)
    train_dataset = BridgeEmbeddingDataset(train_tensors, text_only=text_only, paired_fraction=data_args.paired_fraction)
    eval_dataset = None if eval_tensors is None else BridgeEmbeddingDataset(eval_tensors, text_only=text_only)
    validating = eval_tensors is not None and not text_only and "audio_embeds" in eval_tensors

    bridge = initial_bridge(model_args, train_tensors)
    resume = resume_checkpoint(training_args, bridge)  # before any training: an intact checkpoint that fits this bridge
    logger.info(
        "bridge: D=%d hidden=%d blocks=%d, %d trainable parameters; %d training rows an epoch (%d paired)",
        bridge.config.embedding_dim, bridge.config.hidden_size, bridge.config.num_blocks,
        sum(p.numel() for p in bridge.parameters() if p.requires_grad), len(train_dataset),
        int(train_dataset.audio_mask[train_dataset.rows].sum()),
    )
    training_args.remove_unused_columns = False  # our dataset yields exactly the forward's arguments
    if not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False  # pinning needs an accelerator; on CPU it only warns
    callbacks = enable_validation(training_args, data_args) if validating else []
    trainer = BridgeTrainer(
        model=bridge,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collate_embeddings,
        callbacks=[BridgeEMACallback(), *callbacks],
        compute_metrics=link_metrics if validating else None,
    )

    trainer.train(resume_from_checkpoint=resume)
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    if validating and data_args.pick_depth and trainer.is_world_process_zero():
        pick_and_save_depth(model, eval_tensors, data_args, training_args.output_dir)
    trainer.save_model(training_args.output_dir)
    if validating and trainer.is_world_process_zero():
        write_validation_curve(trainer.state.log_history, training_args.output_dir,
                               checkpoint_step(trainer.state.best_model_checkpoint),
                               paired_figures(eval_tensors["audio_embeds"], eval_tensors["text_embeds"]))

    if validating and trainer.is_world_process_zero() and len(eval_tensors["audio_embeds"]) >= 10:
        audio, text = eval_tensors["audio_embeds"], eval_tensors["text_embeds"]
        report = {"raw": modality_gap(audio, text), "bridged": modality_gap(model.link(audio), text)}
        with open(os.path.join(training_args.output_dir, "gap_metrics.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        logger.info("modality gap on the validation pairs: %s", json.dumps(report))
    finish_distributed()
    return model


if __name__ == "__main__":
    run_script(main)
