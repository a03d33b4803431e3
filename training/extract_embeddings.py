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

The output is the safetensors format of `diffusion_link.experiments.embedding_files` (`audio_embeds`, `text_embeds`,
`unpaired_text_embeds`), with the file names, captions and unpaired captions in its metadata
(`file_names`, `captions`, `unpaired_captions`), so the captioner can train from it directly.

Fault tolerance: every finished batch is kept as a shard in `<output_file>.partial/` (each written to a temporary
name and renamed into place), so re-running an interrupted command recomputes only the batches that were not done;
a shard is reused only when it holds exactly the items of the batch and the same encoder. The output file is also
written under a temporary name and renamed, so a kill never leaves half of it; the shards are deleted after it.
`--on_error skip` drops the rows of audio files that cannot be read (each is logged by name, with a count at the
end) instead of stopping at the first one.

At scale, on an existing engine: `torchrun --nproc_per_node=N training/extract_embeddings.py ...` (or `accelerate
launch`) gives batch k to rank k % N; each rank writes the shards of its own batches into the same
`<output_file>.partial/` (so a rank killed mid-run, or a whole rerun, resumes from what is done), all ranks wait for
each other, and rank 0 merges the shards, in input order, into the same file one process writes. With
`--device cuda` each rank uses the GPU of its LOCAL_RANK.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModel, AutoProcessor

from diffusion_link.apps.reference_captions import read_caption_file
from diffusion_link.audio_io import load_audio
from diffusion_link.embedding_extraction import embed_audio, embed_text
from diffusion_link.experiments.atomic_files import atomic_path
from diffusion_link.experiments.distributed import finish_distributed
from diffusion_link.experiments.embedding_files import save_embeddings
from diffusion_link.experiments.script_arguments import parse_script_args, run_script
from diffusion_link.validation import check_choice, check_positive_int


logger = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")
# What `load_audio` raises for a file it cannot use: missing (FileNotFoundError), undecodable or bad samples.
AUDIO_ERRORS = (OSError, ValueError, TypeError)


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
    on_error: str = field(
        default="raise",
        metadata={"help": "Unreadable audio file: 'raise' (stop, naming it) or 'skip' (drop its rows, log its name)."},
    )

    def __post_init__(self):
        if not self.captions_file and not self.unpaired_captions_file:
            raise ValueError("Give --captions_file (paired audio/captions) and/or --unpaired_captions_file.")
        check_positive_int("batch_size", self.batch_size)
        check_choice("on_error", self.on_error, ON_ERROR)


def read_pairs(path: str) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"file_name", "caption"} <= set(rows[0]):
        raise ValueError(f"{path}: expected a CSV with columns `file_name` and `caption`.")
    empty = [i + 2 for i, r in enumerate(rows) if not (r["caption"] or "").strip()]
    if empty:
        raise ValueError(f"{path}: {len(empty)} rows have an empty caption (lines {empty[:10]}).")
    return [r["file_name"] for r in rows], [r["caption"].strip() for r in rows]


def main(argv: list[str] | None = None) -> dict[str, torch.Tensor]:
    (args,) = parse_script_args((ExtractionArguments,), argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    rank, world = _distributed(args.device)
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if args.device == "cuda" and world > 1 else args.device
    model = AutoModel.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    model = model.to(device).eval()
    processor = AutoProcessor.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    rate = processor.feature_extractor.sampling_rate
    cache = ShardCache(f"{args.output_file}.partial", encoder=args.model_name_or_path)

    def embed_files(batch):
        return _embed_audio_batch(model, processor.feature_extractor, args, batch, rate)

    def embed_captions(batch):
        return {"embeds": embed_text(model, processor.tokenizer, batch, batch_size=len(batch)), "failed": {}}

    # Pass 1, on every rank: this rank's batches (batch k belongs to rank k % world), each kept as a shard.
    jobs = []
    if args.captions_file:
        files, captions = read_pairs(args.captions_file)
        unique = list(dict.fromkeys(files))
        jobs += [("audio", unique, args.batch_size, embed_files), ("captions", captions, args.batch_size * 4, embed_captions)]
    if args.unpaired_captions_file:
        texts = read_caption_file(args.unpaired_captions_file)
        jobs.append(("unpaired", texts, args.batch_size * 4, embed_captions))
    for kind, items, batch_size, compute in jobs:
        _fill_shards(cache, kind, items, batch_size, compute, rank, world)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # every rank's shards are written
        if rank != 0:
            finish_distributed()
            return {}

    # Pass 2, on one process: the output file from the shards, in input order (the same file a single process writes).
    tensors: dict[str, torch.Tensor] = {}
    metadata: dict[str, object] = {"encoder": args.model_name_or_path}
    if args.captions_file:
        shards = _collect_shards(cache, "audio", unique, args.batch_size, embed_files)
        failed = {name: error for shard in shards for name, error in shard["failed"].items()}
        if failed:
            logger.warning(
                "skipped %d of %d audio files that could not be read (their %d caption rows are dropped): %s",
                len(failed), len(unique), sum(name in failed for name in files), sorted(failed)[:10],
            )
        kept = [name for name in unique if name not in failed]
        if not kept:
            raise ValueError(f"{args.captions_file}: none of its {len(unique)} audio files could be read.")
        audio = torch.cat([shard["embeds"] for shard in shards if len(shard["embeds"])])  # (len(kept), D)
        index = {name: i for i, name in enumerate(kept)}
        rows = [i for i, name in enumerate(files) if name in index]
        text = torch.cat([s["embeds"] for s in _collect_shards(cache, "captions", captions, args.batch_size * 4,
                                                                  embed_captions)])
        files, captions = [files[i] for i in rows], [captions[i] for i in rows]
        tensors["audio_embeds"] = audio[[index[name] for name in files]]
        tensors["text_embeds"] = text[rows]
        metadata.update(file_names=files, captions=captions)
    if args.unpaired_captions_file:
        shards = _collect_shards(cache, "unpaired", texts, args.batch_size * 4, embed_captions)
        tensors["unpaired_text_embeds"] = torch.cat([shard["embeds"] for shard in shards])
        metadata["unpaired_captions"] = texts
    save_embeddings(args.output_file, tensors, metadata)  # a temporary file renamed into place
    cache.clear()
    logger.info("wrote %s: %s", args.output_file, {k: tuple(v.shape) for k, v in tensors.items()})
    finish_distributed()
    return tensors


def _distributed(device: str) -> tuple[int, int]:
    """(rank, world size): under `torchrun` / `accelerate launch` (WORLD_SIZE > 1) the process group is made here
    (gloo on CPUs, NCCL on GPUs) so that ranks can wait for each other; (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _batches(items: list[str], batch_size: int) -> list[tuple[int, list[str]]]:
    return [(start, items[start : start + batch_size]) for start in range(0, len(items), batch_size)]


def _fill_shards(cache: ShardCache, kind: str, items: list[str], batch_size: int, compute, rank: int, world: int) -> None:
    """Compute and keep the shards of this rank's batches that are not done yet (a rerun skips the finished ones)."""
    mine = [batch for k, batch in enumerate(_batches(items, batch_size)) if k % world == rank]
    for start, batch in tqdm(mine, desc=kind, unit="batch", disable=rank != 0):
        if cache.get(kind, start, batch) is None:
            cache.put(kind, start, batch, compute(batch))


def _collect_shards(cache: ShardCache, kind: str, items: list[str], batch_size: int, compute) -> list[dict]:
    """Every batch's shard, in order (one lost since pass 1, say deleted by hand, is computed again)."""
    shards = []
    for start, batch in _batches(items, batch_size):
        shard = cache.get(kind, start, batch, count=False)
        if shard is None:
            shard = compute(batch)
            cache.put(kind, start, batch, shard)
        shards.append(shard)
    return shards


def _embed_audio_batch(model, feature_extractor, args: ExtractionArguments, batch: list[str], rate: int) -> dict:
    """{"embeds": (k, D) embeddings of the k readable files of `batch`, "failed": {name: error} of the others}."""
    waves, failed = [], {}
    for name in batch:
        try:
            waves.append(load_audio(os.path.join(args.audio_dir, name), rate))
        except AUDIO_ERRORS as err:
            if args.on_error == "raise":
                raise
            logger.warning("skipping %s: %s", name, err)
            failed[name] = str(err)
    # (0, 0) when nothing in the batch could be read: D is unknown then, and `main` leaves the batch out.
    embeds = embed_audio(model, feature_extractor, waves, batch_size=args.batch_size) if waves else torch.zeros(0, 0)
    return {"embeds": embeds, "failed": failed}


class ShardCache:
    """Finished batches of an extraction, one safetensors shard each, so an interrupted run resumes.

    A shard holds `embeds` (k, D) and, in its header, the encoder, the batch's items and the items that failed; it is
    reused only when the encoder and the items match exactly (a changed input list or `--batch_size` recomputes).
    """

    def __init__(self, folder: str, encoder: str):
        self.folder, self.encoder = folder, encoder
        self.reused = 0

    def _path(self, kind: str, start: int) -> str:
        return os.path.join(self.folder, f"{kind}-{start:09d}.safetensors")

    def get(self, kind: str, start: int, items: list[str], count: bool = True) -> dict | None:
        path = self._path(kind, start)
        if not os.path.isfile(path):
            return None
        try:
            with safe_open(path, framework="pt") as f:
                header = f.metadata() or {}
                if header.get("encoder") != self.encoder or json.loads(header.get("items", "null")) != items:
                    return None
                shard = {"embeds": f.get_tensor("embeds"), "failed": json.loads(header.get("failed", "{}"))}
        except Exception as err:  # a foreign or damaged file is recomputed, never trusted
            logger.warning("recomputing %s: %s", path, err)
            return None
        self.reused += count
        return shard

    def put(self, kind: str, start: int, items: list[str], shard: dict) -> None:
        os.makedirs(self.folder, exist_ok=True)
        path = self._path(kind, start)
        header = {"encoder": self.encoder, "items": json.dumps(items), "failed": json.dumps(shard["failed"])}
        with atomic_path(path) as tmp:
            save_file({"embeds": shard["embeds"].detach().cpu().contiguous()}, tmp, metadata=header)

    def clear(self) -> None:
        if self.reused:
            logger.info("reused %d finished batches from %s", self.reused, self.folder)
        shutil.rmtree(self.folder, ignore_errors=True)


if __name__ == "__main__":
    run_script(main)
