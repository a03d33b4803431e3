"""Leave one source out: how the starter hears recordings from a collection it never trained on.

For a held-out source S (a Debian collection), the starter's joint space is rebuilt without S by the build's own
stages (`heads`: the final head and the cross-fitted ones; `fold_bridge`: the bridge on the out-of-fold clips), and
S's recordings are then
- classified zero-shot in the joint space: the nearest of S's concept prototypes (`class_accuracy`);
- captioned by the decoder with the captioner's default decoding and scored by the package's one class-accuracy
  rule, among S's concepts (`caption_class_correct`).
The decoder learns from text alone (AudioCaps + Clotho), so it never heard S either. A model to compare (the committed
starter, trained on ESC-50 alone) is scored on the same clips by `score_captioner`.

Every tensor comes from the full world's tower cache (`subset_towers`): leaving a source out selects rows, it embeds
nothing again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from diffusion_link.metrics import caption_class_correct, class_accuracy
from diffusion_link.starter.build.frozen_parts import default_decoding
from diffusion_link.starter.world import StarterWorld


logger = logging.getLogger(__name__)


def subset_towers(world: StarterWorld, split: dict, towers: dict, sub_world: StarterWorld, sub_split: dict) -> dict:
    """The tower embeddings of `sub_world`'s split and caption table, taken from the full `world`'s `towers`."""
    def keys(w: StarterWorld, s: dict):  # a world of one source names no clip's source
        first = next(iter(w.sources))
        return [(c.get("source", first), c["filename"]) for c in list(s["train"]) + list(s["test"])]

    row_of = {key: i for i, key in enumerate(keys(world, split))}
    rows = [row_of[key] for key in keys(sub_world, sub_split)]
    text_row = {t: i for i, t in enumerate(world.captions.texts)}
    return {"audio": towers["audio"][rows], "esc_text": towers["esc_text"][[text_row[t] for t in sub_world.captions.texts]],
            "corpus_text": towers["corpus_text"]}


def source_clips(world: StarterWorld, split: dict, towers: dict, name: str) -> tuple[list[dict], torch.Tensor]:
    """The clips of source `name` in the full world's split and their (n, D_audio) tower embeddings."""
    clips = list(split["train"]) + list(split["test"])
    rows = [i for i, c in enumerate(clips) if c.get("source") == name]
    return [clips[i] for i in rows], towers["audio"][rows]


def source_prototypes(world: StarterWorld, towers: dict, name: str) -> tuple[list[str], torch.Tensor]:
    """Source `name`'s labels and their (C, D) prototypes from the full world's caption embeddings."""
    labels = list(world.sources[name].captions)
    prototypes = world.captions.prototypes(towers["esc_text"])
    return labels, prototypes[[world.captions.label_index[l] for l in labels]]


@torch.no_grad()
def score_source(captioner, tokenizer, embed_texts, raw: torch.Tensor, clips: Sequence[dict], labels: list[str],
                 prototypes: torch.Tensor) -> dict:
    """Zero-shot and caption class accuracy of a source's clips: `raw` (n, D) joint-space audio embeddings (unit),
    linked by the captioner's own bridge and captioned by its default decoding, each named among the source's
    `labels` (`prototypes` (C, D))."""
    local = torch.tensor([labels.index(c["category"]) for c in clips])
    captions = default_decoding(captioner, tokenizer, captioner.link(raw), raw)
    right = caption_class_correct(captions, local, prototypes, embed_texts)
    return {"clips": len(clips), "concepts": len(labels),
            "zero_shot_accuracy": class_accuracy(raw, local, prototypes),
            "caption_class_accuracy": sum(right) / len(right),
            "search_precision_at_5": search_precision(raw, local, labels, embed_texts),
            "examples": [{"file": c["name"], "concept": c["category"], "caption": t, "right": ok}
                         for c, t, ok in sorted(zip(clips, captions, right), key=lambda x: x[0]["name"])]}


def search_precision(raw: torch.Tensor, local: torch.Tensor, labels: list[str], embed_texts, k: int = 5) -> float:
    """`diffusion-link search`'s precision on a source: each concept's caption as the query over all the source's
    clips (ranked by cosine, as the search ranks), the share of its top min(k, clips of the concept) that are of the
    concept, averaged over the concepts that have clips."""
    present = sorted(set(local.tolist()))
    queries = F.normalize(embed_texts([labels[c] for c in present]).float(), dim=-1)
    scores = queries @ F.normalize(raw.float(), dim=-1).T  # (concepts, clips)
    precisions = []
    for row, concept in enumerate(present):
        n = min(k, int((local == concept).sum()))
        top = scores[row].topk(n).indices
        precisions.append(float((local[top] == concept).float().mean()))
    return sum(precisions) / len(precisions)


def never_named(rows: dict) -> list[str]:
    """The concepts whose clips were never captioned right, across the held-out sources' examples."""
    named, seen = set(), set()
    for row in rows.values():
        for e in row["examples"]:
            seen.add(e["concept"])
            if e["right"]:
                named.add(e["concept"])
    return sorted(seen - named)


def project(encoder, audio: torch.Tensor) -> torch.Tensor:
    """(n, D_audio) tower embeddings -> (n, D) unit joint-space embeddings through `encoder`'s audio head."""
    with torch.no_grad():
        return F.normalize(encoder.audio_projection(audio), dim=-1)
