import json
import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from transformers import AutoConfig, AutoModel

from diffusion_link import DiffusionLinkBridge, DiffusionLinkConfig, DiffusionLinkOutput
from diffusion_link.modeling_diffusion_link import ddim_step

from .conftest import run_python


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


# ---------------------------------------------------------------------------------------------------- structure
def test_denoiser_predicts_one_vector_per_row(tiny_bridge):
    x = torch.randn(5, 12)
    out = tiny_bridge.denoiser(x, torch.tensor([3, 10, 99, 500, 999]))
    assert out.shape == (5, 12)
    shared = tiny_bridge.denoiser(x, torch.tensor([99]))  # one timestep broadcast over the batch
    per_row = tiny_bridge.denoiser(x, torch.full((5,), 99))
    torch.testing.assert_close(shared, per_row)


def test_one_diffusers_scheduler_that_never_clips(tiny_bridge):
    scheduler = tiny_bridge.noise_scheduler
    assert type(scheduler).__name__ == "DDPMScheduler"
    assert not hasattr(tiny_bridge, "inference_scheduler")  # link() steps with `ddim_step` on this one's table
    assert scheduler.config.clip_sample is False and scheduler.config.thresholding is False
    assert scheduler.config.num_train_timesteps == 1000 and scheduler.config.prediction_type == "sample"


def test_ema_weights_are_frozen_and_start_as_a_copy(tiny_bridge_config):
    bridge = DiffusionLinkBridge(tiny_bridge_config)
    assert all(p.requires_grad for p in bridge.denoiser.parameters())
    assert not any(p.requires_grad for p in bridge.ema_denoiser.parameters())
    for a, b in zip(bridge.denoiser.parameters(), bridge.ema_denoiser.parameters()):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------------- training
def test_forward_returns_losses_of_both_branches(tiny_bridge):
    audio, text = unit(6, 12, seed=1), unit(6, 12, seed=2)
    out = tiny_bridge(audio_embeds=audio, text_embeds=text)
    assert isinstance(out, DiffusionLinkOutput)
    assert out.loss.ndim == 0 and out.loss.requires_grad
    torch.testing.assert_close(out.loss, out.diffusion_loss + 1.0 * out.topology_loss)
    assert out.text_prediction.shape == (6, 12) and out.audio_prediction.shape == (6, 12)
    assert out.topology_loss > 0


def test_cross_sample_loss_is_the_mean_of_text_and_audio_branches(tiny_bridge):
    audio, text = unit(4, 12, seed=1), unit(4, 12, seed=2)
    t, noise = torch.tensor([5, 50, 300, 900]), torch.randn(4, 12)
    paired = tiny_bridge(audio_embeds=audio, text_embeds=text, timesteps=t, noise=noise)
    text_only = tiny_bridge(text_embeds=text, timesteps=t, noise=noise)
    target = tiny_bridge.normalize(text)
    noisy_audio = tiny_bridge.noise_scheduler.add_noise(tiny_bridge.normalize(audio), noise, t)
    audio_mse = F.mse_loss(tiny_bridge.denoiser(noisy_audio, t), target)
    torch.testing.assert_close(paired.diffusion_loss, 0.5 * (text_only.diffusion_loss + audio_mse))
    assert text_only.audio_prediction is None


def test_skip_parameterisation_passes_the_state_through_at_small_t(tiny_bridge_config):
    config = DiffusionLinkConfig(**{**tiny_bridge_config.to_dict(), "x0_parameterization": "skip"})
    bridge = DiffusionLinkBridge(config)
    sample, t = torch.randn(3, 12), torch.tensor([0, 500, 999])
    alpha = bridge.noise_scheduler.alphas_cumprod[t].unsqueeze(-1)
    expected = alpha.sqrt() * sample + (1 - alpha).sqrt() * bridge.denoiser(sample, t)
    torch.testing.assert_close(bridge.predict_x0(sample, t), expected)
    direct = DiffusionLinkBridge(tiny_bridge_config)
    torch.testing.assert_close(direct.predict_x0(sample, t), direct.denoiser(sample, t))


def test_topology_loss_is_zero_when_predictions_keep_the_cosine_structure(tiny_bridge):
    text = unit(5, 12)
    z = tiny_bridge.normalize(text)
    assert tiny_bridge._topology_loss(z, text) < 1e-10
    assert tiny_bridge._topology_loss(z.flip(0) * 0 + torch.randn(5, 12), text) > 1e-3


def test_topology_loss_weight_scales_the_total(tiny_bridge_config):
    torch.manual_seed(0)
    config = DiffusionLinkConfig(**{**tiny_bridge_config.to_dict(), "topology_loss_weight": 0.25})
    bridge = DiffusionLinkBridge(config)
    out = bridge(audio_embeds=unit(4, 12, seed=1), text_embeds=unit(4, 12, seed=2))
    torch.testing.assert_close(out.loss, out.diffusion_loss + 0.25 * out.topology_loss)


def test_audio_mask_drops_unpaired_rows_from_the_audio_branch(tiny_bridge):
    audio, text = unit(4, 12, seed=1), unit(4, 12, seed=2)
    mask = torch.tensor([True, False, True, False])
    t, noise = torch.tensor([5, 50, 300, 900]), torch.randn(4, 12)
    out = tiny_bridge(audio_embeds=audio, text_embeds=text, audio_mask=mask, timesteps=t, noise=noise)
    assert out.audio_prediction.shape == (2, 12)
    garbage = audio.clone()
    garbage[~mask] = 7.0  # rows without audio are never read
    again = tiny_bridge(audio_embeds=garbage, text_embeds=text, audio_mask=mask, timesteps=t, noise=noise)
    torch.testing.assert_close(out.loss, again.loss)


def test_training_timesteps_respect_max_train_timestep(tiny_bridge_config):
    config = DiffusionLinkConfig(**{**tiny_bridge_config.to_dict(), "max_train_timestep": 3})
    bridge = DiffusionLinkBridge(config)
    seen = []
    bridge.denoiser.register_forward_hook(lambda m, args, out: seen.append(args[1]))
    bridge(text_embeds=unit(64, 12))
    assert int(seen[0].max()) < 3


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"audio_embeds": unit(3, 12)}, ValueError, "text_embeds"),
        ({"text_embeds": unit(3, 11)}, ValueError, r"\(batch, 12\), got \(3, 11\)"),
        ({"text_embeds": unit(3, 12), "audio_embeds": unit(2, 12)}, ValueError, "2 rows"),
        ({"text_embeds": torch.full((2, 12), float("nan"))}, ValueError, "NaN"),
        ({"text_embeds": [[0.0] * 12]}, TypeError, "torch.Tensor"),
        ({"text_embeds": unit(3, 12), "timesteps": torch.tensor([1, 2])}, ValueError, "timesteps"),
        ({"text_embeds": unit(3, 12), "audio_mask": torch.ones(3, dtype=torch.bool)}, ValueError, "audio_mask"),
    ],
)
def test_forward_rejects_bad_input(tiny_bridge, kwargs, error, message):
    with pytest.raises(error, match=message):
        tiny_bridge(**kwargs)


def test_a_few_optimiser_steps_reduce_the_loss(tiny_bridge_config):
    torch.manual_seed(0)
    bridge = DiffusionLinkBridge(tiny_bridge_config)
    audio, text = unit(32, 12, seed=1), unit(32, 12, seed=2)
    bridge.fit_normalization(text)
    opt = torch.optim.AdamW([p for p in bridge.parameters() if p.requires_grad], lr=3e-3)
    t, noise = torch.randint(0, 1000, (32,), generator=torch.Generator().manual_seed(0)), torch.randn(32, 12)
    first = bridge(audio_embeds=audio, text_embeds=text, timesteps=t, noise=noise).loss.item()
    for _ in range(60):
        loss = bridge(audio_embeds=audio, text_embeds=text, timesteps=t, noise=noise).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        bridge.update_ema()
    last = bridge(audio_embeds=audio, text_embeds=text, timesteps=t, noise=noise).loss.item()
    assert last < 0.5 * first
    assert int(bridge.ema_num_updates) == 60


def test_ema_update_follows_the_warmed_up_decay(tiny_bridge):
    before = [p.clone() for p in tiny_bridge.ema_denoiser.parameters()]
    weights = list(tiny_bridge.denoiser.parameters())
    tiny_bridge.update_ema()  # first update: decay = min(0.995, 1/10)
    for old, new, w in zip(before, tiny_bridge.ema_denoiser.parameters(), weights):
        torch.testing.assert_close(new, 0.1 * old + 0.9 * w)
    tiny_bridge.ema_num_updates.fill_(10_000)  # warm: decay = 0.995
    before = [p.clone() for p in tiny_bridge.ema_denoiser.parameters()]
    tiny_bridge.update_ema()
    for old, new, w in zip(before, tiny_bridge.ema_denoiser.parameters(), weights):
        torch.testing.assert_close(new, 0.995 * old + 0.005 * w)


# ---------------------------------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("standardization", ["per_dim", "scalar"])
def test_fit_normalization_standardises_text(tiny_bridge_config, standardization):
    config = DiffusionLinkConfig(**{**tiny_bridge_config.to_dict(), "standardization": standardization})
    bridge = DiffusionLinkBridge(config)
    text = F.normalize(unit(500, 12) + torch.linspace(-1, 1, 12), dim=-1)
    bridge.fit_normalization(text)
    z = bridge.normalize(text)
    torch.testing.assert_close(z.mean(0), torch.zeros(12), atol=1e-5, rtol=0)
    if standardization == "per_dim":
        torch.testing.assert_close(z.std(0), torch.ones(12), atol=1e-4, rtol=0)
    else:
        assert len(set(bridge.embed_std.tolist())) == 1
    torch.testing.assert_close(bridge.denormalize(z), text, atol=1e-5, rtol=0)


def test_normalisation_statistics_are_saved_with_the_weights(tiny_bridge, tmp_path):
    tiny_bridge.fit_normalization(F.normalize(unit(50, 12) + 0.5, dim=-1))
    tiny_bridge.save_pretrained(tmp_path)
    loaded = DiffusionLinkBridge.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.embed_mean, tiny_bridge.embed_mean)
    torch.testing.assert_close(loaded.embed_std, tiny_bridge.embed_std)


# ---------------------------------------------------------------------------------------------------- inference
def test_link_timesteps_follow_the_trailing_ddim_recipe(tiny_bridge):
    assert tiny_bridge.link_timesteps() == [99, 79, 59, 39, 19]
    # The documented diffusers recipe: trailing spacing, set_timesteps(T // (s* // k)), keep t < s*.
    ddim = DDIMScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
    for s_star, k in [(100, 5), (25, 5), (50, 5), (200, 5), (100, 1), (100, 2), (100, 10)]:
        ddim.set_timesteps(1000 // (s_star // k))
        expected = [int(t) for t in ddim.timesteps if t < s_star]
        assert tiny_bridge.link_timesteps(s_star / 1000, k) == expected
    # Schedules diffusers' spacing cannot express still land evenly on x0 (the Diffusion Bridge peer: 599, 5 steps).
    assert tiny_bridge.link_timesteps(0.6, 5) == [599, 479, 359, 239, 119]
    assert tiny_bridge.link_timesteps(0.4, 5) == [399, 319, 239, 159, 79]


def test_ddim_update_equals_diffusers_step():
    ddim = DDIMScheduler(
        num_train_timesteps=1000, prediction_type="sample", clip_sample=False, timestep_spacing="trailing"
    )
    ddim.set_timesteps(50)
    sample, x0 = torch.randn(4, 12), torch.randn(4, 12)
    for t in [99, 79, 19]:
        expected = ddim.step(x0, t, sample).prev_sample
        torch.testing.assert_close(ddim_step(ddim.alphas_cumprod, x0, t, t - 20, sample), expected)


def test_link_equals_a_loop_over_diffusers_ddim_where_diffusers_can_express_the_schedule(tiny_bridge):
    # s* = 100 in 5 steps is diffusers' "trailing" spacing cut below s*: link() must be that DDIM loop, number for number.
    ddim = DDIMScheduler(num_train_timesteps=1000, prediction_type="sample", clip_sample=False, set_alpha_to_one=True,
                         timestep_spacing="trailing")
    ddim.set_timesteps(1000 // (100 // 5))
    timesteps = [int(t) for t in ddim.timesteps if t < 100]
    x = unit(3, 12)
    noise = torch.randn(3, 12, generator=torch.Generator().manual_seed(0))
    latents = ddim.add_noise(tiny_bridge.normalize(x), noise, torch.full((3,), timesteps[0]))
    with torch.no_grad():
        for t in timesteps:
            x0 = tiny_bridge.predict_x0(latents, torch.tensor([t]), tiny_bridge.ema_denoiser)
            latents = ddim.step(x0, t, latents).prev_sample
    expected = tiny_bridge.denormalize(latents)
    linked = tiny_bridge.link(x, strength=0.1, num_inference_steps=5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(linked, expected)


def test_link_golden_sum(tiny_bridge_config):
    # As diffusers pins scheduler loops: a full link() of a seeded tiny bridge gives a fixed number.
    torch.manual_seed(0)
    bridge = DiffusionLinkBridge(tiny_bridge_config)
    with torch.no_grad():
        for p in bridge.ema_denoiser.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    out = bridge.link(unit(3, 12), generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 12)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    assert abs(out.sum().item() - GOLDEN_LINK_SUM) < 1e-4, out.sum().item()


GOLDEN_LINK_SUM = 1.9372801780700684


def test_link_is_deterministic_and_batch_invariant(tiny_bridge):
    x, y = unit(1, 12, seed=1), unit(7, 12, seed=2)
    alone = tiny_bridge.link(x)
    first = tiny_bridge.link(torch.cat([x, y]))
    last = tiny_bridge.link(torch.cat([y, x]))
    torch.testing.assert_close(first[:1], alone, atol=1e-6, rtol=0)
    torch.testing.assert_close(last[-1:], alone, atol=1e-6, rtol=0)
    torch.testing.assert_close(tiny_bridge.link(x), alone, atol=0, rtol=0)
    # 1-D input gives 1-D output.
    torch.testing.assert_close(tiny_bridge.link(x[0]), alone[0], atol=1e-6, rtol=0)


def test_rows_get_independent_noise_without_a_generator(tiny_bridge):
    seen = []
    original = tiny_bridge._link_noise
    tiny_bridge._link_noise = lambda embeds, gen: seen.append(original(embeds, gen)) or seen[-1]
    tiny_bridge.link(unit(64, 12))
    noise = seen[0]
    # Rows are distinct draws: their pairwise cosines look like those of independent Gaussians.
    cos = F.normalize(noise, dim=-1) @ F.normalize(noise, dim=-1).T
    assert cos.fill_diagonal_(0).abs().max() < 0.9
    assert abs(noise.mean().item()) < 0.1 and abs(noise.std().item() - 1) < 0.1


def test_link_follows_the_generator(tiny_bridge):
    x = unit(4, 12)
    a = tiny_bridge.link(x, generator=torch.Generator().manual_seed(1))
    b = tiny_bridge.link(x, generator=torch.Generator().manual_seed(1))
    c = tiny_bridge.link(x, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.allclose(a, c)
    per_row = tiny_bridge.link(x, generator=[torch.Generator().manual_seed(i) for i in range(4)])
    assert per_row.shape == (4, 12)
    with pytest.raises(ValueError, match="3 generators for a batch of 4"):
        tiny_bridge.link(x, generator=[torch.Generator()] * 3)


def test_link_uses_ema_weights_unless_configured_otherwise(tiny_bridge):
    x = unit(3, 12)
    ema = tiny_bridge.link(x)
    tiny_bridge.config.inference_weights = "raw"
    raw = tiny_bridge.link(x)
    assert not torch.allclose(ema, raw)
    tiny_bridge.ema_denoiser.load_state_dict(tiny_bridge.denoiser.state_dict())
    tiny_bridge.config.inference_weights = "ema"
    torch.testing.assert_close(tiny_bridge.link(x), raw)


def test_inserted_start_adds_no_noise(tiny_bridge):
    tiny_bridge.config.link_start = "inserted"
    x = unit(3, 12)
    a = tiny_bridge.link(x, generator=torch.Generator().manual_seed(1))
    b = tiny_bridge.link(x, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_link_does_not_change_train_mode(tiny_bridge):
    tiny_bridge.train()
    tiny_bridge.link(unit(2, 12))
    assert tiny_bridge.training and tiny_bridge.ema_denoiser.training


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        ((unit(2, 11),), {}, ValueError, r"audio_embeds.*\(batch, 12\), got \(2, 11\)"),
        ((unit(2, 3, 12),), {}, ValueError, "audio_embeds"),
        ((torch.empty(0, 12),), {}, ValueError, "empty"),
        ((torch.full((2, 12), float("nan")),), {}, ValueError, "NaN"),
        ((torch.full((2, 12), float("inf")),), {}, ValueError, "Inf"),
        ((torch.ones(2, 12, dtype=torch.long),), {}, TypeError, "floating"),
        ((unit(2, 12).numpy(),), {}, TypeError, "torch.Tensor"),
        ((unit(2, 12),), {"strength": 0.0}, ValueError, r"strength.*\(0, 1\]"),
        ((unit(2, 12),), {"strength": 1.01}, ValueError, "strength"),
        ((unit(2, 12),), {"num_inference_steps": 0}, ValueError, "num_inference_steps"),
        ((unit(2, 12),), {"strength": 0.003, "num_inference_steps": 5}, ValueError, "larger than s"),
    ],
)
def test_link_rejects_bad_input(tiny_bridge, args, kwargs, error, message):
    with pytest.raises(error, match=message):
        tiny_bridge.link(*args, **kwargs)


def test_full_strength_is_allowed(tiny_bridge):
    assert tiny_bridge.link_timesteps(1.0, 5) == [999, 799, 599, 399, 199]
    assert torch.isfinite(tiny_bridge.link(unit(2, 12), strength=1.0)).all()


# ---------------------------------------------------------------------------------------------------- save / load
def test_save_load_gives_identical_link(tiny_bridge, tmp_path):
    x = unit(4, 12)
    expected = tiny_bridge.link(x, generator=torch.Generator().manual_seed(3))
    tiny_bridge.save_pretrained(tmp_path)
    loaded = DiffusionLinkBridge.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.link(x, generator=torch.Generator().manual_seed(3)), expected, atol=0, rtol=0)
    auto = AutoModel.from_pretrained(tmp_path)
    assert isinstance(auto, DiffusionLinkBridge)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "diffusion_link"
    # from_pretrained re-creates parameters; the EMA must be frozen again.
    assert not any(p.requires_grad for p in loaded.ema_denoiser.parameters())
    assert all(p.requires_grad for p in loaded.denoiser.parameters())


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_every_beta_schedule_survives_save_and_load(tiny_bridge_config, tmp_path, beta_schedule):
    # from_pretrained builds the model on the meta device; the schedulers' tables must still hold numbers.
    torch.manual_seed(0)
    bridge = DiffusionLinkBridge(DiffusionLinkConfig(**{**tiny_bridge_config.to_diff_dict(), "beta_schedule": beta_schedule})).eval()
    x = unit(4, 12)
    expected = bridge.link(x, generator=torch.Generator().manual_seed(3))
    bridge.save_pretrained(tmp_path)
    loaded = DiffusionLinkBridge.from_pretrained(tmp_path)
    assert loaded.noise_scheduler.alphas_cumprod.device.type == "cpu"
    torch.testing.assert_close(loaded.link(x, generator=torch.Generator().manual_seed(3)), expected, atol=0, rtol=0)


@pytest.mark.integration  # a fresh Python process
def test_saved_folder_loads_with_remote_code_in_a_fresh_process(tiny_bridge, tmp_path):
    x = unit(4, 12)
    expected = tiny_bridge.link(x, generator=torch.Generator().manual_seed(3))
    tiny_bridge.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_diffusion_link.DiffusionLinkBridge"
    copied = shutil.copytree(tmp_path / "saved", tmp_path / "elsewhere" / "bridge")
    torch.save({"x": x, "expected": expected}, tmp_path / "io.pt")
    out = run_python(
        "import sys; sys.modules['diffusion_link'] = None  # the package must not be needed\n"
        "import torch\n"
        "from transformers import AutoModel\n"
        f"io = torch.load({str(tmp_path / 'io.pt')!r}, weights_only=True)\n"
        f"model = AutoModel.from_pretrained({str(copied)!r}, trust_remote_code=True)\n"
        "got = model.link(io['x'], generator=torch.Generator().manual_seed(3))\n"
        "print(type(model).__module__.startswith('transformers_modules'), torch.equal(got, io['expected']))\n",
        cwd=str(tmp_path),
    )
    assert out.split()[-2:] == ["True", "True"], out


def test_linear_audio_adapter_is_the_ridge_map_and_travels_with_the_weights(tiny_bridge_config, tmp_path):
    from diffusion_link import LinearMapBridge

    g = torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(60, 12, generator=g), dim=-1)
    audio = F.normalize(text @ torch.linalg.qr(torch.randn(12, 12, generator=g))[0] + 0.3, dim=-1)
    config = DiffusionLinkConfig(**{**tiny_bridge_config.to_diff_dict(), "audio_adapter": "linear"})
    bridge = DiffusionLinkBridge(config).eval()
    bridge.fit_normalization(text)
    bridge.fit_audio_adapter(audio, text)
    torch.testing.assert_close(bridge.adapt_audio(audio), LinearMapBridge(12).fit(audio, text).link(audio))
    assert bridge(audio_embeds=audio[:8], text_embeds=text[:8]).loss.isfinite()
    expected = bridge.link(audio[:5])
    bridge.save_pretrained(tmp_path)
    loaded = DiffusionLinkBridge.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.adapter_weight, bridge.adapter_weight)
    torch.testing.assert_close(loaded.link(audio[:5]), expected, rtol=0, atol=0)
    plain = DiffusionLinkBridge(tiny_bridge_config)
    assert not hasattr(plain, "adapter_weight")  # the paper's bridge keeps its exact weight keys
    with pytest.raises(ValueError, match="audio_adapter"):
        plain.fit_audio_adapter(audio, text)
    with pytest.raises(ValueError, match="audio_adapter"):
        DiffusionLinkConfig(audio_adapter="mlp")
