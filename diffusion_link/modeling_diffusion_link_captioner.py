"""The Diffusion-Link audio captioner: a frozen audio tower, the bridge, a soft-prefix projector and a causal LM with
LoRA, as one `PreTrainedModel`.

    audio --audio_tower--> (B, D) --bridge.link--> (B, D) --multi_modal_projector--> (B, P, H) prefix
    [BOS] [prefix] [prompt tokens] [caption tokens] [EOS] --language_model (+ LoRA)--> caption

Copied next to the weights by ``save_pretrained`` (custom code on the Hub). At import it needs only torch,
transformers, diffusers and flat sibling modules; peft is imported when a checkpoint has an unmerged LoRA adapter
(`merge_and_unload()` exports one that does not need it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, PreTrainedModel
from transformers.utils import ModelOutput, is_peft_available

from .peer_bridges import IdentityBridge, MeanShiftBridge
from .configuration_diffusion_link_captioner import DiffusionLinkCaptionerConfig
from .embedding_extraction import audio_embeddings, embed_audio
from .model_card_mixin import ModelCardMixin
from .modeling_diffusion_link import DiffusionLinkBridge, GeneratorArg
from .pretrained_loading import (
    check_pretrained_config,
    checked_from_pretrained,
    hub_kwargs,
    own_aligned_memory,
    resolve_base_reference,
)
from .validation import check_embeddings


@dataclass
class DiffusionLinkCaptionerOutput(ModelOutput):
    """
    Output of [`DiffusionLinkForAudioCaptioning.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): next-token loss on the caption tokens.
        logits (`torch.FloatTensor` of shape `(B, L, vocab)`): LM logits over the whole sequence (prefix included).
        prefix_embeds (`torch.FloatTensor` of shape `(B, P, H)`): the soft prefix given to the LM.
        embeds (`torch.FloatTensor` of shape `(B, D)`): the embedding the prefix was made from (bridged audio, or
            text in zero-shot training).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    prefix_embeds: torch.FloatTensor | None = None
    embeds: torch.FloatTensor | None = None


class DiffusionLinkProjector(nn.Module):
    """Two-layer MLP from one (B, D) embedding to P soft tokens of the LM width: (B, D) -> (B, P, H)."""

    def __init__(self, config: DiffusionLinkCaptionerConfig):
        super().__init__()
        self.prefix_length = config.prefix_length
        self.lm_hidden_size = config.text_config.hidden_size
        self.linear_1 = nn.Linear(config.embedding_dim, config.projector_hidden_size)
        self.linear_2 = nn.Linear(config.projector_hidden_size, config.prefix_length * self.lm_hidden_size)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        hidden = self.linear_2(torch.tanh(self.linear_1(embeds)))  # (B, P * H)
        return hidden.view(embeds.shape[0], self.prefix_length, self.lm_hidden_size)


class DiffusionLinkCaptionerPreTrainedModel(ModelCardMixin, PreTrainedModel):
    config: DiffusionLinkCaptionerConfig
    config_class = DiffusionLinkCaptionerConfig
    base_model_prefix = "model"
    main_input_name = "input_features"
    supports_gradient_checkpointing = True
    accepts_loss_kwargs = False
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        # Only the projector is ours to initialise; the towers, the LM and the bridge initialise themselves.
        if isinstance(module, DiffusionLinkProjector):
            for linear in (module.linear_1, module.linear_2):
                nn.init.xavier_uniform_(linear.weight)
                nn.init.zeros_(linear.bias)


class DiffusionLinkForAudioCaptioning(DiffusionLinkCaptionerPreTrainedModel):
    r"""
    Audio captioner of Diffusion-Link: `audio_tower` (frozen; `ClapModel` or any model with `get_audio_features` /
    `get_text_features`), `bridge` (frozen; [`DiffusionLinkBridge`] or a peer), `multi_modal_projector` (trained)
    and `language_model` (a causal LM, frozen, with trainable LoRA adapters from peft).

    Build one from pretrained parts with [`~DiffusionLinkForAudioCaptioning.from_pretrained_parts`]; load a saved one
    with `from_pretrained` (embedded or referenced bases, see `DiffusionLinkCaptionerConfig.base_weights`).
    """

    def __init__(
        self,
        config: DiffusionLinkCaptionerConfig,
        audio_tower: nn.Module | None = None,
        language_model: PreTrainedModel | None = None,
        bridge: nn.Module | None = None,
    ):
        super().__init__(config)
        self.audio_tower = audio_tower if audio_tower is not None else build_audio_tower(config)
        self.bridge = bridge if bridge is not None else build_bridge(config)
        self.multi_modal_projector = DiffusionLinkProjector(config)
        if language_model is None:
            language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.language_model = language_model
        if config.lora_r:
            self._add_lora()
        self.post_init()
        self.trained_parts_to_float32()  # an LM given in bf16 gets bf16 LoRA layers from peft
        self.apply_freezing()
        self.train(self.training)  # the frozen tower and bridge start (and stay) in eval mode

    # ------------------------------------------------------------------ building and freezing
    def _add_lora(self) -> None:
        _require_peft("a checkpoint with LoRA adapters (lora_r > 0)")
        if is_peft_available():  # guarded import: a Hub copy of this file needs peft only for unmerged adapters
            from peft import LoraConfig, inject_adapter_in_model

        lora = LoraConfig(
            r=self.config.lora_r,
            lora_alpha=self.config.lora_alpha,
            lora_dropout=self.config.lora_dropout,
            target_modules=list(self.config.lora_target_modules),
        )
        self.language_model = inject_adapter_in_model(lora, self.language_model)

    def apply_freezing(self) -> None:
        """Freeze the audio tower, the bridge and the LM base; train the projector and the LoRA adapters.

        Called after `__init__` and after `from_pretrained` (which re-creates parameters as trainable).
        """
        self.audio_tower.requires_grad_(False)
        self.bridge.requires_grad_(False)
        self.language_model.requires_grad_(False)
        for name, param in self.language_model.named_parameters():
            if "lora_" in name:
                param.requires_grad_(True)
        self.multi_modal_projector.requires_grad_(True)

    def train(self, mode: bool = True):
        # Frozen parts stay in eval mode (no dropout) while the rest trains.
        super().train(mode)
        self.audio_tower.eval()
        self.bridge.eval()
        return self

    @torch.no_grad()
    def trained_parts_to_float32(self) -> None:
        """Keep the bridge, the projector and the LoRA adapters in float32 whatever `dtype` the frozen bases were
        loaded in (`from_pretrained(..., dtype=torch.bfloat16)` would otherwise cast an embedded checkpoint whole):
        their small updates would round away in bf16."""
        self.bridge.float()
        self.multi_modal_projector.float()
        for name, param in self.language_model.named_parameters():
            if "lora_" in name:
                param.data = param.data.float()

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @torch.no_grad()
    def merge_and_unload(self) -> "DiffusionLinkForAudioCaptioning":
        """Merge the LoRA adapters into the LM weights and remove them (peft's `merge()`), in place.

        The result saves and loads without peft (`lora_r` becomes 0) and generates the same captions.
        """
        _require_peft("merge_and_unload()")
        if is_peft_available():
            from peft.tuners.tuners_utils import BaseTunerLayer

        for name, module in list(self.language_model.named_modules()):
            if isinstance(module, BaseTunerLayer):
                module.merge()
                parent_name, _, child = name.rpartition(".")
                parent = self.language_model.get_submodule(parent_name) if parent_name else self.language_model
                setattr(parent, child, module.get_base_layer())
        self.config.lora_r = 0
        self.apply_freezing()
        return self

    # ------------------------------------------------------------------ pretrained parts and references
    @classmethod
    def from_pretrained_parts(
        cls,
        audio_tower: str | nn.Module,
        language_model: str | PreTrainedModel,
        bridge: str | nn.Module | None = None,
        *,
        base_weights: str = "referenced",
        dtype: torch.dtype | None = None,
        **config_kwargs,
    ) -> "DiffusionLinkForAudioCaptioning":
        """A new captioner from pretrained parts, e.g. `("laion/clap-htsat-unfused", "meta-llama/Llama-2-7b-hf",
        "path/to/bridge")`: ids/paths are loaded, modules are used as given. The projector and LoRA start fresh.

        `base_weights="referenced"` (default when both bases are given by name) makes `save_pretrained` store only
        the trained parts and the two names.
        """
        tower_ref = audio_tower if isinstance(audio_tower, str) else None
        lm_ref = language_model if isinstance(language_model, str) else None
        if isinstance(audio_tower, str):
            audio_tower = load_audio_tower(audio_tower)
        if isinstance(language_model, str):
            language_model = AutoModelForCausalLM.from_pretrained(resolve_base_reference(language_model), dtype=dtype)
        if base_weights == "referenced" and not (tower_ref and lm_ref):
            base_weights = "embedded"  # nothing to refer to
        if isinstance(bridge, str):
            bridge = DiffusionLinkBridge.from_pretrained(bridge)
        fields = dict(
            audio_config=audio_tower.config,
            text_config=language_model.config,
            base_weights=base_weights,
            audio_tower_name_or_path=tower_ref,
            language_model_name_or_path=lm_ref,
        )
        if isinstance(bridge, DiffusionLinkBridge):
            fields.update(bridge_type="diffusion_link", bridge_config=bridge.config)
        elif isinstance(bridge, MeanShiftBridge):
            fields["bridge_type"] = "mean_shift"
        elif isinstance(bridge, IdentityBridge):
            fields["bridge_type"] = "identity"
        fields.update(config_kwargs)
        config = DiffusionLinkCaptionerConfig(**fields)
        return cls(config, audio_tower=audio_tower, language_model=language_model, bridge=bridge)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        # Refuses a folder of another model type and weights that do not match the config, like the bridge does.
        check_pretrained_config(cls.config_class, pretrained_model_name_or_path, kwargs)
        config = kwargs.get("config")
        if config is None:
            config = DiffusionLinkCaptionerConfig.from_pretrained(
                pretrained_model_name_or_path, **hub_kwargs(kwargs)
            )
        if getattr(config, "base_weights", "embedded") == "referenced":
            kwargs.pop("config", None)
            model = cls._from_referenced(pretrained_model_name_or_path, config, **kwargs)
        else:
            model = checked_from_pretrained(super().from_pretrained, pretrained_model_name_or_path, *args, **kwargs)
            if isinstance(model, tuple):
                model = model[0]
        # Small trained parts get fresh (aligned) memory, so a loaded model reproduces the saved one bit for bit.
        own_aligned_memory((*model.bridge.parameters(), *model.bridge.buffers(), *model.multi_modal_projector.parameters()))
        model.trained_parts_to_float32()
        model.apply_freezing()
        return model

    @classmethod
    def _from_referenced(cls, path, config: DiffusionLinkCaptionerConfig, **kwargs) -> "DiffusionLinkForAudioCaptioning":
        from safetensors.torch import load_file
        from transformers.utils import cached_file

        dtype = kwargs.get("dtype")
        audio_tower = load_audio_tower(config.audio_tower_name_or_path)
        language_model = AutoModelForCausalLM.from_pretrained(
            resolve_base_reference(config.language_model_name_or_path), dtype=dtype
        )
        model = cls(config, audio_tower=audio_tower, language_model=language_model)
        weights = cached_file(path, "model.safetensors", **hub_kwargs(kwargs))
        state = load_file(weights)
        expected = set(model.trained_state_dict())
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise ValueError(
                f"{weights} does not match a referenced-bases captioner: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}."
            )
        model.load_state_dict(state, strict=False)
        return model.eval()

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights that are not part of the frozen bases: bridge, projector and LoRA adapters."""
        return {
            k: v
            for k, v in self.state_dict().items()
            if not (k.startswith("audio_tower.") or k.startswith("language_model.")) or "lora_" in k
        }

    def save_pretrained(self, save_directory, *args, **kwargs):
        if self.config.base_weights == "referenced" and kwargs.get("state_dict") is None:
            kwargs["state_dict"] = self.trained_state_dict()
        return super().save_pretrained(save_directory, *args, **kwargs)

    # ------------------------------------------------------------------ the three stages
    @torch.no_grad()
    def embed_audio(
        self,
        input_features: torch.Tensor | None = None,
        *,
        waveforms: list | None = None,
        feature_extractor=None,
        batch_size: int = 16,
        **tower_kwargs,
    ) -> torch.Tensor:
        """(B, D) L2-normalised audio embeddings from the frozen tower, on the model's device, from one of:

        - `input_features` (with `is_longer` / `attention_mask` in `tower_kwargs`): one window each, as the tower's
          feature extractor made them;
        - `waveforms` and the tower's `feature_extractor`: (num_samples,) mono float32 waveforms at the extractor's
          rate. One longer than the encoder's window (10 s for CLAP) is split into consecutive windows whose
          embeddings are averaged, deterministically and covering the whole clip; the pipeline takes this path.
        """
        if (input_features is None) == (waveforms is None):
            raise ValueError("Pass exactly one of `input_features` and `waveforms` to `embed_audio`.")
        if input_features is not None:
            return audio_embeddings(self.audio_tower, input_features=input_features, **tower_kwargs)
        if feature_extractor is None:
            raise ValueError("`embed_audio(waveforms=...)` needs the tower's `feature_extractor`.")
        device = next(self.audio_tower.parameters()).device
        return embed_audio(self.audio_tower, feature_extractor, waveforms, batch_size=batch_size).to(device)

    @torch.no_grad()
    def link(
        self,
        audio_embeds: torch.Tensor,
        *,
        strength: float | None = None,
        num_inference_steps: int | None = None,
        generator: GeneratorArg = None,
    ) -> torch.Tensor:
        """(B, D) audio embeddings -> (B, D) bridged embeddings (the bridge's `link()`)."""
        return self.bridge.link(
            audio_embeds.float(), strength=strength, num_inference_steps=num_inference_steps, generator=generator
        )

    def prefix_from_embeds(self, embeds: torch.Tensor) -> torch.Tensor:
        """(B, D) embeddings -> (B, P, H) soft prefix in the LM's dtype."""
        embeds = F.normalize(embeds.float(), dim=-1).to(self.multi_modal_projector.linear_1.weight.dtype)
        return self.multi_modal_projector(embeds).to(self.language_model.get_input_embeddings().weight.dtype)

    def _embeds(self, input_features, audio_embeds, text_embeds, tower_kwargs, strength, num_inference_steps, generator):
        given = [name for name, v in (("input_features", input_features), ("audio_embeds", audio_embeds),
                                      ("text_embeds", text_embeds)) if v is not None]
        if len(given) != 1:
            raise ValueError(f"Pass exactly one of `input_features`, `audio_embeds`, `text_embeds`; got {given or 'none'}.")
        dim = self.config.embedding_dim
        if text_embeds is not None:
            check_embeddings("text_embeds", text_embeds, dim)
            embeds = F.normalize(text_embeds.float(), dim=-1)
            if self.training and self.config.noise_injection_std > 0:
                # CapDec: train the decoder on noisy text embeddings so that it tolerates the gap at test time.
                embeds = embeds + self.config.noise_injection_std * torch.randn_like(embeds)
            return embeds
        if input_features is not None:
            audio_embeds = self.embed_audio(input_features, **tower_kwargs)
        check_embeddings("audio_embeds", audio_embeds, dim)
        return self.link(audio_embeds, strength=strength, num_inference_steps=num_inference_steps, generator=generator)

    def _with_prefix(self, prefix, input_ids, attention_mask, labels):
        batch, device = prefix.shape[0], prefix.device
        embed_tokens = self.language_model.get_input_embeddings()
        parts = []
        bos = self.config.text_config.bos_token_id
        if bos is not None:
            parts.append(embed_tokens(torch.full((batch, 1), bos, device=device)))
        parts.append(prefix)
        head = sum(p.shape[1] for p in parts)
        if input_ids is not None:
            if input_ids.shape[0] != batch:
                raise ValueError(f"`input_ids` has {input_ids.shape[0]} rows for a batch of {batch} embeddings.")
            parts.append(embed_tokens(input_ids))
        inputs_embeds = torch.cat(parts, dim=1)  # (B, head + L, H)
        tail_mask = attention_mask if attention_mask is not None else (
            torch.ones_like(input_ids) if input_ids is not None else torch.ones(batch, 0, dtype=torch.long, device=device)
        )
        mask = torch.cat([torch.ones(batch, head, dtype=tail_mask.dtype, device=device), tail_mask], dim=1)
        if labels is not None:
            # The prefix (and BOS) are inputs, never targets.
            labels = torch.cat([torch.full((batch, head), -100, dtype=labels.dtype, device=device), labels], dim=1)
        return inputs_embeds, mask, labels

    # ------------------------------------------------------------------ training and generation
    def forward(
        self,
        input_features: torch.Tensor | None = None,
        audio_embeds: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        is_longer: torch.Tensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        strength: float | None = None,
        num_inference_steps: int | None = None,
        return_dict: bool | None = None,
    ) -> DiffusionLinkCaptionerOutput | tuple:
        r"""
        Captioning loss. Exactly one embedding source:

        - `input_features` (audio features of the tower): embedded, then bridged;
        - `audio_embeds` (B, D): bridged (supervised training on pre-extracted embeddings);
        - `text_embeds` (B, D): used as is, plus `noise_injection_std` noise in training (zero-shot training).

        `input_ids` / `attention_mask` / `labels` (B, L) are the tokens after the prefix (prompt + caption + EOS,
        right-padded); the prefix positions are prepended to `labels` as -100.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        tower_kwargs = _tower_kwargs(is_longer, feature_attention_mask)
        embeds = self._embeds(input_features, audio_embeds, text_embeds, tower_kwargs, strength, num_inference_steps, None)
        prefix = self.prefix_from_embeds(embeds)
        inputs_embeds, mask, labels = self._with_prefix(prefix, input_ids, attention_mask, labels)
        out = self.language_model(inputs_embeds=inputs_embeds, attention_mask=mask, labels=labels, return_dict=True)
        if not return_dict:
            return tuple(v for v in (out.loss, out.logits, prefix, embeds) if v is not None)
        return DiffusionLinkCaptionerOutput(loss=out.loss, logits=out.logits, prefix_embeds=prefix, embeds=embeds)

    @torch.no_grad()
    def generate(
        self,
        input_features: torch.Tensor | None = None,
        audio_embeds: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        input_ids: torch.LongTensor | None = None,
        is_longer: torch.Tensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        strength: float | None = None,
        num_inference_steps: int | None = None,
        generator: GeneratorArg = None,
        **generate_kwargs,
    ) -> torch.LongTensor:
        """Caption token ids (B, new tokens) from one embedding source (see `forward`).

        `input_ids` are the prompt tokens (the same for every row, so no padding is needed). `generate_kwargs` go to
        the LM's `generate` (`max_new_tokens`, `num_beams`, ...); greedy by default.
        """
        tower_kwargs = _tower_kwargs(is_longer, feature_attention_mask)
        embeds = self._embeds(input_features, audio_embeds, text_embeds, tower_kwargs, strength, num_inference_steps, generator)
        prefix = self.prefix_from_embeds(embeds)
        if input_ids is not None and input_ids.shape[0] == 1 and prefix.shape[0] > 1:
            input_ids = input_ids.expand(prefix.shape[0], -1)
        inputs_embeds, mask, _ = self._with_prefix(prefix, input_ids, None, None)
        generation_config = copy.deepcopy(generate_kwargs.pop("generation_config", None) or self.language_model.generation_config)
        generation_config.do_sample = False  # deterministic unless asked otherwise
        unused = generation_config.update(**generate_kwargs)
        return self.language_model.generate(
            inputs_embeds=inputs_embeds, attention_mask=mask, generation_config=generation_config, **unused
        )


def build_bridge(config: DiffusionLinkCaptionerConfig) -> nn.Module:
    if config.bridge_type == "diffusion_link":
        return DiffusionLinkBridge(config.bridge_config)
    if config.bridge_type == "mean_shift":
        return MeanShiftBridge(config.embedding_dim)
    return IdentityBridge()


def build_audio_tower(config: DiffusionLinkCaptionerConfig) -> nn.Module:
    """A randomly initialised tower of `config.audio_config`'s type, through `AutoModel` (towers of other packages,
    the starter encoder included, are registered with `AutoConfig` / `AutoModel` when their package is imported)."""
    return AutoModel.from_config(config.audio_config)


def load_audio_tower(reference: str) -> nn.Module:
    """Load an audio tower with `AutoModel` by Hub id, local folder or `package:` reference."""
    return AutoModel.from_pretrained(resolve_base_reference(reference))


def _tower_kwargs(is_longer, feature_attention_mask) -> dict:
    # CLAP's feature extractor gives `is_longer`; the starter's gives a frame mask, passed as `attention_mask`.
    kwargs = {}
    if is_longer is not None:
        kwargs["is_longer"] = is_longer
    if feature_attention_mask is not None:
        kwargs["attention_mask"] = feature_attention_mask
    return kwargs


def _require_peft(what: str) -> None:
    if not is_peft_available():
        raise ImportError(
            f"{what} needs peft (pip install peft). A checkpoint exported with `merge_and_unload()` loads without it."
        )
