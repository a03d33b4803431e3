"""Configuration of the Diffusion-Link bridge (arXiv 2510.11330).

This file is copied next to the weights by ``save_pretrained`` (custom code on the Hub), so it imports only
``transformers``.
"""

from __future__ import annotations

import os

from transformers import PretrainedConfig

from .validation import check_finite_float, check_positive_int, check_strength  # noqa: F401 (check_strength: re-exported)


_NORMALIZATIONS = ("l2", "none")
_STD_MODES = ("per_dim", "scalar")
_LINK_STARTS = ("noised", "inserted")
_AUDIO_ADAPTERS = ("none", "linear")


class SavedConfigMixin:
    """Errors of a config read from a file name the file.

    Every saved config is built by `from_dict`: `from_pretrained`, `AutoConfig.from_pretrained` and `pipeline()`
    all go through it. Here it first runs `check_saved_dict` (what a saved config must hold that `__init__` would
    otherwise fill with defaults, such as a whole sub-config), then `__init__`'s own checks; a `ValueError` or
    `TypeError` of either is raised again with the config file in front, so a bad field in a downloaded folder is
    named with the file it is in. A config built in code (`DiffusionLinkConfig()`, as transformers itself does to
    diff against the defaults) keeps its defaults.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        # `AutoConfig.from_pretrained` passes `name_or_path` on to `from_dict`; so does this.
        kwargs.setdefault("name_or_path", os.fspath(pretrained_model_name_or_path))
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        source = saved_config_file(kwargs.get("name_or_path"))
        try:
            if not isinstance(config_dict, dict):
                raise TypeError(f"expected a JSON object, got a JSON {type(config_dict).__name__}.")
            cls.check_saved_dict(config_dict)
            return super().from_dict(config_dict, **kwargs)
        except (TypeError, ValueError) as err:
            raise (TypeError if isinstance(err, TypeError) else ValueError)(f"{source}: {err}") from err

    @classmethod
    def check_saved_dict(cls, config_dict: dict) -> None:
        """Raise `ValueError` / `TypeError` when a saved config's dict lacks what `__init__` would default."""


def saved_config_file(name_or_path) -> str:
    """The config file of `name_or_path` (a folder, a Hub id or a .json file), for error messages."""
    if not name_or_path:
        return "the config"
    name = os.fspath(name_or_path)
    return name if name.endswith(".json") else os.path.join(name, "config.json")


class DiffusionLinkConfig(SavedConfigMixin, PretrainedConfig):
    r"""
    Configuration of a [`DiffusionLinkBridge`]: a residual MLP denoiser over one embedding vector, trained with the
    diffusers `DDPMScheduler` and sampled with deterministic DDIM updates on the same noise schedule.

    Args:
        embedding_dim (`int`, *optional*, defaults to 512):
            Size D of the embeddings the bridge moves (512 for CLAP).
        hidden_size (`int`, *optional*, defaults to 1024):
            Width of the residual MLP (the paper uses about 2D).
        num_blocks (`int`, *optional*, defaults to 3):
            Number of residual blocks.
        timestep_embedding_dim (`int`, *optional*, defaults to 128):
            Size of the sinusoidal timestep embedding, before its MLP.
        dropout (`float`, *optional*, defaults to 0.0):
            Dropout inside the residual blocks during training.
        num_train_timesteps (`int`, *optional*, defaults to 1000):
            T, the number of diffusion steps of the training schedule.
        beta_schedule (`str`, *optional*, defaults to `"linear"`):
            Beta schedule passed to the diffusers schedulers (`"linear"`, `"scaled_linear"`, `"squaredcos_cap_v2"`).
        beta_start (`float`, *optional*, defaults to 1e-4):
            First beta of the schedule.
        beta_end (`float`, *optional*, defaults to 0.02):
            Last beta of the schedule.
        max_train_timestep (`int`, *optional*):
            Training timesteps are drawn uniformly from `[0, max_train_timestep)`. Defaults to `num_train_timesteps`
            (the whole schedule). The paper does not state its range; a shallow range spends capacity where
            `link()` starts.
        x0_parameterization (`str`, *optional*, defaults to `"direct"`):
            How the network's output becomes the x0 prediction: `"direct"` (the output is x0) or `"skip"`
            (x0 = sqrt(a_t) x_t + sqrt(1 - a_t) F(x_t, t), a skip connection scaled by the noise level, so fine
            detail at small t needs no learning). Both predict the clean embedding, as the paper does.
        strength (`float`, *optional*, defaults to 0.1):
            Default inference depth: `link()` forward-noises audio to s* = `strength` * T (0.1 -> 100 of 1000),
            then denoises. Same meaning as `strength` in diffusers' img2img pipelines. Must lie in (0, 1].
        num_inference_steps (`int`, *optional*, defaults to 5):
            Default number of DDIM steps from s* back to x0.
        topology_loss_weight (`float`, *optional*, defaults to 1.0):
            lambda in `loss = diffusion_loss + lambda * topology_loss`.
        ema_decay (`float`, *optional*, defaults to 0.995):
            Decay of the exponential moving average of the denoiser weights, updated after each optimiser step.
        inference_weights (`str`, *optional*, defaults to `"ema"`):
            Which denoiser `link()` uses: `"ema"` (the paper) or `"raw"` (the trained weights).
        input_normalization (`str`, *optional*, defaults to `"l2"`):
            `"l2"`: inputs are L2-normalised before standardisation and outputs are L2-normalised again (CLAP
            embeddings are unit vectors). `"none"`: the embeddings are used as given.
        standardization (`str`, *optional*, defaults to `"scalar"`):
            How `fit_normalization` computes the standard deviation of the text embeddings: `"scalar"` (one for all
            coordinates) or `"per_dim"` (one per coordinate, as unCLIP's `clip_std`). The mean and std live in the
            buffers `embed_mean` and `embed_std`, saved with the weights. `"per_dim"` blows up any coordinate in which
            the texts barely vary but the audio does (all-MiniLM-L6-v2 has one with std 6e-8): measured on the
            starter's space, it collapsed a trained bridge's out-of-fold class accuracy from 0.53 to 0.07.
        link_start (`str`, *optional*, defaults to `"noised"`):
            How `link()` builds the state at s*: `"noised"` forward-noises the audio embedding with q(a, s*)
            (Diffusion-Link); `"inserted"` takes the audio embedding itself as the state at s*, without noise (the
            text-only "Diffusion Bridge" peer, CVPR 2025).
        audio_adapter (`str`, *optional*, defaults to `"none"`):
            `"none"` (the paper): the diffusion starts from the audio embedding itself. `"linear"`: from an affine map
            of it, `normalize(a W + b)`, a ridge least-squares fit from audio to paired text embeddings made in closed
            form before training (`fit_audio_adapter`, its penalty picked by leave-one-out on the training pairs)
            and stored in the buffers `adapter_weight` (D, D) and `adapter_bias` (D). The diffusion then only has to
            finish the move. Measured: on held-out pairs of linear synthetic worlds it matches the linear map and
            closes the centroid distance further, but on the starter's real pairs it loses badly (README, "Bridge
            recipes"), so it is off by default.
        depth_selection (`dict`, *optional*):
            How `strength` was picked, when it was picked on held-out pairs (`diffusion_link.experiments.depth_selection`: the
            rule, whether a depth qualified, the held-out R@1 and paired cosine at the pick and of the raw audio).
            Written by `training/train_bridge.py`; shown in the model card.
        noise_seed (`int`, *optional*, defaults to 0):
            Key of the forward noise when `link()` is called without a generator: the noise of each row is seeded
            from the row's own values and this key, so the output of a row depends only on that row (batch-invariant
            and deterministic), while different rows get independent noise.
    """

    model_type = "diffusion_link"

    def __init__(
        self,
        embedding_dim: int = 512,
        hidden_size: int = 1024,
        num_blocks: int = 3,
        timestep_embedding_dim: int = 128,
        dropout: float = 0.0,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        max_train_timestep: int | None = None,
        x0_parameterization: str = "direct",
        strength: float = 0.1,
        num_inference_steps: int = 5,
        topology_loss_weight: float = 1.0,
        ema_decay: float = 0.995,
        inference_weights: str = "ema",
        input_normalization: str = "l2",
        standardization: str = "scalar",
        link_start: str = "noised",
        noise_seed: int = 0,
        audio_adapter: str = "none",
        depth_selection: dict | None = None,
        **kwargs,
    ):
        check_positive_int("embedding_dim", embedding_dim)
        check_positive_int("hidden_size", hidden_size)
        check_positive_int("num_blocks", num_blocks)
        check_positive_int("timestep_embedding_dim", timestep_embedding_dim)
        if timestep_embedding_dim % 2:
            raise ValueError(f"`timestep_embedding_dim` must be even (sin and cos halves), got {timestep_embedding_dim}.")
        for name, value in (("dropout", dropout), ("beta_start", beta_start), ("beta_end", beta_end),
                            ("topology_loss_weight", topology_loss_weight), ("ema_decay", ema_decay)):
            check_finite_float(name, value)  # a string here would fail the range checks below with a bare TypeError
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must lie in [0, 1), got {dropout}.")
        check_positive_int("num_train_timesteps", num_train_timesteps)
        if beta_schedule not in ("linear", "scaled_linear", "squaredcos_cap_v2"):
            raise ValueError(
                "`beta_schedule` must be one of 'linear', 'scaled_linear', 'squaredcos_cap_v2', "
                f"got {beta_schedule!r}."
            )
        if not 0.0 < beta_start < beta_end < 1.0:
            raise ValueError(f"Expected 0 < beta_start < beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}.")
        if max_train_timestep is None:
            max_train_timestep = num_train_timesteps
        if not (isinstance(max_train_timestep, int) and 1 <= max_train_timestep <= num_train_timesteps):
            raise ValueError(
                f"`max_train_timestep` must be an int in [1, num_train_timesteps={num_train_timesteps}], "
                f"got {max_train_timestep!r}."
            )
        if x0_parameterization not in ("direct", "skip"):
            raise ValueError(f"`x0_parameterization` must be 'direct' or 'skip', got {x0_parameterization!r}.")
        check_strength(strength)
        check_positive_int("num_inference_steps", num_inference_steps)
        if topology_loss_weight < 0:
            raise ValueError(f"`topology_loss_weight` must be >= 0, got {topology_loss_weight}.")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"`ema_decay` must lie in [0, 1), got {ema_decay}.")
        if inference_weights not in ("ema", "raw"):
            raise ValueError(f"`inference_weights` must be 'ema' or 'raw', got {inference_weights!r}.")
        if input_normalization not in _NORMALIZATIONS:
            raise ValueError(f"`input_normalization` must be one of {_NORMALIZATIONS}, got {input_normalization!r}.")
        if link_start not in _LINK_STARTS:
            raise ValueError(f"`link_start` must be one of {_LINK_STARTS}, got {link_start!r}.")
        if audio_adapter not in _AUDIO_ADAPTERS:
            raise ValueError(f"`audio_adapter` must be one of {_AUDIO_ADAPTERS}, got {audio_adapter!r}.")
        if standardization not in _STD_MODES:
            raise ValueError(f"`standardization` must be one of {_STD_MODES}, got {standardization!r}.")

        self.embedding_dim = embedding_dim
        self.hidden_size = hidden_size
        self.num_blocks = num_blocks
        self.timestep_embedding_dim = timestep_embedding_dim
        self.dropout = dropout
        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.beta_start = beta_start
        self.beta_end = beta_end
        self.max_train_timestep = max_train_timestep
        self.x0_parameterization = x0_parameterization
        self.strength = strength
        self.num_inference_steps = num_inference_steps
        self.topology_loss_weight = topology_loss_weight
        self.ema_decay = ema_decay
        self.inference_weights = inference_weights
        self.input_normalization = input_normalization
        self.standardization = standardization
        self.link_start = link_start
        self.noise_seed = noise_seed
        self.audio_adapter = audio_adapter
        self.depth_selection = depth_selection
        super().__init__(**kwargs)

