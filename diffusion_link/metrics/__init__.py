"""Metrics: the modality gap between paired audio and text embeddings (with tables and plots), and caption scores."""

from .caption_scores import caption_scores
from .gap_plots import plot_modality_gap
from .gap_report import compare_bridges, format_gap_table
from .modality_gap import modality_gap


__all__ = ["caption_scores", "compare_bridges", "format_gap_table", "modality_gap", "plot_modality_gap"]
