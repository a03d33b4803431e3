"""Metrics: the modality gap between paired audio and text embeddings (with tables and plots), caption scores
(BLEU, ROUGE-L, CIDEr-D, METEOR, semantic similarity; also as local `evaluate` modules) and class accuracy."""

from .bleu import corpus_bleu
from .caption_scores import (
    CAPTION_METRICS,
    COCO_METRICS,
    CaptionMetricResult,
    CaptionScoreDetails,
    caption_score_details,
    caption_scores,
)
from .caption_tokenizer import coco_tokenize, tokenize_captions
from .class_accuracy import caption_class_accuracy, caption_class_correct, class_accuracy, class_prototypes
from .cider import corpus_cider_d
from .evaluate_modules import evaluate_module_path
from .gap_plots import plot_modality_gap
from .gap_report import compare_bridges, format_gap_table
from .modality_gap import modality_gap, paired_figures
from .rouge import corpus_rouge_l


__all__ = [
    "CAPTION_METRICS",
    "COCO_METRICS",
    "CaptionMetricResult",
    "CaptionScoreDetails",
    "caption_score_details",
    "caption_class_accuracy",
    "caption_class_correct",
    "caption_scores",
    "class_accuracy",
    "class_prototypes",
    "coco_tokenize",
    "compare_bridges",
    "corpus_bleu",
    "corpus_cider_d",
    "corpus_rouge_l",
    "evaluate_module_path",
    "format_gap_table",
    "modality_gap",
    "paired_figures",
    "plot_modality_gap",
    "tokenize_captions",
]
