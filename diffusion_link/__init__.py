"""diffusion_link: Diffusion-Link (arXiv 2510.11330) as transformers/diffusers-style software."""

from transformers import AutoConfig, AutoModel

from .baselines import IdentityBridge, MeanShiftBridge, text_only_diffusion_config
from .configuration_diffusion_link import DiffusionLinkConfig
from .metrics import modality_gap
from .modeling_diffusion_link import DiffusionLinkBridge, DiffusionLinkOutput


__version__ = "0.1.0"

AutoConfig.register(DiffusionLinkConfig.model_type, DiffusionLinkConfig, exist_ok=True)
AutoModel.register(DiffusionLinkConfig, DiffusionLinkBridge, exist_ok=True)
# `save_pretrained` then writes `auto_map` and copies the code, so a saved folder loads with
# `AutoModel.from_pretrained(folder, trust_remote_code=True)` without this package installed.
DiffusionLinkConfig.register_for_auto_class()
DiffusionLinkBridge.register_for_auto_class("AutoModel")

__all__ = [
    "DiffusionLinkBridge",
    "DiffusionLinkConfig",
    "DiffusionLinkOutput",
    "IdentityBridge",
    "MeanShiftBridge",
    "modality_gap",
    "text_only_diffusion_config",
]
