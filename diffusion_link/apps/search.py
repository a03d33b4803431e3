"""`diffusion-link search "a door creaking" FOLDER`: rank the sounds under a folder for a text query in the
captioner's joint space (its audio tower's audio and text sides: the starter's encoder, or CLAP).

Each file's audio embedding is cached by its content and the model (`EmbeddingCache`): a second query over the same
folder embeds nothing again, and an edited file is embedded anew. A file that cannot be read is reported with its
error and left out of the ranking, never dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from diffusion_link.hub.references import cache_dir


def file_digest(path: str, block: int = 1 << 20) -> str:
    """sha1 of a file's bytes."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def model_digest(model) -> str:
    """A short digest of the model's joint space: its config and its audio tower's weights (what an audio embedding
    depends on), so another model, or the same folder retrained, never reads this one's cache."""
    digest = hashlib.sha1(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.audio_tower.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


class EmbeddingCache:
    """Audio embeddings by file content, for one model: `$DIFFUSION_LINK_CACHE/search/MODEL_DIGEST.safetensors`
    (one row per content sha1), written atomically when it gains rows."""

    def __init__(self, model_key: str, folder: str | None = None):
        from safetensors.torch import load_file

        self.path = os.path.join(folder or os.path.join(cache_dir(), "search"), f"{model_key}.safetensors")
        self.rows: dict[str, torch.Tensor] = load_file(self.path) if os.path.exists(self.path) else {}
        self.added = 0

    def get(self, key: str) -> torch.Tensor | None:
        return self.rows.get(key)

    def put(self, key: str, embedding: torch.Tensor) -> None:
        self.rows[key] = embedding.detach().float().cpu().contiguous()
        self.added += 1

    def save(self) -> None:
        from safetensors.torch import save_file

        if not self.added:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        save_file(self.rows, self.path + ".partial")
        os.replace(self.path + ".partial", self.path)
        self.added = 0


@dataclass
class SearchResult:
    ranking: list[dict]  # {"query", "rank", "file", "score"}, best first
    failed: dict[str, str] = field(default_factory=dict)  # file -> error
    embedded: int = 0  # files embedded in this call (the others came from the cache)


def audio_embeddings(pipe, files: Sequence[str], cache: EmbeddingCache, batch_size: int = 8
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str], int]:
    """{file: (D,) unit embedding} of the readable `files` (from the cache when known), {file: error} of the others,
    and how many were embedded now."""
    from diffusion_link.audio_io import prepare_audio

    rate = pipe.feature_extractor.sampling_rate
    found, failed, todo = {}, {}, []
    for path in files:
        try:
            key = file_digest(path)
        except OSError as err:
            failed[path] = str(err)
            continue
        cached = cache.get(key)
        if cached is not None:
            found[path] = cached
        else:
            todo.append((path, key))
    embedded = 0
    for start in range(0, len(todo), batch_size):
        batch, samples = [], []
        for path, key in todo[start : start + batch_size]:
            try:
                samples.append(prepare_audio(path, rate).waveform)
                batch.append((path, key))
            except (ValueError, OSError, RuntimeError) as err:
                failed[path] = str(err)
        if not batch:
            continue
        with torch.no_grad():
            embeds = pipe.model.embed_audio(waveforms=samples, feature_extractor=pipe.feature_extractor,
                                            batch_size=batch_size)
        for (path, key), row in zip(batch, embeds):
            cache.put(key, row)
            found[path] = row.float().cpu()
            embedded += 1
    cache.save()
    return found, failed, embedded


def search(pipe, query: str, files: Sequence[str], top_k: int | None = 10, cache_folder: str | None = None,
           batch_size: int = 8) -> SearchResult:
    """Rank `files` for the text `query` by the cosine of their audio embedding with the query's text embedding in
    the captioner's joint space (`pipe` an "audio-captioning" pipeline); the best `top_k` (None: all)."""
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"The query must be a non-empty text, got {query!r}.")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"`top_k` must be a positive integer, got {top_k!r}.")
    cache = EmbeddingCache(model_digest(pipe.model), cache_folder)
    found, failed, embedded = audio_embeddings(pipe, files, cache, batch_size)
    if not found:
        return SearchResult([], failed, embedded)
    names = list(found)
    text = pipe.model.embed_text([query.strip()])[0]
    scores = F.normalize(torch.stack([found[n] for n in names]), dim=-1) @ F.normalize(text, dim=-1)
    order = scores.argsort(descending=True).tolist()[: top_k or len(names)]
    ranking = [{"query": query, "rank": r + 1, "file": names[i], "score": round(float(scores[i]), 4)}
               for r, i in enumerate(order)]
    return SearchResult(ranking, failed, embedded)


def print_table(ranking: Sequence[dict], stream=None) -> None:
    """The ranking as a table: rank, score, file. `stream` defaults to the `sys.stdout` of the call (not of the import:
    a stream captured then may be closed by now)."""
    stream = sys.stdout if stream is None else stream
    if not ranking:
        print("no audio file could be ranked", file=stream)
        return
    print(f"{'rank':>4}  {'score':>6}  file", file=stream)
    for row in ranking:
        print(f"{row['rank']:>4}  {row['score']:>6.3f}  {row['file']}", file=stream)
