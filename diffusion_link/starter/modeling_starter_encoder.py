"""The starter audio-text encoder: frozen aiSFX CNN (audio) and frozen all-MiniLM-L6-v2 (text), plus trained heads
into a joint space. It has `get_audio_features` / `get_text_features`, so the captioner uses it like `ClapModel`.

The aiSFX network is re-implemented here (Cnn_9layers of the DCASE cross-task baselines, as in the aisfx package)
and reads weights converted once to safetensors; nothing here unpickles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertModel, PreTrainedModel
from transformers.utils import ModelOutput

from diffusion_link.embedding_extraction import mean_pooled
from diffusion_link.hub.references import resolve_reference
from diffusion_link.pretrained_loading import HUB_KWARGS, ReferencedBasesMixin, check_pretrained_config, hub_kwargs
from diffusion_link.starter.configuration_starter_encoder import StarterEncoderConfig


# `from_pretrained` arguments that `AutoModel` passes along and that mean nothing for this model.
_AUTO_KWARGS = ("_from_auto", "_from_pipeline", "adapter_kwargs", "trust_remote_code", "proxies")


class _TextTowerWithoutPooler(BertModel):
    """MiniLM without its pooler: the joint space mean-pools the token states, so the checkpoint's pooler weights
    are left unread on purpose (and not reported as unexpected at every load)."""

    _keys_to_ignore_on_load_unexpected = [r"^pooler\."]


class AiSFXConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.max_pool2d(x, kernel_size=pool)

    @torch.no_grad()
    def fuse_batch_norm(self) -> None:
        """Fold each frozen BatchNorm into the convolution before it (the same function in eval mode, one pass
        fewer over the activations); the block then has no BatchNorm to train or to load into."""
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):
            if isinstance(getattr(self, bn), nn.BatchNorm2d):
                setattr(self, conv, fuse_conv_bn_eval(getattr(self, conv).eval(), getattr(self, bn).eval()))
                setattr(self, bn, nn.Identity())


class AiSFXEmbeddingNet(nn.Module):
    """(N, 100 frames, 96 mels) -> (N, 512): four conv blocks, mean over frequency, max over time."""

    def __init__(self):
        super().__init__()
        self.conv_block1 = AiSFXConvBlock(1, 64)
        self.conv_block2 = AiSFXConvBlock(64, 128)
        self.conv_block3 = AiSFXConvBlock(128, 256)
        self.conv_block4 = AiSFXConvBlock(256, 512)

    def for_inference(self) -> "AiSFXEmbeddingNet":
        """The frozen net as the starter runs it: BatchNorm folded into the convolutions and the weights in
        channels-last order, which oneDNN's CPU convolutions run fastest (together 1.4x on 2 cores; outputs within
        1e-5 of the unfused net's, captions unchanged). In place; returns the net."""
        for block in (self.conv_block1, self.conv_block2, self.conv_block3, self.conv_block4):
            block.fuse_batch_norm()
        return self.eval().to(memory_format=torch.channels_last)

    def forward(self, blocks: torch.Tensor) -> torch.Tensor:
        x = blocks.unsqueeze(1)  # (N, 1, T, F)
        if self.conv_block2.conv1.weight.is_contiguous(memory_format=torch.channels_last):  # after for_inference
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.conv_block1(x, (2, 2))
        x = self.conv_block2(x, (2, 2))
        x = self.conv_block3(x, (2, 2))
        x = self.conv_block4(x, (1, 1))  # (N, 512, T', F')
        return x.mean(dim=3).amax(dim=2)  # (N, 512)


class ProjectionHead(nn.Module):
    """Two-layer MLP with a residual linear path: x -> W2 gelu(W1 x) + P x."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, hidden)
        self.linear_2 = nn.Linear(hidden, out_dim)
        self.skip = nn.Linear(in_dim, out_dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.dropout(F.gelu(self.linear_1(x)))) + self.skip(x)


@dataclass
class StarterEncoderOutput(ModelOutput):
    loss: torch.FloatTensor | None = None
    logits_per_audio: torch.FloatTensor | None = None
    audio_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None


class StarterAudioTextEncoder(ReferencedBasesMixin, PreTrainedModel):
    r"""
    CLAP-style joint space over frozen pretrained towers: `audio_model` (aiSFX, 512-d) and `text_model`
    (all-MiniLM-L6-v2, mean-pooled, 384-d), with trained `audio_projection` (and, if configured, `text_projection`)
    heads and a learned InfoNCE temperature.

    Only the heads are saved; `from_pretrained` loads the towers from `config.audio_model_weights` and
    `config.text_model_name_or_path` (installed packages and this package's cache). Build a new one with
    [`~StarterAudioTextEncoder.from_bases`].
    """

    config: StarterEncoderConfig
    config_class = StarterEncoderConfig
    main_input_name = "input_features"
    base_model_prefix = "starter_encoder"
    _base_prefixes = ("audio_model.", "text_model.")  # the frozen towers (`ReferencedBasesMixin`)

    def __init__(self, config: StarterEncoderConfig):
        super().__init__(config)
        self.audio_model = AiSFXEmbeddingNet()
        self.text_model = BertModel(config.text_config, add_pooling_layer=False)
        self.audio_projection = ProjectionHead(
            config.audio_embedding_dim, config.head_hidden_size, config.projection_dim, config.head_dropout
        )
        self.text_projection = (
            ProjectionHead(config.text_config.hidden_size, config.head_hidden_size, config.projection_dim, config.head_dropout)
            if config.text_projection == "mlp" else nn.Identity()
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.post_init()
        self.apply_freezing()
        self.train(self.training)  # the frozen towers start (and stay) in eval mode

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, ProjectionHead):
            for linear in (module.linear_1, module.linear_2, module.skip):
                nn.init.xavier_uniform_(linear.weight)
                if linear.bias is not None:
                    nn.init.zeros_(linear.bias)
        elif isinstance(module, StarterAudioTextEncoder):
            nn.init.constant_(module.logit_scale, module.config.logit_scale_init_value)

    def apply_freezing(self) -> None:
        """The towers never train; the heads and the temperature do."""
        self.audio_model.requires_grad_(False)
        self.text_model.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.audio_model.eval()  # frozen BatchNorm statistics stay the pretrained ones
        self.text_model.eval()
        return self

    # ------------------------------------------------------------------ bases and saving
    @classmethod
    def from_bases(cls, config: StarterEncoderConfig | None = None,
                   init_heads: bool = True) -> "StarterAudioTextEncoder":
        """A new encoder with pretrained towers (from `config`'s references) and freshly initialised heads
        (`init_heads=False`: left uninitialised, for a caller that loads them next, as `from_pretrained` does; the
        random towers built first are replaced either way, so they are never initialised)."""
        if init_heads:
            model = cls(config or StarterEncoderConfig())
        else:
            from transformers.initialization import no_init_weights

            with no_init_weights():
                model = cls(config or StarterEncoderConfig())
        model.load_bases()
        return model

    def load_bases(self) -> None:
        from safetensors.torch import load_file

        path = resolve_reference(self.config.audio_model_weights)
        net = AiSFXEmbeddingNet()
        missing, unexpected = net.load_state_dict(load_file(path), strict=False)
        if missing or unexpected:
            raise ValueError(f"{path} does not hold aiSFX's embedding net: missing {missing[:3]}, unexpected {unexpected[:3]}.")
        self.audio_model = net.for_inference()  # frozen for good, so its BatchNorm is folded away once
        self.text_model = _TextTowerWithoutPooler.from_pretrained(
            resolve_reference(self.config.text_model_name_or_path), add_pooling_layer=False
        )
        self.apply_freezing()
        self.train(self.training)

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained heads and temperature (`trained_state_dict`): what `save_pretrained` writes."""
        return self.trained_state_dict()

    def save_pretrained(self, save_directory, *args, **kwargs):
        # Only the trained heads: the towers come from installed packages (see `load_bases`).
        if kwargs.get("state_dict") is None:
            kwargs["state_dict"] = self.trained_state_dict()
        else:
            kwargs["state_dict"] = {k: v for k, v in kwargs["state_dict"].items() if not k.startswith(self._base_prefixes)}
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, config: StarterEncoderConfig | None = None,
                        dtype: torch.dtype | None = None, **kwargs) -> "StarterAudioTextEncoder":
        """The towers from `config`'s references (`load_bases`), then the heads saved at
        `pretrained_model_name_or_path` (a folder or Hub repo), strictly (`ReferencedBasesMixin.load_trained_parts`).

        Takes the file-fetching arguments (`cache_dir`, `revision`, `token`, `subfolder`, ...) and `dtype`; any
        other argument raises `TypeError` rather than being ignored.
        """
        unknown = sorted(k for k in kwargs if k not in HUB_KWARGS and k not in _AUTO_KWARGS)
        if args or unknown:
            raise TypeError(f"StarterAudioTextEncoder.from_pretrained does not take {list(args) + unknown}.")
        if config is None:
            check_pretrained_config(cls.config_class, pretrained_model_name_or_path, kwargs)
            config = StarterEncoderConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs(kwargs))
        model = cls.from_bases(config, init_heads=False)  # every head weight is loaded next, strictly
        model.load_trained_parts(pretrained_model_name_or_path, **kwargs)
        if dtype is not None:
            model = model.to(dtype)
        return model.eval()

    # ------------------------------------------------------------------ features
    def audio_tower_embeddings(self, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, frames, 96) log-mel (+ (B, frames) mask) -> (B, 512): the mean of aiSFX's block embeddings."""
        lengths = (attention_mask.sum(-1) if attention_mask is not None
                   else torch.full((input_features.shape[0],), input_features.shape[1])).tolist()
        size, hop = self.config.block_frames, self.config.block_hop
        blocks, owner = [], []
        for i, length in enumerate(lengths):
            mel = input_features[i, : int(length)]
            if len(mel) < size:  # shorter than one block: zero-pad it, as aiSFX does
                mel = F.pad(mel, (0, 0, 0, size - len(mel)))
            starts = range(0, len(mel) - size + 1, hop)  # full blocks only
            blocks += [mel[s : s + size] for s in starts]
            owner += [i] * len(starts)
        embeds = self.audio_model(torch.stack(blocks).to(self.logit_scale.dtype))  # (blocks, 512)
        owner = torch.tensor(owner, device=embeds.device)
        summed = torch.zeros(len(lengths), embeds.shape[1], device=embeds.device, dtype=embeds.dtype).index_add_(0, owner, embeds)
        return summed / torch.bincount(owner, minlength=len(lengths)).unsqueeze(-1).to(embeds.dtype)

    def text_tower_embeddings(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids -> (B, 384) L2-normalised mean-pooled MiniLM embeddings (sentence-transformers' recipe)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        return mean_pooled(hidden, attention_mask)

    def get_audio_features(self, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """(B, D) L2-normalised audio embeddings in the joint space."""
        return F.normalize(self.audio_projection(self.audio_tower_embeddings(input_features, attention_mask)), dim=-1)

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          token_type_ids: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """(B, D) L2-normalised text embeddings in the joint space."""
        return F.normalize(self.text_projection(self.text_tower_embeddings(input_ids, attention_mask, token_type_ids)), dim=-1)

    def forward(
        self,
        input_features: torch.Tensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        audio_tower_embeds: torch.Tensor | None = None,
        text_tower_embeds: torch.Tensor | None = None,
        return_loss: bool = True,
        token_type_ids: torch.Tensor | None = None,
    ) -> StarterEncoderOutput:
        """`logits_per_audio` (B_audio, B_text) and, for paired rows (B_audio == B_text), the symmetric InfoNCE loss.
        Pre-computed tower outputs (`audio_tower_embeds` (B, 512), `text_tower_embeds` (B, 384)) skip the frozen
        towers, as head training does. Called as CLAP is (`input_ids`, `attention_mask` of the texts and
        `input_features` of the audio), it serves transformers' zero-shot audio classification pipeline."""
        if audio_tower_embeds is None:
            audio_tower_embeds = self.audio_tower_embeddings(input_features, feature_attention_mask)
        if text_tower_embeds is None:
            text_tower_embeds = self.text_tower_embeddings(input_ids, attention_mask, token_type_ids)
        audio = F.normalize(self.audio_projection(audio_tower_embeds), dim=-1)
        text = F.normalize(self.text_projection(text_tower_embeds), dim=-1)
        logits = self.logit_scale.exp().clamp(max=100) * audio @ text.T  # (B, B)
        loss = None
        if return_loss and logits.shape[0] == logits.shape[1]:
            labels = torch.arange(len(logits), device=logits.device)
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        return StarterEncoderOutput(loss=loss, logits_per_audio=logits, audio_embeds=audio, text_embeds=text)
