#!/usr/bin/env python
"""Embed audio files and their captions once, so bridge training never re-runs the encoder.

    python training/extract_embeddings.py --model_name_or_path laion/clap-htsat-unfused \
        --captions_file pairs.csv --audio_dir clips/ --unpaired_captions_file texts.txt --output_file embeds.safetensors

- `--captions_file`: CSV with columns `file_name` (relative to `--audio_dir`) and `caption`; one row per pair, a
  file may have several captions (its audio is embedded once).
- `--unpaired_captions_file` (optional): more captions without audio, a CSV with a `caption` column or a text file
  with one caption per line.
- The encoder is anything `AutoModel` loads with `get_audio_features` / `get_text_features` (transformers'
  `ClapModel` first) and `AutoProcessor` loads a feature extractor and tokenizer for.

The output is the safetensors format of `diffusion_link.embedding_data` (`audio_embeds`, `text_embeds`,
`unpaired_text_embeds`), with the file names, captions and unpaired captions in its metadata
(`file_names`, `captions`, `unpaired_captions`), so the captioner can train from it directly.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import AutoModel, AutoProcessor, HfArgumentParser

from diffusion_link.audio_io import load_audio
from diffusion_link.embedding_data import save_embeddings
from diffusion_link.encoding import embed_audio, embed_text


logger = logging.getLogger(__name__)


@dataclass
class ExtractionArguments:
    model_name_or_path: str = field(metadata={"help": "Encoder folder or Hub id (e.g. laion/clap-htsat-unfused)."})
    output_file: str = field(metadata={"help": "Where to write the safetensors embedding file."})
    captions_file: str | None = field(default=None, metadata={"help": "CSV of paired `file_name`,`caption` rows."})
    audio_dir: str = field(default=".", metadata={"help": "Folder the `file_name` column is relative to."})
    unpaired_captions_file: str | None = field(default=None, metadata={"help": "Captions without audio (CSV/TXT)."})
    batch_size: int = field(default=16, metadata={"help": "Clips (or 4x as many captions) per encoder call."})
    device: str = field(default="cpu", metadata={"help": "torch device of the encoder."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom encoder code from the folder."})

    def __post_init__(self):
        if not self.captions_file and not self.unpaired_captions_file:
            raise ValueError("Give --captions_file (paired audio/captions) and/or --unpaired_captions_file.")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}.")


def read_pairs(path: str) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"file_name", "caption"} <= set(rows[0]):
        raise ValueError(f"{path}: expected a CSV with columns `file_name` and `caption`.")
    empty = [i + 2 for i, r in enumerate(rows) if not (r["caption"] or "").strip()]
    if empty:
        raise ValueError(f"{path}: {len(empty)} rows have an empty caption (lines {empty[:10]}).")
    return [r["file_name"] for r in rows], [r["caption"].strip() for r in rows]


def read_captions(path: str) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        if path.endswith(".csv"):
            rows = list(csv.DictReader(f))
            if not rows or "caption" not in rows[0]:
                raise ValueError(f"{path}: expected a CSV with a `caption` column.")
            captions = [r["caption"] for r in rows]
        else:
            captions = f.read().splitlines()
    kept = [c.strip() for c in captions if c.strip()]
    if len(kept) != len(captions):
        logger.warning("%s: skipped %d empty captions", path, len(captions) - len(kept))
    if not kept:
        raise ValueError(f"{path}: no captions.")
    return kept


def main(argv: list[str] | None = None) -> dict[str, torch.Tensor]:
    (args,) = HfArgumentParser(ExtractionArguments).parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    model = AutoModel.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    model = model.to(args.device).eval()
    processor = AutoProcessor.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    rate = processor.feature_extractor.sampling_rate

    tensors: dict[str, torch.Tensor] = {}
    metadata: dict[str, object] = {"encoder": args.model_name_or_path}
    if args.captions_file:
        files, captions = read_pairs(args.captions_file)
        unique = list(dict.fromkeys(files))
        audio = []
        for start in tqdm(range(0, len(unique), args.batch_size), desc="audio", unit="batch"):
            batch = unique[start : start + args.batch_size]
            waves = [load_audio(os.path.join(args.audio_dir, name), rate) for name in batch]
            audio.append(embed_audio(model, processor.feature_extractor, waves, batch_size=args.batch_size))
        audio = torch.cat(audio)
        index = {name: i for i, name in enumerate(unique)}
        tensors["audio_embeds"] = audio[[index[name] for name in files]]
        tensors["text_embeds"] = _embed_captions(model, processor.tokenizer, captions, args.batch_size * 4, "captions")
        metadata.update(file_names=files, captions=captions)
    if args.unpaired_captions_file:
        texts = read_captions(args.unpaired_captions_file)
        tensors["unpaired_text_embeds"] = _embed_captions(model, processor.tokenizer, texts, args.batch_size * 4, "unpaired")
        metadata["unpaired_captions"] = texts
    save_embeddings(args.output_file, tensors, metadata)
    logger.info("wrote %s: %s", args.output_file, {k: tuple(v.shape) for k, v in tensors.items()})
    return tensors


def _embed_captions(model, tokenizer, captions: list[str], batch_size: int, desc: str) -> torch.Tensor:
    out = []
    for start in tqdm(range(0, len(captions), batch_size), desc=desc, unit="batch"):
        out.append(embed_text(model, tokenizer, captions[start : start + batch_size], batch_size=batch_size))
    return torch.cat(out)


if __name__ == "__main__":
    main()
