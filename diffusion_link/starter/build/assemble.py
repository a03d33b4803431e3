"""Stage "assemble": `--output`/encoder and `--output`/captioner, only the trained parts (heads, bridge, projector,
LoRA) as safetensors; the bases are referenced (`package:` and `cache:` references). Neither folder holds code: the
starter encoder is not registered for code copying and the captioner is saved with `ship_code=False`, since the
starter ships inside the package that provides it. The captioner's card is rendered from the build's reports by
`diffusion_link.hub.model_cards.starter_model_card`."""

from __future__ import annotations

import os
import shutil

from diffusion_link import DiffusionLinkBridge, DiffusionLinkForAudioCaptioning, StarterFeatureExtractor
from diffusion_link.hub.model_cards import CARD_NAME, starter_model_card
from diffusion_link.starter.build.arguments import ENCODER_REFERENCE, StarterArguments
from diffusion_link.starter.build.decoder import with_bridge
from diffusion_link.starter.build.stages import stage


@stage("assemble")
def assemble(args: StarterArguments, encoder_dir: str, decoder_dir: str, bridge_model: DiffusionLinkBridge,
             reports: dict) -> str:
    """Write the starter's encoder and captioner folders into `args.output`; returns the captioner's folder."""
    encoder_out = os.path.join(args.output, "encoder")
    captioner_out = os.path.join(args.output, "captioner")
    for folder in (encoder_out, captioner_out):
        shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(encoder_dir, encoder_out)
    model = with_bridge(DiffusionLinkForAudioCaptioning.from_pretrained(decoder_dir), bridge_model)
    model.config.audio_tower_name_or_path = ENCODER_REFERENCE
    model.config.language_model_name_or_path = args.language_model
    model.config.audio_text_tokenizer_name_or_path = model.audio_tower.config.text_model_name_or_path
    picked = reports.get("decoding")
    if picked:
        model.config.num_candidates, model.config.rerank = picked["num_candidates"], picked["rerank"]
        model.config.rerank_weight = picked["rerank_weight"]
        model.config.confidence_calibration = picked.get("confidence", {}).get("calibration")
    from transformers import AutoTokenizer

    # The parts one by one, not the pipeline's `save_pretrained`: that one copies the pipeline's own code into the
    # folder whenever the task is registered, which the starter (inside the package) does not need.
    model.save_pretrained(captioner_out, ship_code=False)
    AutoTokenizer.from_pretrained(decoder_dir).save_pretrained(captioner_out)
    StarterFeatureExtractor.from_pretrained(decoder_dir).save_pretrained(captioner_out)
    starter_model_card(reports).save(os.path.join(captioner_out, CARD_NAME))
    return captioner_out
