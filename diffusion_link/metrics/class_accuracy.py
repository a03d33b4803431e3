"""Class accuracy: does a caption (or an embedding) name the sound's class? The one home of this rule; the starter's
build, the experiment and the benchmarks all call it.

Each class has a *prototype*: the L2-normalised mean of the text embeddings of its reference captions. An embedding
counts as right when the prototype most similar to it (by cosine) is its class's. A caption is first embedded by the
joint space's text side. **An empty caption counts as wrong**: it names no class (silence gets no caption, and a
decoder that stops at once has said nothing), and it is never replaced by a filler word, whose nearest class would be
an accident of the text encoder.

In a world of several label sets (ESC-50's 50 classes, each Debian collection's concepts), each clip is matched only
among its own set's prototypes: `candidates`, an (N, C) boolean mask of the classes each clip may be named as (None:
all). So an ESC-50 hen clip captioned "chickens clucking" is right, although a Debian concept says the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def class_prototypes(caption_embeds: torch.Tensor, caption_labels: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """(N, D) text embeddings of reference captions and their (N,) class labels -> (C, D) unit prototypes.

    Every class in `range(num_classes)` (default: max label + 1) needs at least one caption."""
    caption_labels = torch.as_tensor(caption_labels)
    num_classes = int(caption_labels.max()) + 1 if num_classes is None else num_classes
    missing = [c for c in range(num_classes) if not bool((caption_labels == c).any())]
    if missing:
        raise ValueError(f"Classes {missing[:10]} have no reference caption to make a prototype from.")
    embeds = F.normalize(caption_embeds.float(), dim=-1)
    return F.normalize(torch.stack([embeds[caption_labels == c].mean(0) for c in range(num_classes)]), dim=-1)


def nearest_class(embeds: torch.Tensor, prototypes: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) index of the most similar of the (C, D) `prototypes` to each of the (N, D) `embeds`, among the classes
    the (N, C) boolean `candidates` allows (None: all)."""
    sims = F.normalize(embeds.float(), dim=-1) @ prototypes.float().T
    if candidates is not None:
        candidates = torch.as_tensor(candidates, dtype=torch.bool)
        if candidates.shape != sims.shape:
            raise ValueError(f"`candidates` has shape {tuple(candidates.shape)}, expected {tuple(sims.shape)} "
                             "(one row per embedding, one column per prototype).")
        sims = sims.masked_fill(~candidates, float("-inf"))
    return sims.argmax(1)


def class_accuracy(embeds: torch.Tensor, labels: torch.Tensor | Sequence[int], prototypes: torch.Tensor,
                   candidates: torch.Tensor | None = None) -> float:
    """Share of the (N, D) `embeds` whose most similar of the (C, D) `prototypes` (among `candidates`) is their
    (N,) label."""
    labels = torch.as_tensor(labels)
    if len(embeds) != len(labels):
        raise ValueError(f"Got {len(embeds)} embeddings for {len(labels)} labels.")
    return float((nearest_class(embeds, prototypes, candidates) == labels).float().mean())


def caption_class_accuracy(
    captions: Sequence[str],
    labels: torch.Tensor | Sequence[int],
    prototypes: torch.Tensor,
    embed_texts: Callable[[list[str]], torch.Tensor],
    candidates: torch.Tensor | None = None,
) -> float:
    """Share of `captions` whose text embedding's nearest prototype (among `candidates`) is their label; empty
    captions count as wrong.

    `embed_texts` maps a list of (non-empty) captions to their (n, D) text embeddings in the prototypes' space."""
    right = caption_class_correct(captions, labels, prototypes, embed_texts, candidates)
    return sum(right) / len(right) if right else 0.0


def caption_class_correct(
    captions: Sequence[str],
    labels: torch.Tensor | Sequence[int],
    prototypes: torch.Tensor,
    embed_texts: Callable[[list[str]], torch.Tensor],
    candidates: torch.Tensor | None = None,
) -> list[bool]:
    """Per caption, whether it names its label's class by the rule above (an empty caption: False)."""
    labels = torch.as_tensor(labels)
    if len(captions) != len(labels):
        raise ValueError(f"Got {len(captions)} captions for {len(labels)} labels.")
    right = [False] * len(captions)
    spoken = [i for i, c in enumerate(captions) if isinstance(c, str) and c.strip()]
    if spoken:
        embeds = embed_texts([captions[i] for i in spoken])
        allowed = None if candidates is None else torch.as_tensor(candidates, dtype=torch.bool)[spoken]
        hits = nearest_class(embeds, prototypes, allowed) == labels[spoken]
        for i, hit in zip(spoken, hits.tolist()):
            right[i] = bool(hit)
    return right
