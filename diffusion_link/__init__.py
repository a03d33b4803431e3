"""diffusion_link: Diffusion-Link (arXiv 2510.11330) as transformers/diffusers-style software.

Importing the package registers the configs and models with the Auto classes and the "audio-captioning" pipeline
task.

The layout is the architecture. The modules at this top level are exactly the code a saved captioner carries to the
Hub (`save_pretrained` copies them; they import only torch, transformers, diffusers, numpy and each other, by
single-dot sibling imports). Everything else lives in subpackages that use absolute imports:

- `starter/`: the offline default model's own code and committed files;
- `metrics/`: the modality gap, caption scores, class accuracy, calibration;
- `apps/`: the command line, evaluation, `make demo`, the web page and its Space export;
- `hub/`: model cards, base-model references, the LAION-CLAP converter;
- `experiments/`: the helpers of the training scripts and benchmarks;
- `testing/`: tiny random models.
"""

import logging
import sys

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
from .hub import references as _references
from .hub.convert_laion_clap import clap_from_laion_checkpoint
from .metrics import modality_gap
from .modeling_diffusion_link import DiffusionLinkBridge, DiffusionLinkOutput
from .modeling_diffusion_link_captioner import DiffusionLinkCaptionerOutput, DiffusionLinkForAudioCaptioning
from .pipeline_audio_captioning import AudioCaptionPipeline
from .starter import default_captioner
from .starter.configuration_starter_encoder import StarterEncoderConfig
from .starter.feature_extraction_starter_encoder import StarterFeatureExtractor
from .starter.modeling_starter_encoder import StarterAudioTextEncoder


__version__ = "0.1.0"

# Hub folders saved before the subpackages existed import `diffusion_link.pretrained_references` (aliased here) and
# `diffusion_link.model_cards` (the module `__getattr__` below) by absolute path.
sys.modules.setdefault(f"{__name__}.pretrained_references", _references)
pretrained_references = _references

for _config, _model in (
    (DiffusionLinkConfig, DiffusionLinkBridge),
    (DiffusionLinkCaptionerConfig, DiffusionLinkForAudioCaptioning),
    (StarterEncoderConfig, StarterAudioTextEncoder),
):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
for _config, _model in (
    (DiffusionLinkConfig, DiffusionLinkBridge),
    (DiffusionLinkCaptionerConfig, DiffusionLinkForAudioCaptioning),
):
    # `save_pretrained` then writes `auto_map` and copies the code, so a saved folder loads with
    # `AutoModel.from_pretrained(folder, trust_remote_code=True)` without this package installed. The starter's
    # encoder is not registered: it runs only where this package is installed, never as remote code.
    _config.register_for_auto_class()
    _model.register_for_auto_class("AutoModel")

AutoFeatureExtractor.register(StarterEncoderConfig, StarterFeatureExtractor, exist_ok=True)

# `pipeline("audio-captioning")` without a model uses the committed starter captioner (offline, no download).
PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK,
    pipeline_class=AudioCaptionPipeline,
    pt_model=AutoModel,
    default={"model": (_default, None)} if (_default := default_captioner()) else None,
    type="multimodal",
)


class _StarterDefaultNotice(logging.Filter):
    """Drops transformers' "No model was supplied, defaulted to ... not recommended in production" when the default
    is the starter: a committed local folder, which has no revision to pin and downloads nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_default and str(record.msg).startswith(f"No model was supplied, defaulted to {_default} "))


logging.getLogger("transformers.pipelines").addFilter(_StarterDefaultNotice())


def __getattr__(name: str):
    # `from diffusion_link import model_cards`, as Hub folders saved before the restructuring do (loaded on use).
    if name == "model_cards":
        from .hub import model_cards

        return model_cards
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
