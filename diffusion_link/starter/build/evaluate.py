"""Stage "evaluate": the test clips' class accuracy of the captions with and without the bridge and with the text
oracle (one of the clip's label's captions), the gap figures against the label's first caption."""

from __future__ import annotations

import logging

import torch

from diffusion_link import DiffusionLinkForAudioCaptioning, StarterAudioTextEncoder, modality_gap
from diffusion_link.metrics import caption_class_accuracy
from diffusion_link.starter.build.arguments import StarterArguments
from diffusion_link.starter.build.stages import stage
from diffusion_link.starter.world import StarterWorld, embed_texts, text_tokenizer


logger = logging.getLogger("build_starter")


@stage("evaluate")
def evaluate(args: StarterArguments, world: StarterWorld, captioner: DiffusionLinkForAudioCaptioning, tokenizer,
             towers: dict, head: dict) -> dict:
    """Class accuracy of the greedy captions of the raw, the bridged and the oracle test embeddings, 10 examples of
    each, the modality gap before and after the bridge and the bridged accuracy's ratio to the oracle's."""
    ntrain = len(head["oof"])
    labels = head["labels"][ntrain:]
    raw = head["test"]
    bridged = captioner.link(raw)
    esc_text = towers["esc_text"]
    rng = torch.Generator().manual_seed(args.seed)
    oracle = esc_text[world.captions.random_caption_rows(labels, rng)]
    minilm = StarterAudioTextEncoder.from_bases()
    minilm_tokenizer = text_tokenizer(minilm)
    results = {"class_accuracy": {}, "examples": {}}
    for name, embeds in (("identity", raw), ("diffusion_link", bridged), ("text_oracle", oracle)):
        captions = captioner.caption_embeds(embeds, tokenizer, max_new_tokens=args.eval_max_new_tokens, batch_size=16)
        results["class_accuracy"][name] = caption_class_accuracy(
            captions, labels, head["prototypes"], lambda texts: embed_texts(minilm, minilm_tokenizer, texts, name),
            head["candidates"][ntrain:])
        results["examples"][name] = captions[:10]
        logger.info("  %s: class accuracy %.3f; e.g. %s", name, results["class_accuracy"][name], captions[:3])
    paired_text = esc_text[world.captions.first_caption_rows(labels)]
    results["gap_raw"] = modality_gap(raw, paired_text)
    results["gap_bridged"] = modality_gap(bridged, paired_text)
    results["ratio_to_oracle"] = (results["class_accuracy"]["diffusion_link"]
                                  / max(results["class_accuracy"]["text_oracle"], 1e-9))
    return results
