"""The Diffusion-Link bridge (arXiv 2510.11330): a small diffusion model over one embedding vector that moves audio
embeddings into the text-embedding distribution.

This file is copied next to the weights by ``save_pretrained`` (custom code on the Hub), so it imports only torch,
transformers, diffusers and flat siblings.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_diffusion_link import DiffusionLinkConfig
from .model_card_mixin import ModelCardMixin
from .peer_bridges import LinearMapBridge
from .pretrained_loading import check_pretrained_config, checked_from_pretrained, own_aligned_memory
from .seeding import content_generators
from .validation import check_embeddings, check_positive_int, check_strength


GeneratorArg = torch.Generator | Sequence[torch.Generator] | None



@dataclass
class DiffusionLinkOutput(ModelOutput):
    """
    Output of [`DiffusionLinkBridge.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            `diffusion_loss + topology_loss_weight * topology_loss`.
        diffusion_loss (`torch.FloatTensor` of shape `()`):
            Mean squared error of the x0 predictions against the standardised text embeddings, averaged over the
            text branch and (when audio is given) the audio branch.
        topology_loss (`torch.FloatTensor` of shape `()`):
            Mean squared difference between the in-batch cosine-similarity matrix of the predictions and that of the
            true text embeddings, averaged over the branches.
        text_prediction (`torch.FloatTensor` of shape `(batch, embedding_dim)`):
            x0 predicted from the noised text embeddings, in the embedding space.
        audio_prediction (`torch.FloatTensor` of shape `(num_paired, embedding_dim)`, *optional*):
            x0 predicted from the noised audio embeddings of the paired rows, in the embedding space.
    """

    loss: torch.FloatTensor | None = None
    diffusion_loss: torch.FloatTensor | None = None
    topology_loss: torch.FloatTensor | None = None
    text_prediction: torch.FloatTensor | None = None
    audio_prediction: torch.FloatTensor | None = None


class DiffusionLinkTimestepEmbedding(nn.Module):
    """Sinusoidal timestep embedding (diffusers' `get_timestep_embedding`) followed by a two-layer MLP."""

    def __init__(self, config: DiffusionLinkConfig):
        super().__init__()
        self.embedding_dim = config.timestep_embedding_dim
        self.linear_1 = nn.Linear(config.timestep_embedding_dim, config.hidden_size)
        self.linear_2 = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        # timesteps: (N,) -> (N, hidden_size)
        emb = get_timestep_embedding(timesteps, self.embedding_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        emb = emb.to(self.linear_1.weight.dtype)
        return self.linear_2(F.silu(self.linear_1(emb)))


class DiffusionLinkBlock(nn.Module):
    """Pre-norm residual MLP block, conditioned on the timestep by addition: h + W2 silu(W1 LN(h) + Wt temb)."""

    def __init__(self, config: DiffusionLinkConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.hidden_size)
        self.fc1 = nn.Linear(config.hidden_size, config.hidden_size)
        self.time_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.fc2 = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        # hidden_states: (B, H); temb: (B, H) or (1, H), already passed through silu
        h = self.fc1(self.norm(hidden_states)) + self.time_proj(temb)
        return hidden_states + self.fc2(self.dropout(F.silu(h)))


class DiffusionLinkDenoiser(nn.Module):
    """Residual MLP that maps a noised embedding x_t and its timestep t to a prediction of the clean x0."""

    def __init__(self, config: DiffusionLinkConfig):
        super().__init__()
        self.time_embedding = DiffusionLinkTimestepEmbedding(config)
        self.in_proj = nn.Linear(config.embedding_dim, config.hidden_size)
        self.blocks = nn.ModuleList([DiffusionLinkBlock(config) for _ in range(config.num_blocks)])
        self.out_norm = nn.LayerNorm(config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.embedding_dim)

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        # sample: (B, D); timesteps: (B,) or (1,) -- one shared timestep is embedded once and broadcast.
        temb = F.silu(self.time_embedding(timesteps))  # (B or 1, H)
        hidden_states = self.in_proj(sample)  # (B, H)
        for block in self.blocks:
            hidden_states = block(hidden_states, temb)
        return self.out_proj(self.out_norm(hidden_states))  # (B, D)


class DiffusionLinkPreTrainedModel(ModelCardMixin, PreTrainedModel):
    config: DiffusionLinkConfig
    config_class = DiffusionLinkConfig
    base_model_prefix = "bridge"
    main_input_name = "audio_embeds"
    # The Trainer must not rescale our loss under DDP (it would for a forward that takes **kwargs).
    accepts_loss_kwargs = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        # Refuses a folder of another model type and weights that do not match the config (see `checked_from_pretrained`).
        check_pretrained_config(cls.config_class, pretrained_model_name_or_path, kwargs)
        loaded = checked_from_pretrained(super().from_pretrained, pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        own_aligned_memory((*model.parameters(), *model.buffers()))  # bit-exact `link()` after loading
        # `from_pretrained` re-creates every parameter with requires_grad=True; frozen parts must be frozen again.
        model.apply_freezing()
        return loaded

    def apply_freezing(self) -> None:
        """Set `requires_grad` of the parts that are never trained by the optimiser (here: the EMA weights)."""
        self.ema_denoiser.requires_grad_(False)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            # PyTorch's default (Kaiming-uniform) keeps activations of the residual stream well scaled.
            bound = 1.0 / math.sqrt(module.in_features)
            init.uniform_(module.weight, -bound, bound)
            init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, DiffusionLinkBlock):
            # Each block starts as the identity, so a deep stack trains like a shallow one at first.
            init.zeros_(module.fc2.weight)
            init.zeros_(module.fc2.bias)
        elif isinstance(module, DiffusionLinkBridge):
            init.zeros_(module.embed_mean)
            init.constant_(module.embed_std, module.config.embedding_dim**-0.5)
            init.zeros_(module.ema_num_updates)


def noise_scheduler_of(config: DiffusionLinkConfig) -> DDPMScheduler:
    """The diffusers `DDPMScheduler` of `config`: its beta schedule, its `alphas_cumprod` table and its `add_noise`
    (the forward process q(x_t | x_0)) serve training and `link()` alike. It never clips or thresholds: embeddings
    are not images in [-1, 1]."""
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        prediction_type="sample",
        clip_sample=False,
        thresholding=False,
    )


class DiffusionLinkBridge(DiffusionLinkPreTrainedModel):
    r"""
    Diffusion-Link: a residual-MLP diffusion model over single embeddings that maps audio embeddings onto the
    text-embedding distribution.

    - Training ([`~DiffusionLinkBridge.forward`]) noises with diffusers' `DDPMScheduler` and predicts the clean *text*
      embedding both from the noised text and from the noised paired audio (cross-sample prediction), plus a topology
      loss on in-batch cosine similarities.
    - Inference ([`~DiffusionLinkBridge.link`]) forward-noises an audio embedding to s* = `strength` * T and runs
      `num_inference_steps` deterministic DDIM updates (eta = 0, [`ddim_step`]) back to x0, with the EMA weights.

    One scheduler: diffusers' `DDPMScheduler` (`noise_scheduler`) holds the noise schedule and does the forward
    noising for both. The reverse steps are the DDIM update written out in [`ddim_step`], because diffusers'
    `DDIMScheduler.step` derives each previous timestep from a uniform spacing of T and cannot express every shallow
    schedule `link()` needs (t = 599 in 5 steps, for one); where it can, the two give the same numbers (a test pins
    this against `DDIMScheduler.step`).

    Embeddings are standardised by `(x - embed_mean) / embed_std` before the diffusion and mapped back after it. Both
    statistics are persistent buffers (saved with the weights), set from text embeddings by
    [`~DiffusionLinkBridge.fit_normalization`].
    """

    def __init__(self, config: DiffusionLinkConfig):
        super().__init__(config)
        self.denoiser = DiffusionLinkDenoiser(config)
        # The exponential moving average of `denoiser`, used by `link()`; updated by `update_ema()`, never by the
        # optimiser.
        self.ema_denoiser = DiffusionLinkDenoiser(config)
        self.register_buffer("embed_mean", torch.zeros(config.embedding_dim))
        self.register_buffer("embed_std", torch.full((config.embedding_dim,), config.embedding_dim**-0.5))
        self.register_buffer("ema_num_updates", torch.zeros((), dtype=torch.long))
        if config.audio_adapter == "linear":  # only then: checkpoints without an adapter keep their exact keys
            self.register_buffer("adapter_weight", torch.eye(config.embedding_dim))
            self.register_buffer("adapter_bias", torch.zeros(config.embedding_dim))
        # The schedulers' tables are plain tensors, not weights: built on the CPU even when from_pretrained
        # instantiates the model on the meta device (else a cosine schedule's tables would stay empty there).
        with torch.device("cpu"):
            self.noise_scheduler = noise_scheduler_of(config)
        self.post_init()
        self.reset_ema()

    # ------------------------------------------------------------------ the audio adapter
    def adapt_audio(self, audio_embeds: torch.Tensor) -> torch.Tensor:
        """(B, D) audio embeddings -> (B, D) where the diffusion starts from: themselves (`audio_adapter="none"`) or
        their affine map `normalize(a W + b)` (`"linear"`, L2 steps only with `input_normalization="l2"`)."""
        if self.config.audio_adapter == "none":
            return audio_embeds
        l2 = self.config.input_normalization == "l2"
        audio = F.normalize(audio_embeds, dim=-1) if l2 else audio_embeds
        mapped = audio @ self.adapter_weight.to(audio) + self.adapter_bias.to(audio)
        return F.normalize(mapped, dim=-1) if l2 else mapped

    @torch.no_grad()
    def fit_audio_adapter(self, audio_embeds: torch.Tensor, text_embeds: torch.Tensor) -> float:
        """Fit the linear audio adapter on (N, D) paired rows (ridge least squares, penalty by leave-one-out; see
        `LinearMapBridge`). Returns the penalty picked."""
        if self.config.audio_adapter != "linear":
            raise ValueError(f"`fit_audio_adapter` needs `audio_adapter='linear'`, got {self.config.audio_adapter!r}.")
        linear = LinearMapBridge(self.config.embedding_dim).fit(audio_embeds, text_embeds)
        self.adapter_weight.copy_(linear.weight)
        self.adapter_bias.copy_(linear.bias)
        return linear.fitted_ridge

    # ------------------------------------------------------------------ normalisation (the only place it happens)
    def normalize(self, embeds: torch.Tensor) -> torch.Tensor:
        """(B, D) embeddings -> (B, D) standardised diffusion space."""
        if self.config.input_normalization == "l2":
            embeds = F.normalize(embeds, dim=-1)
        return (embeds - self.embed_mean) / self.embed_std

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, D) standardised diffusion space -> (B, D) embeddings (unit norm when `input_normalization="l2"`)."""
        embeds = latents * self.embed_std + self.embed_mean
        if self.config.input_normalization == "l2":
            embeds = F.normalize(embeds, dim=-1)
        return embeds

    @torch.no_grad()
    def fit_normalization(self, text_embeds: torch.Tensor) -> None:
        """Set `embed_mean` / `embed_std` from (N, D) text embeddings (the distribution the bridge moves audio to)."""
        text_embeds = check_embeddings("text_embeds", text_embeds, self.config.embedding_dim, allow_vector=True)
        if text_embeds.shape[0] < 2:
            raise ValueError(f"`fit_normalization` needs at least 2 text embeddings, got {text_embeds.shape[0]}.")
        if self.config.input_normalization == "l2":
            text_embeds = F.normalize(text_embeds, dim=-1)
        mean = text_embeds.mean(dim=0)
        centred = text_embeds - mean
        if self.config.standardization == "per_dim":
            std = centred.std(dim=0)
        else:
            std = centred.std().expand_as(mean)
        # A coordinate that never varies in the text data must not blow up under division.
        std = std.clamp_min(1e-6 * float(std.max().clamp_min(1e-12)))
        self.embed_mean.copy_(mean)
        self.embed_std.copy_(std)

    # ------------------------------------------------------------------ EMA
    @torch.no_grad()
    def reset_ema(self) -> None:
        """Make the EMA weights a copy of the current denoiser weights and freeze them."""
        self.ema_denoiser.load_state_dict(self.denoiser.state_dict())
        self.apply_freezing()
        self.ema_num_updates.zero_()

    @torch.no_grad()
    def update_ema(self) -> None:
        """One EMA step after an optimiser step: ema <- d * ema + (1 - d) * weights.

        The decay warms up as min(ema_decay, (1 + n) / (10 + n)) over the n updates so far (as diffusers'
        `EMAModel`), so short runs are not dominated by the initial weights.
        """
        n = int(self.ema_num_updates)
        decay = min(self.config.ema_decay, (1 + n) / (10 + n))
        for ema_param, param in zip(self.ema_denoiser.parameters(), self.denoiser.parameters()):
            ema_param.lerp_(param.detach(), 1.0 - decay)
        self.ema_num_updates.add_(1)

    # ------------------------------------------------------------------ training
    def forward(
        self,
        audio_embeds: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> DiffusionLinkOutput | tuple:
        r"""
        Training loss of Diffusion-Link.

        Args:
            audio_embeds (`torch.FloatTensor` of shape `(B, D)`, *optional*):
                Audio embeddings paired row by row with `text_embeds`. Without them the bridge trains on text only
                (the "Diffusion Bridge" peer).
            text_embeds (`torch.FloatTensor` of shape `(B, D)`):
                Text embeddings: the targets of both branches.
            timesteps (`torch.LongTensor` of shape `(B,)`, *optional*):
                Diffusion timesteps; drawn uniformly from `[0, max_train_timestep)` when omitted.
            noise (`torch.FloatTensor` of shape `(B, D)`, *optional*):
                Gaussian noise shared by both branches; drawn when omitted.
            audio_mask (`torch.BoolTensor` of shape `(B,)`, *optional*):
                Which rows have a paired audio embedding (rows of unpaired text have `False`; their `audio_embeds`
                row is ignored). Defaults to all rows when `audio_embeds` is given.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if text_embeds is None:
            raise ValueError("`text_embeds` is required to train the bridge (it is the target of both branches).")
        dim = self.config.embedding_dim
        text_embeds = check_embeddings("text_embeds", text_embeds, dim, allow_vector=True)
        batch_size = text_embeds.shape[0]
        if audio_embeds is not None:
            audio_embeds = check_embeddings("audio_embeds", audio_embeds, dim, num_rows=batch_size, allow_vector=True)
            if audio_mask is None:
                audio_mask = torch.ones(batch_size, dtype=torch.bool, device=text_embeds.device)
            elif audio_mask.shape != (batch_size,):
                raise ValueError(f"`audio_mask` must have shape ({batch_size},), got {tuple(audio_mask.shape)}.")
            audio_mask = audio_mask.bool()
        elif audio_mask is not None:
            raise ValueError("`audio_mask` was given without `audio_embeds`.")

        device = text_embeds.device
        if timesteps is None:
            timesteps = torch.randint(0, self.config.max_train_timestep, (batch_size,), device=device)
        elif timesteps.shape != (batch_size,):
            raise ValueError(f"`timesteps` must have shape ({batch_size},), got {tuple(timesteps.shape)}.")
        target = self.normalize(text_embeds)  # (B, D)
        if noise is None:
            noise = torch.randn_like(target)
        elif noise.shape != target.shape:
            raise ValueError(f"`noise` must have shape {tuple(target.shape)}, got {tuple(noise.shape)}.")

        # Text branch: predict t_i from q(t_i, s).
        noisy_text = self.noise_scheduler.add_noise(target, noise, timesteps)
        text_pred = self.predict_x0(noisy_text, timesteps)
        diffusion_loss = F.mse_loss(text_pred, target)
        topology_loss = self._topology_loss(text_pred, text_embeds)

        audio_pred = None
        if audio_embeds is not None and bool(audio_mask.any()):
            # Audio branch (cross-sample prediction): predict the paired t_i from q(a_i, s), same s and noise.
            rows = audio_mask.nonzero(as_tuple=True)[0]
            start = self.normalize(self.adapt_audio(audio_embeds[rows]))
            noisy_audio = self.noise_scheduler.add_noise(start, noise[rows], timesteps[rows])
            audio_pred = self.predict_x0(noisy_audio, timesteps[rows])
            diffusion_loss = 0.5 * (diffusion_loss + F.mse_loss(audio_pred, target[rows]))
            topology_loss = 0.5 * (topology_loss + self._topology_loss(audio_pred, text_embeds[rows]))

        loss = diffusion_loss + self.config.topology_loss_weight * topology_loss
        text_prediction = self.denormalize(text_pred.detach())
        audio_prediction = None if audio_pred is None else self.denormalize(audio_pred.detach())
        if not return_dict:
            return tuple(
                v for v in (loss, diffusion_loss, topology_loss, text_prediction, audio_prediction) if v is not None
            )
        return DiffusionLinkOutput(
            loss=loss,
            diffusion_loss=diffusion_loss,
            topology_loss=topology_loss,
            text_prediction=text_prediction,
            audio_prediction=audio_prediction,
        )

    def predict_x0(
        self, sample: torch.Tensor, timesteps: torch.Tensor, denoiser: DiffusionLinkDenoiser | None = None
    ) -> torch.Tensor:
        """x0 predicted from the (B, D) state `sample` at `timesteps` ((B,) or one shared (1,)), in the standardised space.

        `x0_parameterization="direct"`: the network's output is x0. `"skip"`: x0 = sqrt(a_t) x_t + sqrt(1 - a_t) F,
        with a_t the cumulative alpha: the linear estimate of unit-variance data plus a learned correction of unit
        scale at every t (EDM's c_skip / c_out in VP form). Both predict x0; they differ in what the network learns.
        """
        denoiser = self.denoiser if denoiser is None else denoiser
        output = denoiser(sample, timesteps)
        if self.config.x0_parameterization == "direct":
            return output
        alpha = self.noise_scheduler.alphas_cumprod.to(device=sample.device, dtype=sample.dtype)[timesteps.cpu()]
        alpha = alpha.to(sample.device).unsqueeze(-1)  # (B or 1, 1)
        return alpha.sqrt() * sample + (1 - alpha).sqrt() * output

    def _topology_loss(self, prediction: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        # Cosine similarities are compared in the embedding space, where the captioner reads them.
        pred = F.normalize(prediction * self.embed_std + self.embed_mean, dim=-1)  # (B, D)
        true = F.normalize(text_embeds, dim=-1)  # (B, D)
        return F.mse_loss(pred @ pred.T, true @ true.T)  # (B, B) vs (B, B)

    # ------------------------------------------------------------------ inference
    def link_timesteps(self, strength: float | None = None, num_inference_steps: int | None = None) -> list[int]:
        """The DDIM timesteps `link()` visits, from s* - 1 down, evenly spaced, the last step landing on x0.

        With s* = round(strength * T) and k steps, step i starts at round(s* (k - i) / k) - 1. For s* = 100 and k = 5
        this is [99, 79, 59, 39, 19]: the "trailing" DDIM spacing of `set_timesteps(T // (s* // k))` cut below s*.
        """
        strength = self.config.strength if strength is None else strength
        check_strength(strength)
        steps = self.config.num_inference_steps if num_inference_steps is None else num_inference_steps
        check_positive_int("num_inference_steps", steps)
        s_star = round(strength * self.config.num_train_timesteps)
        if s_star < steps:
            raise ValueError(
                f"`num_inference_steps`={steps} is larger than s*=round(strength * T)={s_star} "
                f"(strength={strength}, T={self.config.num_train_timesteps}); use fewer steps or a larger strength."
            )
        return [round(s_star * (steps - i) / steps) - 1 for i in range(steps)]

    @torch.no_grad()
    def link(
        self,
        audio_embeds: torch.Tensor,
        *,
        strength: float | None = None,
        num_inference_steps: int | None = None,
        generator: GeneratorArg = None,
    ) -> torch.Tensor:
        r"""
        Move audio embeddings towards the text-embedding distribution.

        Args:
            audio_embeds (`torch.FloatTensor` of shape `(B, D)` or `(D,)`):
                Audio embeddings (e.g. `ClapModel.get_audio_features(...).pooler_output`).
            strength (`float`, *optional*):
                Fraction of the schedule to noise to, in (0, 1]; s* = strength * T. Defaults to `config.strength`.
            num_inference_steps (`int`, *optional*):
                Number of DDIM steps from s* to x0. Defaults to `config.num_inference_steps`.
            generator (`torch.Generator` or a list of B of them, *optional*):
                Source of the forward noise. One generator draws a (B, D) block (as diffusers pipelines do); a list
                gives row i its own generator. Without one, the noise of each row is seeded from that row's values
                and `config.noise_seed`: the result is deterministic, and each output row depends on its input row
                alone (batch-invariant).

        Returns:
            `torch.FloatTensor` of shape `(B, D)` (or `(D,)`): the bridged embeddings, in the input's dtype.
        """
        squeeze = isinstance(audio_embeds, torch.Tensor) and audio_embeds.ndim == 1
        audio_embeds = check_embeddings("audio_embeds", audio_embeds, self.config.embedding_dim, allow_vector=True)
        timesteps = self.link_timesteps(strength, num_inference_steps)
        batch_size = audio_embeds.shape[0]
        denoiser = self.ema_denoiser if self.config.inference_weights == "ema" else self.denoiser
        param = next(denoiser.parameters())

        latents = self.normalize(self.adapt_audio(audio_embeds.to(device=param.device, dtype=param.dtype)))  # (B, D)
        alphas_cumprod = self.noise_scheduler.alphas_cumprod.to(device=param.device, dtype=param.dtype)
        if self.config.link_start == "noised":
            noise = self._link_noise(audio_embeds, generator).to(device=param.device, dtype=param.dtype)
            start = torch.full((batch_size,), timesteps[0], dtype=torch.long, device=param.device)
            latents = self.noise_scheduler.add_noise(latents, noise, start)

        with _eval_mode(denoiser):
            for i, t in enumerate(timesteps):
                t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
                x0_pred = self.predict_x0(latents, torch.tensor([t], device=param.device), denoiser)  # (B, D)
                latents = ddim_step(alphas_cumprod, x0_pred, t, t_prev, latents)

        out = self.denormalize(latents).to(audio_embeds.dtype)
        return out[0] if squeeze else out

    def _link_noise(self, audio_embeds: torch.Tensor, generator: GeneratorArg) -> torch.Tensor:
        """(B, D) standard normal noise on the CPU, one row per input row."""
        batch_size, dim = audio_embeds.shape
        if generator is None:
            # Seeded from each row's own values (and `noise_seed`): deterministic and batch-invariant, while rows
            # still get independent noise (one noise vector for all rows would shift every output the same way).
            generators = content_generators(audio_embeds, key=str(self.config.noise_seed).encode())
        elif isinstance(generator, torch.Generator):
            return torch.randn(batch_size, dim, generator=generator, device=generator.device).cpu()
        else:
            generators = list(generator)
            if len(generators) != batch_size:
                raise ValueError(f"Got a list of {len(generators)} generators for a batch of {batch_size} embeddings.")
        return torch.stack([torch.randn(dim, generator=g, device=g.device).cpu() for g in generators])


def ddim_step(
    alphas_cumprod: torch.Tensor, x0_pred: torch.Tensor, t: int, t_prev: int, sample: torch.Tensor
) -> torch.Tensor:
    """The deterministic DDIM update (eta = 0, eq. 12 of Song et al. 2021) that `link()` runs, for an x0-predicting
    model: x_{t_prev} = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps, with eps = (x_t - sqrt(a_t) x0) / sqrt(1 - a_t) and
    a = `alphas_cumprod` (the `DDPMScheduler`'s table).

    The same numbers as `DDIMScheduler.step(prediction_type="sample", eta=0)`, but from t to an explicit t_prev:
    diffusers' DDIM derives t_prev from a uniform spacing of T and cannot express the shallow schedules `link()` needs
    (600 / 5 steps, for instance). t_prev = -1 is x0 itself (`set_alpha_to_one`).
    """
    if t_prev < 0:
        return x0_pred
    alpha_t = alphas_cumprod[t]
    eps = (sample - alpha_t.sqrt() * x0_pred) / (1 - alpha_t).sqrt()
    alpha_prev = alphas_cumprod[t_prev]
    return alpha_prev.sqrt() * x0_pred + (1 - alpha_prev).sqrt() * eps


@contextlib.contextmanager
def _eval_mode(module: nn.Module):
    """Run `module` in eval mode (no dropout) and restore its previous mode after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
