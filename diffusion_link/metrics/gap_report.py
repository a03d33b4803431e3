"""Side-by-side modality-gap figures of several bridges on the same held-out pairs."""

from __future__ import annotations

from typing import Mapping

import torch

from .modality_gap import modality_gap


GAP_COLUMNS = ("paired_cosine", "centroid_distance", "retrieval_r1", "retrieval_r5", "modality_separability")


def compare_bridges(
    bridges: Mapping[str, object], audio_embeds: torch.Tensor, text_embeds: torch.Tensor, **link_kwargs
) -> dict[str, dict[str, float]]:
    """`modality_gap(bridge.link(audio), text)` for every named bridge (anything with a `link()` method).

    Extra keyword arguments (e.g. `generator`) go to every `link()` call.
    """
    results = {}
    for name, bridge in bridges.items():
        if not callable(getattr(bridge, "link", None)):
            raise TypeError(f"Bridge {name!r} has no link() method (got {type(bridge).__name__}).")
        results[name] = modality_gap(bridge.link(audio_embeds, **link_kwargs), text_embeds)
    return results


def format_gap_table(results: Mapping[str, Mapping[str, float]], columns=GAP_COLUMNS) -> str:
    """A Markdown table, one row per method, one column per gap figure."""
    lines = ["| method | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, row in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    return "\n".join(lines)
