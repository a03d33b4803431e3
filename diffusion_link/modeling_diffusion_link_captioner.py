"""The Diffusion-Link audio captioner: a frozen audio tower, the bridge, a soft-prefix projector and a causal LM with
LoRA, as one `PreTrainedModel`.

    audio --audio_tower--> (B, D) --bridge.link--> (B, D) --multi_modal_projector--> (B, P, H) prefix
    [BOS] [prefix] [prompt tokens] [caption tokens] [EOS] --language_model (+ LoRA)--> caption

Copied next to the weights by ``save_pretrained`` (custom code on the Hub). At import it needs only torch,
transformers, diffusers and flat sibling modules; peft is imported when a checkpoint has an unmerged LoRA adapter
(`merge_and_unload()` exports one that does not need it).
"""

from __future__ import annotations

import contextvars
import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, PreTrainedModel
from transformers.utils import ModelOutput, is_peft_available

from .peer_bridges import IdentityBridge, MeanShiftBridge
from .configuration_diffusion_link_captioner import DEFAULT_MAX_NEW_TOKENS, DiffusionLinkCaptionerConfig
from .embedding_extraction import audio_embeddings, embed_audio, embed_text
from .model_card_mixin import ModelCardMixin
from .modeling_diffusion_link import DiffusionLinkBridge, GeneratorArg
from .pretrained_loading import (
    ReferencedBasesMixin,
    check_pretrained_config,
    checked_from_pretrained,
    hub_kwargs,
    load_referenced_base,
    own_aligned_memory,
    resolve_base_reference,
)
from .reranking import beam_candidates, candidate_generate_kwargs, scored_candidates
from .validation import check_embeddings, check_positive_int


# The subfolder of a saved captioner that holds its audio tower's text tokenizer (see `audio_text_tokenizer`).
AUDIO_TEXT_TOKENIZER_FOLDER = "audio_text_tokenizer"
# True while transformers' `from_pretrained` builds an embedded captioner: it re-creates the parameters when it
# loads the weights, so dtype placement and freezing run once, after that, instead of in `__init__` too.
_LOADING_EMBEDDED = contextvars.ContextVar("loading_embedded_captioner", default=False)


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


class DiffusionLinkForAudioCaptioning(ReferencedBasesMixin, DiffusionLinkCaptionerPreTrainedModel):
    r"""
    Audio captioner of Diffusion-Link: `audio_tower` (frozen; `ClapModel` or any model with `get_audio_features` /
    `get_text_features`), `bridge` (frozen; [`DiffusionLinkBridge`] or a peer), `multi_modal_projector` (trained)
    and `language_model` (a causal LM, frozen, with trainable LoRA adapters from peft).

    Build one from pretrained parts with [`~DiffusionLinkForAudioCaptioning.from_pretrained_parts`]; load a saved one
    with `from_pretrained` (embedded or referenced bases, see `DiffusionLinkCaptionerConfig.base_weights`).
    """

    _base_prefixes = ("audio_tower.", "language_model.")
    _trained_in_bases = ("lora_",)

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
        generation_config = getattr(language_model, "generation_config", None)
        if generation_config is not None and generation_config.max_new_tokens is None:
            # The caption length's one home: `generate`, the pipeline and `caption_embeds` all read it from here.
            generation_config.max_new_tokens = DEFAULT_MAX_NEW_TOKENS
        self._audio_text_tokenizer = None
        # (folder, subfolder) of a loaded folder's `audio_text_tokenizer/`, set by `from_pretrained`.
        self._audio_text_tokenizer_folder: tuple[str, str] | None = None
        if config.lora_r:
            self._add_lora()
        self.post_init()
        if not _LOADING_EMBEDDED.get():
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

        Called once per model: by `__init__`, or by `from_pretrained` after transformers loaded the weights of an
        embedded checkpoint (which re-creates the parameters as trainable); and after `merge_and_unload`.
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
        bridge_type: str | None = None,
        base_weights: str = "referenced",
        dtype: torch.dtype | None = None,
        **config_kwargs,
    ) -> "DiffusionLinkForAudioCaptioning":
        """A new captioner from pretrained parts, e.g. `("laion/clap-htsat-unfused", "meta-llama/Llama-2-7b-hf",
        "path/to/bridge")`: ids/paths are loaded, modules are used as given. The projector and LoRA start fresh.

        `bridge`: a saved [`DiffusionLinkBridge`] (id or folder) or a bridge the config can record
        ([`DiffusionLinkBridge`], [`MeanShiftBridge`], [`IdentityBridge`]). Without one, `bridge_type` must say what
        to build: `"identity"` for no bridge, `"mean_shift"` or `"diffusion_link"` for an untrained one (nothing is
        guessed). `base_weights="referenced"` (the default) makes `save_pretrained` store only the trained parts and
        the two bases' names, so both bases must then be given by name; pass `base_weights="embedded"` for modules.

        Raises `ValueError` for a missing `bridge_type`, a `bridge_type` that contradicts `bridge`, or referenced
        bases given as modules, and `TypeError` for a bridge whose type the config cannot record (`LinearMapBridge`,
        `CaptionMemoryBridge`: use them through their own `link()`).
        """
        tower_ref = audio_tower if isinstance(audio_tower, str) else None
        lm_ref = language_model if isinstance(language_model, str) else None
        if base_weights == "referenced" and not (tower_ref and lm_ref):
            modules = [name for name, ref in (("audio_tower", tower_ref), ("language_model", lm_ref)) if not ref]
            raise ValueError(
                f"`base_weights='referenced'` saves the bases by name, but {modules} were given as modules: pass "
                "their Hub ids or folders, or `base_weights='embedded'`."
            )
        if bridge is None and bridge_type is None:
            raise ValueError(
                "No `bridge` given: pass a trained bridge, or `bridge_type='identity'` for none "
                "(`'diffusion_link'` / `'mean_shift'` build an untrained one)."
            )
        if isinstance(bridge, nn.Module):
            bridge_type = _checked_bridge_type(bridge, bridge_type)
        if isinstance(audio_tower, str):
            audio_tower = load_audio_tower(audio_tower)
        if isinstance(language_model, str):
            language_model = load_language_model(language_model, dtype=dtype)
        if isinstance(bridge, str):
            bridge = DiffusionLinkBridge.from_pretrained(bridge)
            bridge_type = _checked_bridge_type(bridge, bridge_type)
        fields = dict(
            audio_config=audio_tower.config,
            text_config=language_model.config,
            bridge_type=bridge_type,
            base_weights=base_weights,
            audio_tower_name_or_path=tower_ref,
            language_model_name_or_path=lm_ref,
        )
        if isinstance(bridge, DiffusionLinkBridge):
            fields["bridge_config"] = bridge.config
        fields.update(config_kwargs)
        config = DiffusionLinkCaptionerConfig(**fields)
        return cls(config, audio_tower=audio_tower, language_model=language_model, bridge=bridge)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' `from_pretrained`, for embedded and referenced bases alike. `merge_lora=True` returns the
        model as `merge_and_unload()` would (the LoRA adapters in the LM's weights, `lora_r` 0, the same captions,
        faster decoding; referenced bases then load without peft): for captioning, not for further training."""
        # Refuses a folder of another model type and weights that do not match the config, like the bridge does.
        check_pretrained_config(cls.config_class, pretrained_model_name_or_path, kwargs)
        config = kwargs.get("config")
        if config is None:
            config = DiffusionLinkCaptionerConfig.from_pretrained(
                pretrained_model_name_or_path, **hub_kwargs(kwargs)
            )
        merge_lora = kwargs.pop("merge_lora", False)
        if config.base_weights == "referenced":
            kwargs.pop("config", None)
            model = cls._from_referenced(pretrained_model_name_or_path, config, merge_lora=merge_lora, **kwargs)
        else:
            token = _LOADING_EMBEDDED.set(True)
            try:
                model = checked_from_pretrained(super().from_pretrained, pretrained_model_name_or_path, *args, **kwargs)
            finally:
                _LOADING_EMBEDDED.reset(token)
            if isinstance(model, tuple):
                model = model[0]
            model.trained_parts_to_float32()
            model.apply_freezing()
            if merge_lora and model.config.lora_r:
                model.merge_and_unload()
        model._audio_text_tokenizer_folder = _saved_tokenizer_folder(pretrained_model_name_or_path, kwargs)
        # Small trained parts get fresh (aligned) memory, so a loaded model reproduces the saved one bit for bit.
        own_aligned_memory((*model.bridge.parameters(), *model.bridge.buffers(), *model.multi_modal_projector.parameters()))
        return model

    @classmethod
    def _from_referenced(cls, path, config: DiffusionLinkCaptionerConfig, merge_lora: bool = False,
                         **kwargs) -> "DiffusionLinkForAudioCaptioning":
        """The bases from their references (safetensors only, strictly: `load_referenced_base`), then the trained
        parts from `path` (`ReferencedBasesMixin`). With `merge_lora`, the saved adapters go straight into the LM's
        weights, as `merge_and_unload` would put them, without building (or importing) peft's layers."""
        audio_tower = load_audio_tower(config.audio_tower_name_or_path)
        language_model = load_language_model(config.language_model_name_or_path, dtype=kwargs.get("dtype"))
        lora = None
        if merge_lora and config.lora_r:
            lora = (config.lora_r, config.lora_alpha, tuple(config.lora_target_modules))
        if lora:
            config = copy.deepcopy(config)
            config.lora_r = 0  # built without adapters; the saved ones are merged below
        model = cls(config, audio_tower=audio_tower, language_model=language_model)  # float32 parts, frozen bases
        weights, state = model.read_trained_parts(path, **kwargs)
        if lora:
            _merge_saved_lora(model.language_model, state, weights, *lora)
        model.load_trained_state(weights, state)
        return model.eval()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' `save_pretrained` (only the trained parts with referenced bases), plus the audio tower's text
        tokenizer in `audio_text_tokenizer/` when the model holds one (set, loaded, or in the folder it was loaded
        from), so the saved folder scores captions with exactly the tokenizer this model used. A tokenizer that would
        first have to be loaded from the tower's reference (a Hub id, perhaps unreachable offline) is not loaded for
        the save: the saved config keeps that reference, and the rule finds it again at use."""
        if self.config.base_weights == "referenced" and kwargs.get("state_dict") is None:
            kwargs["state_dict"] = self.trained_state_dict()
        out = super().save_pretrained(save_directory, *args, **kwargs)
        has_tokenizer = self._audio_text_tokenizer is not None or self._audio_text_tokenizer_folder is not None
        if kwargs.get("is_main_process", True) and has_tokenizer:
            self.audio_text_tokenizer.save_pretrained(os.path.join(save_directory, AUDIO_TEXT_TOKENIZER_FOLDER))
        return out

    # ------------------------------------------------------------------ the joint space's text side
    @property
    def audio_text_tokenizer(self):
        """The tokenizer of the audio tower's text side (CLAP's RoBERTa, the starter's MiniLM), which scores captions.

        Found by one rule and loaded once, on first use: the one set here (`model.audio_text_tokenizer = tok`, as the
        pipeline's `audio_text_tokenizer=` does), else the loaded folder's `audio_text_tokenizer/` subfolder, else
        `config.audio_text_tokenizer_name_or_path`, else `config.audio_tower_name_or_path` (a Hub id, a folder or a
        `package:` / `cache:` reference). `save_pretrained` writes it into `audio_text_tokenizer/`.
        Raises `ValueError` when none of these exists.
        """
        if self._audio_text_tokenizer is None:
            found = self._audio_text_tokenizer_source()
            if found is None:
                raise ValueError(
                    "Scoring captions needs the audio tower's text tokenizer, and this captioner records none: set "
                    "`model.audio_text_tokenizer` (the pipeline's `audio_text_tokenizer=`) or "
                    "`config.audio_text_tokenizer_name_or_path`."
                )
            from transformers import AutoTokenizer

            reference, subfolder = found
            self._audio_text_tokenizer = AutoTokenizer.from_pretrained(resolve_base_reference(reference),
                                                                       subfolder=subfolder)
        return self._audio_text_tokenizer

    @audio_text_tokenizer.setter
    def audio_text_tokenizer(self, tokenizer) -> None:
        self._audio_text_tokenizer = tokenizer

    def _audio_text_tokenizer_source(self) -> tuple[str, str] | None:
        """(reference, subfolder) the tokenizer loads from by the rule of `audio_text_tokenizer`, or None."""
        if self._audio_text_tokenizer_folder is not None:
            return self._audio_text_tokenizer_folder
        reference = self.config.audio_text_tokenizer_name_or_path or self.config.audio_tower_name_or_path
        return (reference, "") if reference else None

    def _text_max_length(self) -> int | None:
        # Captions are short, but a tokenizer may not know its text model's position limit (RoBERTa-style ids start
        # at 2, so CLAP's 514 positions hold 512 tokens).
        tower_config = getattr(self.audio_tower.config, "text_config", None)
        positions = getattr(tower_config, "max_position_embeddings", None)
        return min(self.audio_text_tokenizer.model_max_length, positions - 2) if positions else None

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """(N,) captions -> (N, D) L2-normalised float32 text embeddings of the audio tower's joint space, on the
        CPU (`audio_text_tokenizer`, then the tower's `get_text_features`). Empty captions raise `ValueError`."""
        check_positive_int("batch_size", batch_size)
        return embed_text(self.audio_tower, self.audio_text_tokenizer, list(texts), batch_size=batch_size,
                          max_length=self._text_max_length())

    @torch.no_grad()
    def score_captions(self, audio_embeds: torch.Tensor, texts: Sequence[Sequence[str]]) -> list[list[float]]:
        """The cosine of each clip's (B, D) audio embedding with the joint-space embedding of each of its captions:
        `texts[b]` are clip b's captions; an empty caption scores 0.0. All captions are embedded in one batch."""
        audio_embeds = check_embeddings("audio_embeds", audio_embeds, self.config.embedding_dim, allow_vector=True)
        if len(texts) != len(audio_embeds):
            raise ValueError(f"`texts` has captions of {len(texts)} clips for {len(audio_embeds)} audio embeddings.")
        flat = [t for clip in texts for t in clip]
        if not flat:
            return [[] for _ in texts]
        # A blank caption is embedded as "." (so the batch keeps its shape) and scored 0.0.
        text = embed_text(self.audio_tower, self.audio_text_tokenizer, [t if t.strip() else "." for t in flat],
                          batch_size=len(flat), max_length=self._text_max_length())  # (sum_b k_b, D)
        audio = F.normalize(audio_embeds.float().cpu(), dim=-1)  # (B, D)
        out, row = [], 0
        for b, clip in enumerate(texts):
            out.append([0.0 if not t.strip() else float(audio[b] @ text[row + k]) for k, t in enumerate(clip)])
            row += len(clip)
        return out

    # ------------------------------------------------------------------ captioning embeddings
    def prompt_input_ids(self, tokenizer) -> torch.LongTensor | None:
        """(1, L) token ids of `config.prompt` (placed after the soft prefix), or None for an empty prompt."""
        ids = tokenizer(self.config.prompt, add_special_tokens=False).input_ids if self.config.prompt else []
        return torch.tensor([ids], dtype=torch.long) if ids else None

    @torch.no_grad()
    def caption_embeds(
        self,
        embeds: torch.Tensor,
        tokenizer,
        *,
        num_candidates: int = 1,
        audio_embeds: torch.Tensor | None = None,
        max_new_tokens: int | None = None,
        batch_size: int = 8,
        **generate_kwargs,
    ) -> list[str] | list[list[dict]]:
        """Caption (N, D) decoder-input embeddings (bridged audio, or text) after the config's prompt.

        - `num_candidates == 1`: greedy captions, a list of N strings;
        - `num_candidates = k > 1`: per row the k beam-search candidates in beam order, each `{text, lm_logprob,
          audio_text_similarity}` (`reranking.scored_candidates`; rank them with `reranking.rank_candidates`). The
          similarity is taken against `audio_embeds`, the rows' raw (N, D) audio embeddings (before the bridge),
          which are then required.

        The rows go to the LM as they are (no bridge, no noise), `batch_size` per `generate` call; `max_new_tokens`
        defaults to the LM's `generation_config.max_new_tokens` (`DEFAULT_MAX_NEW_TOKENS` unless changed), and
        `generate_kwargs` go to `generate`. The build, the experiment and the benchmarks caption embeddings with this.
        """
        embeds = check_embeddings("embeds", embeds, self.config.embedding_dim)
        check_positive_int("num_candidates", num_candidates)
        check_positive_int("batch_size", batch_size)
        if num_candidates > 1:
            if audio_embeds is None:
                raise ValueError("`caption_embeds(num_candidates > 1)` needs the rows' raw `audio_embeds` to score "
                                 "the candidates against.")
            audio_embeds = check_embeddings("audio_embeds", audio_embeds, self.config.embedding_dim,
                                            num_rows=len(embeds))
        if max_new_tokens is not None:
            generate_kwargs["max_new_tokens"] = check_positive_int("max_new_tokens", max_new_tokens)
        prompt = self.prompt_input_ids(tokenizer)
        found = []
        for start in range(0, len(embeds), batch_size):
            rows = slice(start, start + batch_size)
            if num_candidates == 1:
                ids = self.generate(text_embeds=embeds[rows], input_ids=prompt, **generate_kwargs)
                found += [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
                continue
            generated = self.generate(text_embeds=embeds[rows], input_ids=prompt,
                                      **candidate_generate_kwargs(num_candidates, generate_kwargs))
            texts, lm_logprobs = beam_candidates(generated, tokenizer, num_candidates)
            found += scored_candidates(texts, lm_logprobs, self.score_captions(audio_embeds[rows], texts))
        return found

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


@torch.no_grad()
def _merge_saved_lora(language_model: nn.Module, state: dict[str, torch.Tensor], weights: str, r: int, alpha: float,
                      targets: tuple[str, ...]) -> None:
    """Pop the LoRA adapters from a captioner's saved `state` and add them into `language_model`'s (adapter-free)
    weights, W += (B @ A) * alpha / r: peft's `merge()` of the same tensors, to the bit. Strict like the rest of the
    file: every targeted linear layer needs its A and B, of its shapes; anything else raises `ValueError` naming
    `weights` and the keys."""
    found = {k: state.pop(k) for k in [k for k in state if ".lora_A." in k or ".lora_B." in k]}
    layers = {name: module for name, module in language_model.named_modules()
              if isinstance(module, nn.Linear) and name.rpartition(".")[2] in targets}
    keys = {name: tuple(f"language_model.{name}.lora_{ab}.default.weight" for ab in "AB") for name in layers}
    expected = {k for pair in keys.values() for k in pair}
    missing, unexpected = sorted(expected - set(found)), sorted(set(found) - expected)
    if missing or unexpected:
        raise ValueError(f"{weights}: its LoRA adapters do not match the LM's {list(targets)} layers: missing "
                         f"({len(missing)}) {missing[:5]}, unexpected ({len(unexpected)}) {unexpected[:5]}.")
    for name, layer in layers.items():
        a, b = (found[k] for k in keys[name])
        if a.shape != (r, layer.in_features) or b.shape != (layer.out_features, r):
            raise ValueError(f"{weights}: the LoRA adapters of {name} are {tuple(a.shape)} and {tuple(b.shape)}; "
                             f"rank {r} on a {layer.in_features}->{layer.out_features} layer needs "
                             f"({r}, {layer.in_features}) and ({layer.out_features}, {r}).")
        layer.weight.data += (b.float() @ a.float()) * (alpha / r)


def _checked_bridge_type(bridge: nn.Module, bridge_type: str | None) -> str:
    """The config's `bridge_type` of a bridge module: `TypeError` for one the config cannot rebuild on load,
    `ValueError` when it contradicts a `bridge_type` given."""
    for cls, name in ((DiffusionLinkBridge, "diffusion_link"), (MeanShiftBridge, "mean_shift"),
                      (IdentityBridge, "identity")):
        if type(bridge) is cls:
            if bridge_type is not None and bridge_type != name:
                raise ValueError(f"`bridge_type={bridge_type!r}` contradicts the {cls.__name__} given.")
            return name
    raise TypeError(
        f"A captioner's config can record a DiffusionLinkBridge, MeanShiftBridge or IdentityBridge, not a "
        f"{type(bridge).__name__}: a saved captioner would reload with another bridge."
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
    """Load an audio tower with `AutoModel` by Hub id, local folder or `package:` / `cache:` reference, from
    safetensors only and strictly (`load_referenced_base`)."""
    return load_referenced_base(AutoModel, reference)


def load_language_model(reference: str, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """Load a causal language model with `AutoModelForCausalLM` by Hub id, local folder or `package:` / `cache:`
    reference, from safetensors only and strictly (`load_referenced_base`)."""
    return load_referenced_base(AutoModelForCausalLM, reference, dtype=dtype)


# A saved tokenizer holds one of these (a fast tokenizer may be saved as `tokenizer.json` alone).
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")


def _saved_tokenizer_folder(path, kwargs: dict) -> tuple[str, str] | None:
    """(path, subfolder) of the `audio_text_tokenizer/` saved with the captioner at `path` (a folder or Hub repo),
    or None when it has none: checked by file (`TOKENIZER_FILES`), so no tokenizer load is attempted that would
    fail."""
    path = os.fspath(path)
    subfolder = "/".join(p for p in (kwargs.get("subfolder"), AUDIO_TEXT_TOKENIZER_FOLDER) if p)
    if os.path.isdir(path):
        found = any(os.path.isfile(os.path.join(path, subfolder, name)) for name in TOKENIZER_FILES)
    else:
        from transformers.utils import cached_file

        fetch = {k: v for k, v in hub_kwargs(kwargs).items() if k != "subfolder"}
        found = any(cached_file(path, name, subfolder=subfolder, _raise_exceptions_for_missing_entries=False,
                                _raise_exceptions_for_connection_errors=False, **fetch) is not None
                    for name in TOKENIZER_FILES)
    return (path, subfolder) if found else None


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
