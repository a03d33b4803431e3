#!/usr/bin/env python
"""Train a Diffusion-Link bridge (or the text-only "Diffusion Bridge" peer) on pre-extracted embeddings.

    python training/train_bridge.py config.json
    python training/train_bridge.py --train_file embeds.safetensors --output_dir out --max_steps 2000
    torchrun --nproc_per_node=2 training/train_bridge.py config.json      # DDP (gloo on CPU)

The train file is the safetensors format of `diffusion_link.embedding_files`: paired `audio_embeds` / `text_embeds`
rows and optional `unpaired_text_embeds`. D is read from the data. The EMA of the denoiser is updated after every
optimiser step by a callback; it is part of the model's weights, so checkpoints carry it and `resume_from_checkpoint`
restores it. The result is a `save_pretrained` folder (`AutoModel.from_pretrained(out, trust_remote_code=True)`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

from diffusion_link import DiffusionLinkBridge, DiffusionLinkConfig, modality_gap, text_only_diffusion_config
from diffusion_link.embedding_files import UNPAIRED_KEY, load_embeddings
from diffusion_link.script_arguments import parse_script_args, resume_checkpoint


logger = logging.getLogger(__name__)

BRIDGE_TYPES = ("diffusion_link", "text_only_diffusion")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved bridge to continue training from. Default: a new bridge."}
    )
    bridge_type: str = field(
        default="diffusion_link",
        metadata={"help": "'diffusion_link' (paired + text, the paper) or 'text_only_diffusion' (the text-only peer)."},
    )
    hidden_size: int = field(default=1024, metadata={"help": "Width of the residual MLP (about 2D in the paper)."})
    num_blocks: int = field(default=3, metadata={"help": "Number of residual blocks."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout inside the residual blocks."})
    max_train_timestep: int | None = field(
        default=None, metadata={"help": "Draw training timesteps from [0, this). Default: the whole schedule."}
    )
    topology_loss_weight: float | None = field(
        default=None, metadata={"help": "lambda of the topology loss. Default: the bridge type's (1.0 / 0.0)."}
    )
    ema_decay: float = field(default=0.995, metadata={"help": "EMA decay of the denoiser weights."})
    x0_parameterization: str = field(
        default="direct",
        metadata={"help": "'direct' (the network outputs x0) or 'skip' (x0 = sqrt(a_t) x_t + sqrt(1 - a_t) F)."},
    )
    strength: float | None = field(
        default=None, metadata={"help": "Default link() depth s*/T saved in the config (0.1 / 0.6 by type)."}
    )
    num_inference_steps: int = field(default=5, metadata={"help": "Default number of DDIM steps of link()."})
    standardization: str = field(default="scalar", metadata={"help": "'scalar' or 'per_dim' text-embedding std."})
    input_normalization: str = field(default="l2", metadata={"help": "'l2' (unit vectors, CLAP) or 'none'."})

    def __post_init__(self):
        if self.bridge_type not in BRIDGE_TYPES:
            raise ValueError(f"`bridge_type` must be one of {BRIDGE_TYPES}, got {self.bridge_type!r}.")

    def build_config(self, embedding_dim: int) -> DiffusionLinkConfig:
        fields = dict(
            embedding_dim=embedding_dim,
            hidden_size=self.hidden_size,
            num_blocks=self.num_blocks,
            dropout=self.dropout,
            max_train_timestep=self.max_train_timestep,
            ema_decay=self.ema_decay,
            x0_parameterization=self.x0_parameterization,
            num_inference_steps=self.num_inference_steps,
            standardization=self.standardization,
            input_normalization=self.input_normalization,
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
        default=None, metadata={"help": "Paired embeddings for the eval loss and the final modality-gap report."}
    )
    paired_fraction: float = field(
        default=0.5,
        metadata={
            "help": "Share of training rows drawn from the paired data when the file also has unpaired text; the "
            "smaller set is cycled. Without it a large text corpus would starve the cross-sample (audio) branch."
        },
    )

    def __post_init__(self):
        if not 0.0 < self.paired_fraction < 1.0:
            raise ValueError(f"`paired_fraction` must lie in (0, 1), got {self.paired_fraction}.")


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
        row = int(self.rows[i])
        if self.text_only:
            return {"text_embeds": self.text_embeds[row]}
        return {
            "audio_embeds": self.audio_embeds[row],
            "text_embeds": self.text_embeds[row],
            "audio_mask": self.audio_mask[row],
        }


def collate_embeddings(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}


class BridgeEMACallback(TrainerCallback):
    """Update the bridge's EMA weights after every optimiser step (they live in the model, so checkpoints keep them)."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        model.update_ema()


def build_bridge(model_args: ModelArguments, train_tensors: dict[str, torch.Tensor]) -> DiffusionLinkBridge:
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
    bridge.reset_ema()
    return bridge


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """`[config.json] [--flag value ...]` (see `diffusion_link.script_arguments`)."""
    return parse_script_args((ModelArguments, DataArguments, TrainingArguments), argv)


def main(argv: list[str] | None = None) -> DiffusionLinkBridge:
    model_args, data_args, training_args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    set_seed(training_args.seed)

    train_tensors, _ = load_embeddings(data_args.train_file)
    text_only = model_args.bridge_type == "text_only_diffusion"
    train_dataset = BridgeEmbeddingDataset(train_tensors, text_only=text_only, paired_fraction=data_args.paired_fraction)
    eval_dataset = None
    if data_args.validation_file:
        eval_tensors, _ = load_embeddings(data_args.validation_file)
        eval_dataset = BridgeEmbeddingDataset(eval_tensors, text_only=text_only)

    bridge = build_bridge(model_args, train_tensors)
    logger.info(
        "bridge: D=%d hidden=%d blocks=%d, %d trainable parameters; %d training rows an epoch (%d paired)",
        bridge.config.embedding_dim, bridge.config.hidden_size, bridge.config.num_blocks,
        sum(p.numel() for p in bridge.parameters() if p.requires_grad), len(train_dataset),
        int(train_dataset.audio_mask[train_dataset.rows].sum()),
    )
    training_args.remove_unused_columns = False  # our dataset yields exactly the forward's arguments
    if not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False  # pinning needs an accelerator; on CPU it only warns
    trainer = Trainer(
        model=bridge,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collate_embeddings,
        callbacks=[BridgeEMACallback()],
    )

    trainer.train(resume_from_checkpoint=resume_checkpoint(training_args))
    trainer.save_model(training_args.output_dir)

    if eval_dataset is not None and trainer.is_world_process_zero() and "audio_embeds" in eval_tensors:
        model = trainer.model.eval()
        audio, text = eval_tensors["audio_embeds"], eval_tensors["text_embeds"]
        report = {"raw": modality_gap(audio, text), "bridged": modality_gap(model.link(audio), text)}
        with open(os.path.join(training_args.output_dir, "gap_metrics.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        logger.info("modality gap on %s: %s", data_args.validation_file, json.dumps(report))
    return trainer.model


if __name__ == "__main__":
    main()
