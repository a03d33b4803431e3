#!/usr/bin/env python
"""Fine-tune a Diffusion-Link captioner (projector + LoRA) with the Trainer.

    python training/train_captioner.py config.json
    torchrun --nproc_per_node=2 training/train_captioner.py config.json    # DDP (gloo on CPU)

Modes (`--mode`):
- `zero_shot`: the decoder learns from *text* embeddings of captions only (optionally with CapDec noise,
  `--noise_injection_std`); at test time it reads bridged audio embeddings.
- `supervised`: paired audio embeddings go through the frozen bridge into the decoder.

Data (`--train_file`, `--validation_file`):
- a safetensors embedding file from `training/extract_embeddings.py` (its metadata carries the captions): paired
  rows (`audio_embeds`, `text_embeds`, `captions`) and, for zero-shot, `unpaired_text_embeds` with
  `unpaired_captions`;
- or, for zero-shot, a caption file (CSV with a `caption` column, or one caption per line), embedded once at start
  with the audio tower's text side and the tokenizer at `--text_tokenizer_name_or_path`.

The model comes from `--model_name_or_path` (a saved captioner) or is built from parts (`--audio_tower_name_or_path`,
`--language_model_name_or_path`, `--bridge_name_or_path`). The output folder is a complete pipeline folder:
`pipeline("audio-captioning", model=output_dir)`. Evaluation (at `--eval_steps`) reports the loss and caption scores
of greedy generations on up to `--max_eval_generations` validation rows (`GENERATION_METRICS`, the default metrics of
`diffusion-link evaluate`: exact match, token F1 and the Java-free COCO metrics BLEU-1..4, ROUGE-L, CIDEr-D). Re-running the same command resumes from
the newest intact checkpoint, LoRA adapter included, and refuses one whose weights do not fit the model asked for
(another `--prefix_length`, `--lora_r`, target modules). `report_to` defaults to `none`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset
from transformers import (
    AutoFeatureExtractor,
    AutoModel,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
    set_seed,
)

from diffusion_link import AudioCaptionPipeline, DiffusionLinkCaptionerConfig, DiffusionLinkForAudioCaptioning
from diffusion_link.apps.evaluation import DEFAULT_EVALUATION_METRICS
from diffusion_link.apps.reference_captions import read_caption_file
from diffusion_link.configuration_diffusion_link_captioner import DEFAULT_MAX_NEW_TOKENS
from diffusion_link.embedding_extraction import embed_text
from diffusion_link.experiments.distributed import finish_distributed
from diffusion_link.experiments.embedding_files import UNPAIRED_KEY, load_embeddings
from diffusion_link.experiments.script_arguments import (
    config_field,
    optional,
    parse_script_args,
    resume_checkpoint,
    run_script,
)
from diffusion_link.hub.references import resolve_reference
from diffusion_link.metrics import caption_scores
from diffusion_link.validation import (
    check_choice,
    check_fraction_below_one,
    check_non_negative_float,
    check_non_negative_int,
    check_positive_float,
    check_positive_int,
)


logger = logging.getLogger(__name__)

MODES = ("zero_shot", "supervised")
LM_DTYPES = {None: None, "auto": "auto", "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# Scores of the greedy generations at each evaluation, those `diffusion-link evaluate` reports by default: all pure
# Python, cheap next to the generation itself.
GENERATION_METRICS = DEFAULT_EVALUATION_METRICS


@dataclass
class ModelArguments:
    """Where the captioner comes from, and its recipe. The fields that set a `DiffusionLinkCaptionerConfig` argument
    take their defaults from it."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "A saved captioner to fine-tune."})
    audio_tower_name_or_path: str | None = field(
        default=None, metadata={"help": "Audio tower (e.g. laion/clap-htsat-unfused) when building from parts."}
    )
    language_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Causal LM (e.g. meta-llama/Llama-2-7b-hf) when building from parts."}
    )
    bridge_name_or_path: str | None = field(
        default=None, metadata={"help": "A trained DiffusionLinkBridge folder. Default: no bridge (identity)."}
    )
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "LM tokenizer. Default: the LM's."})
    feature_extractor_name_or_path: str | None = field(
        default=None, metadata={"help": "Audio feature extractor. Default: the audio tower's."}
    )
    text_tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer of the audio tower's text side, to embed caption files."}
    )
    prefix_length: int = config_field(DiffusionLinkCaptionerConfig, "prefix_length",
                                      help="Soft-prefix tokens made from one embedding.")
    prompt: str = config_field(DiffusionLinkCaptionerConfig, "prompt", help="Instruction after the prefix.")
    lora_r: int = config_field(DiffusionLinkCaptionerConfig, "lora_r", help="LoRA rank (0: projector only).")
    lora_alpha: int = config_field(DiffusionLinkCaptionerConfig, "lora_alpha", help="LoRA alpha.")
    lora_dropout: float = config_field(DiffusionLinkCaptionerConfig, "lora_dropout", help="LoRA dropout.")
    lora_target_modules: str = config_field(DiffusionLinkCaptionerConfig, "lora_target_modules",
                                            help="Comma-separated LM module names.", convert=",".join)
    noise_injection_std: float = config_field(DiffusionLinkCaptionerConfig, "noise_injection_std",
                                              help="CapDec noise on text embeddings (zero-shot).")
    projector_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the projector (default: --learning_rate, as the LoRA)."}
    )
    # Not the config's default ("embedded"): a fine-tuned captioner saves only what it trained.
    base_weights: str = field(
        default="referenced", metadata={"help": "'referenced' (save only trained parts + base names) or 'embedded'."}
    )
    dtype: str | None = field(
        default=None,
        metadata={"help": "dtype of the frozen language model: 'bfloat16' (the paper's), 'float16', 'float32' or "
                          "'auto' (the checkpoint's own). Default: transformers' choice, the checkpoint's (float16 "
                          "for Llama-2-7b-hf; `--bf16` alone only adds autocast). Bridge, projector and LoRA stay "
                          "float32."},
    )

    def __post_init__(self):
        if self.dtype not in LM_DTYPES:
            raise ValueError(f"`dtype` must be one of {sorted(k for k in LM_DTYPES if k)} or unset, got {self.dtype!r}.")
        # Checked here, not only by the captioner's config: that is built after the bases are loaded, and not at all
        # from --model_name_or_path, whose own config these fields do not replace.
        check_positive_int("prefix_length", self.prefix_length)
        check_non_negative_int("lora_r", self.lora_r)
        check_positive_float("lora_alpha", self.lora_alpha)
        check_fraction_below_one("lora_dropout", self.lora_dropout)
        check_non_negative_float("noise_injection_std", self.noise_injection_std)
        optional(check_positive_float)("projector_learning_rate", self.projector_learning_rate)


@dataclass
class DataArguments:
    train_file: str = field(metadata={"help": "Embedding file with captions, or (zero-shot) a caption CSV/TXT."})
    mode: str = field(default="zero_shot", metadata={"help": "'zero_shot' (text embeddings) or 'supervised'."})
    validation_file: str | None = field(default=None, metadata={"help": "Paired embedding file with captions."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training rows."})
    max_caption_tokens: int = field(default=48, metadata={"help": "Captions are cut to this many tokens."})
    max_eval_generations: int = field(default=64, metadata={"help": "Validation rows captioned at each eval."})
    generation_max_new_tokens: int = field(
        default=DEFAULT_MAX_NEW_TOKENS, metadata={"help": "max_new_tokens of eval generations."}
    )

    def __post_init__(self):
        check_choice("mode", self.mode, MODES)
        optional(check_positive_int)("max_train_samples", self.max_train_samples)
        check_positive_int("max_caption_tokens", self.max_caption_tokens)
        check_positive_int("max_eval_generations", self.max_eval_generations)
        check_positive_int("generation_max_new_tokens", self.generation_max_new_tokens)


class CaptionEmbeddingDataset(Dataset):
    """(embedding, caption) rows; the embedding is text (zero-shot) or audio (supervised)."""

    def __init__(self, embeds: torch.Tensor, captions: list[str], kind: str):
        if len(embeds) != len(captions):
            raise ValueError(f"{len(embeds)} embeddings but {len(captions)} captions.")
        empty = [i for i, c in enumerate(captions) if not c or not c.strip()]
        if empty:
            raise ValueError(f"{len(empty)} empty captions in the training data (rows {empty[:10]}).")
        self.embeds, self.captions, self.kind = embeds.float(), captions, kind

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> dict:
        return {self.kind: self.embeds[i], "caption": self.captions[i]}


class CaptionCollator:
    """Tokenise `prompt + " " + caption + EOS`, mask the prompt out of the labels, right-pad."""

    def __init__(self, tokenizer, prompt: str, max_caption_tokens: int):
        self.tokenizer, self.prompt, self.max_caption_tokens = tokenizer, prompt, max_caption_tokens
        self.prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids if prompt else []
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        kind = next(k for k in rows[0] if k != "caption")
        sequences, label_rows = [], []
        for row in rows:
            text = f"{self.prompt} {row['caption'].strip()}" if self.prompt else row["caption"].strip()
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
            ids = ids[: len(self.prompt_ids) + self.max_caption_tokens] + [self.tokenizer.eos_token_id]
            labels = [-100] * len(self.prompt_ids) + ids[len(self.prompt_ids):]
            sequences.append(ids)
            label_rows.append(labels)
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, labs) in enumerate(zip(sequences, label_rows)):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, : len(labs)] = torch.tensor(labs)
            attention_mask[i, : len(ids)] = 1
        return {
            kind: torch.stack([row[kind] for row in rows]),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
        }


class CaptionerTrainer(Trainer):
    """The Trainer, plus caption scores of greedy generations on the validation set at each evaluation."""

    def __init__(self, *args, generation_dataset=None, prompt_ids=None, caption_tokenizer=None,
                 generation_max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, projector_learning_rate: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.projector_learning_rate = projector_learning_rate
        self.generation_dataset = generation_dataset
        self.prompt_ids = prompt_ids
        self.caption_tokenizer = caption_tokenizer
        self.generation_max_new_tokens = generation_max_new_tokens

    def create_optimizer(self, model=None):
        # The projector starts from scratch and can take a larger step than the LoRA adapters (two groups).
        if self.optimizer is None and self.projector_learning_rate is not None:
            named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
            projector = [p for n, p in named if n.startswith("multi_modal_projector.")]
            rest = [p for n, p in named if not n.startswith("multi_modal_projector.")]
            optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, self.model)
            self.optimizer = optimizer_cls(
                [{"params": projector, "lr": self.projector_learning_rate}, {"params": rest}], **kwargs
            )
        return super().create_optimizer() if model is None else super().create_optimizer(model)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        # Every process runs the same (small) generation, so no process waits on another: no collective calls here.
        if self.generation_dataset is not None:
            scores = {f"{metric_key_prefix}_{k}": v for k, v in self.generate_scores().items()}
            metrics.update(scores)
            self.log(scores)
        return metrics

    @torch.no_grad()
    def generate_scores(self) -> dict[str, float]:
        data = self.generation_dataset
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        predictions = []
        for start in range(0, len(data), 16):
            rows = [data[i] for i in range(start, min(start + 16, len(data)))]
            kind = next(k for k in rows[0] if k != "caption")
            embeds = torch.stack([r[kind] for r in rows]).to(model.device)
            prompt = None if self.prompt_ids is None else self.prompt_ids.to(model.device)
            ids = model.generate(**{kind: embeds}, input_ids=prompt, max_new_tokens=self.generation_max_new_tokens)
            predictions += [t.strip() for t in self.caption_tokenizer.batch_decode(ids, skip_special_tokens=True)]
        model.train(was_training)
        references = [[data.captions[i]] for i in range(len(data))]
        return caption_scores(predictions, references, metrics=GENERATION_METRICS)


def load_rows(path: str, mode: str, model, text_tokenizer) -> CaptionEmbeddingDataset:
    """(embedding, caption) rows of a file, for the mode."""
    if not path.endswith(".safetensors"):
        if mode != "zero_shot":
            raise ValueError(f"{path}: supervised training needs an embedding file with paired audio embeddings.")
        if text_tokenizer is None:
            raise ValueError(
                f"{path} is a caption file: give --text_tokenizer_name_or_path (the audio tower's tokenizer) to embed "
                "it, or embed it once with training/extract_embeddings.py."
            )
        captions = read_caption_file(path)
        embeds = embed_text(model.audio_tower, text_tokenizer, captions)
        return CaptionEmbeddingDataset(embeds, captions, "text_embeds")
    tensors, meta = load_embeddings(path)
    if mode == "supervised":
        if "audio_embeds" not in tensors or "captions" not in meta:
            raise ValueError(f"{path}: supervised training needs `audio_embeds` rows with `captions` metadata.")
        return CaptionEmbeddingDataset(tensors["audio_embeds"], list(meta["captions"]), "audio_embeds")
    embeds, captions = [], []
    if "text_embeds" in tensors:
        if "captions" not in meta:
            raise ValueError(f"{path}: `text_embeds` rows need `captions` metadata to train a decoder.")
        embeds.append(tensors["text_embeds"])
        captions += list(meta["captions"])
    if UNPAIRED_KEY in tensors and "unpaired_captions" in meta:
        embeds.append(tensors[UNPAIRED_KEY])
        captions += list(meta["unpaired_captions"])
    return CaptionEmbeddingDataset(torch.cat(embeds), captions, "text_embeds")


def build_model(args: ModelArguments) -> DiffusionLinkForAudioCaptioning:
    dtype = LM_DTYPES[args.dtype]
    if args.model_name_or_path:
        extra = {} if dtype is None else {"dtype": dtype}
        return DiffusionLinkForAudioCaptioning.from_pretrained(args.model_name_or_path, **extra)
    if not (args.audio_tower_name_or_path and args.language_model_name_or_path):
        raise ValueError("Give --model_name_or_path, or --audio_tower_name_or_path and --language_model_name_or_path.")
    bridge = None
    if args.bridge_name_or_path:
        bridge = AutoModel.from_pretrained(args.bridge_name_or_path)
    return DiffusionLinkForAudioCaptioning.from_pretrained_parts(
        args.audio_tower_name_or_path,
        args.language_model_name_or_path,
        bridge,
        bridge_type=None if bridge is not None else "identity",  # as --bridge_name_or_path's help says
        base_weights=args.base_weights,
        dtype=dtype,
        prefix_length=args.prefix_length,
        prompt=args.prompt,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        lora_target_modules=[m.strip() for m in args.lora_target_modules.split(",") if m.strip()],
        noise_injection_std=args.noise_injection_std,
    )


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """`[config.json] [--flag value ...]` (see `diffusion_link.experiments.script_arguments`)."""
    return parse_script_args((ModelArguments, DataArguments, TrainingArguments), argv)


def main(argv: list[str] | None = None) -> AudioCaptionPipeline:
    model_args, data_args, training_args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    set_seed(training_args.seed)

    model = build_model(model_args)
    lm_source = model_args.tokenizer_name_or_path or model_args.model_name_or_path or model_args.language_model_name_or_path
    tokenizer = AutoTokenizer.from_pretrained(resolve_reference(lm_source))
    fe_source = (model_args.feature_extractor_name_or_path or model_args.model_name_or_path
                 or model_args.audio_tower_name_or_path)
    feature_extractor = AutoFeatureExtractor.from_pretrained(resolve_reference(fe_source))
    text_source = model_args.text_tokenizer_name_or_path
    text_tokenizer = AutoTokenizer.from_pretrained(resolve_reference(text_source)) if text_source else None
    if data_args.mode == "zero_shot" and model_args.noise_injection_std != model.config.noise_injection_std:
        model.config.noise_injection_std = model_args.noise_injection_std

    train_dataset = load_rows(data_args.train_file, data_args.mode, model, text_tokenizer)
    if data_args.max_train_samples is not None:
        train_dataset.embeds = train_dataset.embeds[: data_args.max_train_samples]
        train_dataset.captions = train_dataset.captions[: data_args.max_train_samples]
    eval_dataset = generation_dataset = None
    if data_args.validation_file:
        # Validation is what the decoder meets at test time: audio through the bridge.
        eval_dataset = load_rows(data_args.validation_file, "supervised", model, text_tokenizer)
        generation_dataset = CaptionEmbeddingDataset(
            eval_dataset.embeds[: data_args.max_eval_generations],
            eval_dataset.captions[: data_args.max_eval_generations], "audio_embeds",
        )
    logger.info(
        "captioner: %d trainable parameters (projector + LoRA r=%d); %d training rows (%s)",
        model.num_trainable_parameters(), model.config.lora_r, len(train_dataset), data_args.mode,
    )

    collator = CaptionCollator(tokenizer, model.config.prompt, data_args.max_caption_tokens)
    training_args.remove_unused_columns = False  # the collator needs `caption`, which the model does not take
    if not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False
    trainer = CaptionerTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        generation_dataset=generation_dataset,
        prompt_ids=torch.tensor([collator.prompt_ids]) if collator.prompt_ids else None,
        caption_tokenizer=tokenizer,
        generation_max_new_tokens=data_args.generation_max_new_tokens,
        projector_learning_rate=model_args.projector_learning_rate,
    )
    trainer.train(resume_from_checkpoint=resume_checkpoint(training_args, model))

    # Every process evaluates (the eval loop gathers across processes); only the first one writes.
    metrics = trainer.evaluate() if eval_dataset is not None else None
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    # The text tokenizer given (zero-shot training embeds captions with it) is saved in `audio_text_tokenizer/`, so
    # the folder can score captions and measure the gap on its own.
    pipe = AudioCaptionPipeline(model=model, tokenizer=tokenizer, feature_extractor=feature_extractor,
                                audio_text_tokenizer=text_tokenizer)
    if trainer.is_world_process_zero():
        pipe.save_pretrained(training_args.output_dir)
        if metrics is not None:
            with open(os.path.join(training_args.output_dir, "eval_results.json"), "w", encoding="utf-8") as f:
                json.dump(metrics, f, indent=2)
    finish_distributed()
    return pipe


if __name__ == "__main__":
    run_script(main)
