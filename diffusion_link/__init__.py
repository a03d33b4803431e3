"""diffusion_link: Diffusion-Link (arXiv 2510.11330) as transformers/diffusers-style software.

Importing the package registers the configs and models with the Auto classes and the "audio-captioning" pipeline
task.
"""

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .peer_bridges import (
    CaptionMemoryBridge,
    IdentityBridge,
    LinearMapBridge,
    MeanShiftBridge,
    text_only_diffusion_config,
)
from .configuration_diffusion_link import DiffusionLinkConfig
from .configuration_diffusion_link_captioner import PIPELINE_TASK, DiffusionLinkCaptionerConfig
from .configuration_starter_encoder import StarterEncoderConfig
from .convert_laion_clap import clap_from_laion_checkpoint
from .default_model import default_captioner
from .feature_extraction_starter import StarterFeatureExtractor
from .metrics import modality_gap
from .modeling_diffusion_link import DiffusionLinkBridge, DiffusionLinkOutput
from .modeling_diffusion_link_captioner import DiffusionLinkCaptionerOutput, DiffusionLinkForAudioCaptioning
from .modeling_starter_encoder import StarterAudioTextEncoder
from .pipeline_audio_captioning import AudioCaptionPipeline


__version__ = "0.1.0"

for _config, _model in (
    (DiffusionLinkConfig, DiffusionLinkBridge),
    (DiffusionLinkCaptionerConfig, DiffusionLinkForAudioCaptioning),
    (StarterEncoderConfig, StarterAudioTextEncoder),
):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
    # `save_pretrained` then writes `auto_map` and copies the code, so a saved folder loads with
    # `AutoModel.from_pretrained(folder, trust_remote_code=True)` without this package installed.
    _config.register_for_auto_class()
    _model.register_for_auto_class("AutoModel")

AutoFeatureExtractor.register(StarterEncoderConfig, StarterFeatureExtractor, exist_ok=True)
StarterFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

# `pipeline("audio-captioning")` without a model uses the committed starter captioner (offline, no download).
PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK,
    pipeline_class=AudioCaptionPipeline,
    pt_model=AutoModel,
    default={"model": (default_captioner(), None)} if default_captioner() else None,
    type="multimodal",
)

__all__ = [
    "AudioCaptionPipeline",
    "CaptionMemoryBridge",
    "DiffusionLinkBridge",
    "DiffusionLinkCaptionerConfig",
    "DiffusionLinkCaptionerOutput",
    "DiffusionLinkConfig",
    "DiffusionLinkForAudioCaptioning",
    "DiffusionLinkOutput",
    "IdentityBridge",
    "LinearMapBridge",
    "MeanShiftBridge",
    "StarterAudioTextEncoder",
    "StarterEncoderConfig",
    "StarterFeatureExtractor",
    "clap_from_laion_checkpoint",
    "modality_gap",
    "text_only_diffusion_config",
]
