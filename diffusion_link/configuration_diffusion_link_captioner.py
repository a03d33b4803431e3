"""Configuration of the Diffusion-Link audio captioner: audio tower -> bridge -> projector -> causal LM (+ LoRA).

Copied next to the weights by ``save_pretrained`` (custom code on the Hub): imports only transformers and flat
sibling modules.
"""

from __future__ import annotations

import os

from transformers import PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.utils import logging

from .configuration_diffusion_link import DiffusionLinkConfig, SavedConfigMixin
from .validation import check_choice, check_finite_float, check_positive_int


logger = logging.get_logger(__name__)


BRIDGE_TYPES = ("diffusion_link", "identity", "mean_shift")
BASE_WEIGHTS = ("embedded", "referenced")
RERANK_MODES = ("lm", "similarity", "combined")  # diffusion_link.reranking
PIPELINE_TASK = "audio-captioning"
# The caption length every entry point uses unless told otherwise: ESC-50 / AudioCaps captions are 5-20 words. The
# captioner puts it into its language model's `generation_config.max_new_tokens` when that has none (see
# `DiffusionLinkForAudioCaptioning.__init__`), so `model.generate`, the pipeline and `caption_embeds` all default to
# it, and `generation_config.max_new_tokens` is the one knob to change it for a loaded model.
DEFAULT_MAX_NEW_TOKENS = 30
# The sub-configs a saved captioner's config.json holds (`bridge_config` when `bridge_type="diffusion_link"`).
SUB_CONFIGS = ("audio_config", "text_config", "bridge_config")
# The fields that set a sub-model's size. A saved sub-config without one would be built at its class's default
# (LLaMA's: 4096 wide, 32 layers, 7B parameters) and allocated in full before a single weight is compared.
SIZE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
# The fields that hold a base model's reference: kept as given in a saved config (they are how it loads), but a
# local path there loads only on the machine that saved it (`save_pretrained` warns).
REFERENCE_FIELDS = ("audio_tower_name_or_path", "language_model_name_or_path", "audio_text_tokenizer_name_or_path")


def check_rerank(rerank: str) -> str:
    """Return `rerank`, or raise `ValueError` unless it is one of `RERANK_MODES` (the config, the pipeline and
    `reranking.rank_candidates` check it; the CLI's `choices` are `RERANK_MODES`)."""
    return check_choice("rerank", rerank, RERANK_MODES)


class DiffusionLinkCaptionerConfig(SavedConfigMixin, PretrainedConfig):
    r"""
    Configuration of a [`DiffusionLinkForAudioCaptioning`].

    Args:
        audio_config (`dict` or `PretrainedConfig`, *optional*):
            Config of the audio tower, any model with `get_audio_features` / `get_text_features` (a `ClapConfig` by
            default, as laion/clap-htsat-unfused).
        text_config (`dict` or `PretrainedConfig`, *optional*):
            Config of the causal language model (a `LlamaConfig` by default), resolved through `CONFIG_MAPPING`.
        bridge_type (`str`, *optional*, defaults to `"diffusion_link"`):
            `"diffusion_link"` (a [`DiffusionLinkBridge`] built from `bridge_config`), `"identity"` (no bridge) or
            `"mean_shift"`.
        bridge_config (`dict` or [`DiffusionLinkConfig`], *optional*):
            Config of the bridge when `bridge_type="diffusion_link"`; its `embedding_dim` must equal the audio
            tower's projection size.
        embedding_dim (`int`, *optional*):
            Size D of the joint audio-text embedding. Defaults to the audio config's `projection_dim`.
        prefix_length (`int`, *optional*, defaults to 4):
            Number of soft-prefix tokens the projector makes from one embedding.
        projector_hidden_size (`int`, *optional*):
            Hidden width of the two-layer projector MLP (D -> hidden -> tanh -> prefix_length x LM width). Defaults
            to 3 * D.
        prompt (`str`, *optional*, defaults to `"Describe the audio you hear."`):
            Instruction text placed after the prefix (DRCap's prompt); `""` for none.
        lora_r (`int`, *optional*, defaults to 8):
            LoRA rank of the language model (peft); 0 trains no LoRA (the LM stays frozen).
        lora_alpha (`int`, *optional*, defaults to 32):
            LoRA scaling numerator.
        lora_dropout (`float`, *optional*, defaults to 0.05):
            Dropout on the LoRA branch.
        lora_target_modules (`list[str]`, *optional*, defaults to `["q_proj", "v_proj"]`):
            Module names of the LM that get LoRA adapters.
        noise_injection_std (`float`, *optional*, defaults to 0.0):
            Std of the Gaussian noise added to text embeddings in zero-shot training (CapDec uses about
            sqrt(0.016) = 0.126 on unit embeddings); 0 disables it. Never applied to audio or at inference.
        base_weights (`str`, *optional*, defaults to `"embedded"`):
            `"embedded"` saves every weight; `"referenced"` saves only the trained parts (bridge, projector, LoRA)
            and reloads the frozen audio tower and LM from `audio_tower_name_or_path` / `language_model_name_or_path`
            (a Hub id, a local folder, or `package:<name>/<path>` for weights shipped inside an installed package).
        audio_tower_name_or_path (`str`, *optional*):
            Where the frozen audio tower is loaded from in `"referenced"` mode.
        language_model_name_or_path (`str`, *optional*):
            Where the frozen language model is loaded from in `"referenced"` mode.
        audio_text_tokenizer_name_or_path (`str`, *optional*):
            The tokenizer of the audio tower's text side (CLAP's RoBERTa, the starter's MiniLM), which scores
            captions (`DiffusionLinkForAudioCaptioning.score_captions`). Defaults to `audio_tower_name_or_path`; a
            saved captioner's own `audio_text_tokenizer/` subfolder comes first (see the model's
            `audio_text_tokenizer`).
        num_candidates (`int`, *optional*, defaults to 1):
            Candidate captions per clip the pipeline decodes by beam search by default; 1 is greedy decoding.
        rerank (`str`, *optional*, defaults to `"combined"`):
            How the pipeline picks among candidates: `"lm"`, `"similarity"` or `"combined"` (see `reranking`).
        rerank_weight (`float`, *optional*, defaults to 1.0):
            Weight of the audio-text similarity in the `"combined"` score (`lm_logprob + weight * similarity`).
        confidence_calibration (`dict`, *optional*):
            The logistic model of a caption's confidence (`metrics.calibration.fit_confidence_calibration`); without
            it results carry no `confidence`.
    """

    model_type = "diffusion_link_captioner"

    def __init__(
        self,
        audio_config: dict | PretrainedConfig | None = None,
        text_config: dict | PretrainedConfig | None = None,
        bridge_type: str = "diffusion_link",
        bridge_config: dict | DiffusionLinkConfig | None = None,
        embedding_dim: int | None = None,
        prefix_length: int = 4,
        projector_hidden_size: int | None = None,
        prompt: str = "Describe the audio you hear.",
        lora_r: int = 8,
        lora_alpha: int = 32,
        lora_dropout: float = 0.05,
        lora_target_modules: list[str] | tuple[str, ...] = ("q_proj", "v_proj"),
        noise_injection_std: float = 0.0,
        base_weights: str = "embedded",
        audio_tower_name_or_path: str | None = None,
        language_model_name_or_path: str | None = None,
        audio_text_tokenizer_name_or_path: str | None = None,
        num_candidates: int = 1,
        rerank: str = "combined",
        rerank_weight: float = 1.0,
        confidence_calibration: dict | None = None,
        **kwargs,
    ):
        self.audio_config = _resolve_sub_config("audio_config", audio_config, default_model_type="clap")
        self.text_config = _resolve_sub_config("text_config", text_config, default_model_type="llama")
        if embedding_dim is None:
            embedding_dim = getattr(self.audio_config, "projection_dim", None)
        check_positive_int("embedding_dim", embedding_dim)
        check_choice("bridge_type", bridge_type, BRIDGE_TYPES)
        if bridge_config is None:
            bridge_config = DiffusionLinkConfig(embedding_dim=embedding_dim, hidden_size=2 * embedding_dim)
        elif isinstance(bridge_config, dict):
            bridge_config = DiffusionLinkConfig(**{k: v for k, v in bridge_config.items() if k != "model_type"})
        elif getattr(bridge_config, "model_type", None) != DiffusionLinkConfig.model_type:
            raise TypeError(f"`bridge_config` must be a dict or a DiffusionLinkConfig, got {type(bridge_config).__name__}.")
        if bridge_config.embedding_dim != embedding_dim:
            raise ValueError(
                f"`bridge_config.embedding_dim` ({bridge_config.embedding_dim}) must equal the audio tower's embedding "
                f"size ({embedding_dim})."
            )
        check_positive_int("prefix_length", prefix_length)
        if projector_hidden_size is None:
            projector_hidden_size = 3 * embedding_dim
        check_positive_int("projector_hidden_size", projector_hidden_size)
        if not isinstance(prompt, str):
            raise TypeError(f"`prompt` must be a string (\"\" for none), got {type(prompt).__name__}.")
        if isinstance(lora_r, bool) or not isinstance(lora_r, int) or lora_r < 0:
            raise ValueError(f"`lora_r` must be an int >= 0, got {lora_r!r}.")
        for name, value in (("lora_alpha", lora_alpha), ("lora_dropout", lora_dropout),
                            ("noise_injection_std", noise_injection_std)):
            check_finite_float(name, value)  # a string here would fail the range checks below with a bare TypeError
        if lora_r and lora_alpha <= 0:
            raise ValueError(f"`lora_alpha` must be > 0, got {lora_alpha}.")
        if not 0.0 <= lora_dropout < 1.0:
            raise ValueError(f"`lora_dropout` must lie in [0, 1), got {lora_dropout}.")
        if isinstance(lora_target_modules, str) or not all(isinstance(m, str) for m in lora_target_modules):
            raise TypeError(f"`lora_target_modules` must be a list of module names, got {lora_target_modules!r}.")
        lora_target_modules = list(lora_target_modules)
        if lora_r and not lora_target_modules:
            raise ValueError("`lora_target_modules` must name at least one module when `lora_r` > 0.")
        if noise_injection_std < 0:
            raise ValueError(f"`noise_injection_std` must be >= 0, got {noise_injection_std}.")
        check_choice("base_weights", base_weights, BASE_WEIGHTS)
        if base_weights == "referenced" and not (audio_tower_name_or_path and language_model_name_or_path):
            raise ValueError(
                "`base_weights='referenced'` needs `audio_tower_name_or_path` and `language_model_name_or_path`."
            )

        check_positive_int("num_candidates", num_candidates)
        check_rerank(rerank)
        if not isinstance(rerank_weight, (int, float)) or isinstance(rerank_weight, bool) or rerank_weight < 0:
            raise ValueError(f"`rerank_weight` must be a number >= 0, got {rerank_weight!r}.")
        if confidence_calibration is not None and not (isinstance(confidence_calibration, dict) and {
                "features", "coef", "intercept", "mean", "scale"} <= set(confidence_calibration)):
            raise ValueError("`confidence_calibration` must be the dict of metrics.calibration."
                             f"fit_confidence_calibration, got {_described(confidence_calibration)}.")
        self.audio_text_tokenizer_name_or_path = audio_text_tokenizer_name_or_path
        self.num_candidates = num_candidates
        self.rerank = rerank
        self.rerank_weight = float(rerank_weight)
        self.confidence_calibration = confidence_calibration
        self.bridge_type = bridge_type
        self.bridge_config = bridge_config
        self.embedding_dim = embedding_dim
        self.prefix_length = prefix_length
        self.projector_hidden_size = projector_hidden_size
        self.prompt = prompt
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.lora_target_modules = lora_target_modules
        self.noise_injection_std = noise_injection_std
        self.base_weights = base_weights
        self.audio_tower_name_or_path = audio_tower_name_or_path
        self.language_model_name_or_path = language_model_name_or_path
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)

    # `pipeline()` prefers a folder's own pipeline code (`custom_pipelines`, which needs trust_remote_code=True) over
    # the task registry. When this package is imported it registers "audio-captioning" itself, so the folder's copy
    # is not needed and a plain `pipeline("audio-captioning", model=folder)` works.
    @property
    def custom_pipelines(self) -> dict:
        stored = self.__dict__.get("_custom_pipelines", {})
        from transformers.pipelines import PIPELINE_REGISTRY

        registered = PIPELINE_REGISTRY.supported_tasks.get(PIPELINE_TASK)
        if registered is not None and registered["impl"].__name__ == "AudioCaptionPipeline":
            return {}
        return stored

    @custom_pipelines.setter
    def custom_pipelines(self, value: dict) -> None:
        # `Pipeline.save_pretrained` stores the task's registration, whose `default` model is this package's own:
        # the starter's folder on the saving machine, which `push_to_hub` would publish and nothing reads (a
        # folder's pipeline runs with the folder as its model). It is not kept.
        if not isinstance(value, dict) or not all(isinstance(info, dict) for info in value.values()):
            raise TypeError(f"`custom_pipelines` must map task names to dicts, got {value!r}.")
        self.__dict__["_custom_pipelines"] = {
            task: {key: v for key, v in info.items() if key != "default"} for task, info in value.items()
        }

    def to_dict(self) -> dict:
        output = super().to_dict()
        stored = output.pop("_custom_pipelines", None)
        if stored:
            output["custom_pipelines"] = stored
        for name in SUB_CONFIGS:
            # Where this machine loaded a part from (`/root/.cache/...`, `/tmp/...`): not the part's config, and a
            # local path that `push_to_hub` would publish. The references that load the bases are their own fields.
            if isinstance(output.get(name), dict):
                output[name].pop("_name_or_path", None)
        return output

    def save_pretrained(self, save_directory, *args, **kwargs):
        for name in REFERENCE_FIELDS:
            reference = getattr(self, name)
            if isinstance(reference, str) and os.path.exists(reference):
                logger.warning(
                    f"`{name}` is the local path {reference!r}: the saved config loads only where that path exists "
                    "(and `push_to_hub` would publish it). Refer to a Hub id or a `package:` / `cache:` reference "
                    "for a folder that loads anywhere."
                )
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def check_saved_dict(cls, config_dict: dict) -> None:
        """A saved captioner's config must hold its sub-configs whole: `__init__` builds a missing `text_config` as
        a default `LlamaConfig` (a 7B model, allocated before any weight is read) and a missing `audio_config` as
        a default `ClapConfig`, which is right for a config made in code and never for a saved one. Each present
        sub-config must be a JSON object naming its `model_type`, with every size field (`SIZE_FIELDS`) its class
        has, recursively through the sub-configs its class declares (CLAP's text and audio configs)."""
        required = ["audio_config", "text_config"]
        if config_dict.get("bridge_type", "diffusion_link") == "diffusion_link":
            required.append("bridge_config")
        for name in SUB_CONFIGS:
            value = config_dict.get(name)
            if value is None and name in required:
                raise ValueError(
                    f"`{name}` is missing: a saved {cls.model_type} config holds each of its sub-configs whole, and "
                    "without it the part would be built at its class's defaults."
                )
            if value is not None and not isinstance(value, PretrainedConfig):
                default_type = DiffusionLinkConfig.model_type if name == "bridge_config" else None
                _check_saved_sub_config(name, value, _sub_config_class(name, value, default_type))

    def get_text_config(self, *args, **kwargs):
        # Generation utilities ask the composite config for the decoder's config.
        return self.text_config


def _described(value) -> str:
    return f"keys {sorted(value)}" if isinstance(value, dict) else repr(value)


def _sub_config_class(name: str, value, expected_type: str | None) -> type:
    """The config class a saved sub-config names by its `model_type` (`expected_type` when only one is right)."""
    if not isinstance(value, dict):
        raise TypeError(f"`{name}` must be a JSON object (a sub-config), got {_described(value)}.")
    model_type = value.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ValueError(f"`{name}` has no `model_type`: a saved sub-config names the model it configures.")
    if expected_type is not None:
        if model_type != expected_type:
            raise ValueError(f"`{name}` has model_type {model_type!r}; expected {expected_type!r}.")
        return DiffusionLinkConfig
    return _config_class(name, model_type)


def _check_saved_sub_config(name: str, value: dict, config_class: type) -> None:
    """Raise `ValueError` when `value` lacks a size field of `config_class` or a sub-config it declares, and
    `TypeError` when a declared sub-config is not a JSON object. Fields a class keeps under another name
    (GPT-2's `n_embd` for `hidden_size`) are looked up by that name."""
    fields = getattr(config_class, "__dataclass_fields__", {})
    attribute_map = getattr(config_class, "attribute_map", {})
    missing = [field for field in SIZE_FIELDS if attribute_map.get(field, field) in fields
               and field not in value and attribute_map.get(field, field) not in value]
    if missing:
        raise ValueError(
            f"`{name}` lacks {missing}: a saved sub-config holds the sizes of its model, which would otherwise be "
            f"built at the {config_class.__name__} defaults."
        )
    for key, sub_class in (getattr(config_class, "sub_configs", None) or {}).items():
        if key not in value:
            raise ValueError(f"`{name}.{key}` is missing: a saved {config_class.__name__} holds its sub-configs.")
        if isinstance(value[key], dict):
            _check_saved_sub_config(f"{name}.{key}", value[key], sub_class)
        elif value[key] is not None:
            raise TypeError(f"`{name}.{key}` must be a JSON object (a sub-config), got {_described(value[key])}.")


def _config_class(name: str, model_type: str) -> type:
    if model_type not in CONFIG_MAPPING:
        _register_package_towers()
    if model_type not in CONFIG_MAPPING:
        raise ValueError(
            f"`{name}` has an unknown model_type {model_type!r}: import the package that registers it with "
            "`AutoConfig.register` first."
        )
    return CONFIG_MAPPING[model_type]


def _resolve_sub_config(name: str, value, default_model_type: str) -> PretrainedConfig:
    if isinstance(value, PretrainedConfig):
        return value
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise TypeError(f"`{name}` must be a dict or a PretrainedConfig, got {type(value).__name__}.")
    value = dict(value)
    model_type = value.pop("model_type", default_model_type)
    return _config_class(name, model_type)(**value)


def _register_package_towers() -> None:
    """Import diffusion_link, if installed, so that its own towers (the starter encoder) are registered with
    `AutoConfig` / `AutoModel`. Their code is not copied next to saved captioners: a captioner whose tower is the
    starter needs the package anyway (the starter's frozen bases are files of installed packages)."""
    try:
        import diffusion_link  # noqa: F401
    except ImportError:
        pass
