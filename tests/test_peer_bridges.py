import pytest
import torch
import torch.nn.functional as F

from diffusion_link import DiffusionLinkBridge, IdentityBridge, MeanShiftBridge, text_only_diffusion_config


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_identity_returns_its_input_and_accepts_the_diffusion_knobs():
    x = unit(3, 8)
    out = IdentityBridge().link(x, strength=0.5, num_inference_steps=2, generator=torch.Generator())
    assert out is x
    with pytest.raises(TypeError, match="torch.Tensor"):
        IdentityBridge().link([1.0, 2.0])


def test_mean_shift_moves_the_audio_centroid_onto_the_text_centroid():
    offset = torch.zeros(8)
    offset[0] = 2.0
    audio = F.normalize(unit(400, 8, seed=1) + offset, dim=-1)
    text = unit(300, 8, seed=2)
    bridge = MeanShiftBridge(8).fit(audio, text)
    torch.testing.assert_close(bridge.shift, text.mean(0) - audio.mean(0))
    shifted = bridge.link(audio)
    torch.testing.assert_close(shifted.norm(dim=-1), torch.ones(400))
    before = (audio.mean(0) - text.mean(0)).norm()
    after = (shifted.mean(0) - text.mean(0)).norm()
    assert after < 0.25 * before


def test_mean_shift_without_renormalisation_is_an_exact_translation():
    audio, text = unit(50, 8, seed=1) * 3, unit(60, 8, seed=2)
    bridge = MeanShiftBridge(8, output_normalization="none").fit(audio, text)
    torch.testing.assert_close(bridge.link(audio).mean(0), text.mean(0))


def test_mean_shift_state_is_a_buffer():
    bridge = MeanShiftBridge(8).fit(unit(10, 8, seed=1), unit(10, 8, seed=2))
    assert "shift" in bridge.state_dict()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"embedding_dim": 8, "output_normalization": "l1"}, "output_normalization"),
    ],
)
def test_mean_shift_config_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MeanShiftBridge(**kwargs)


def test_mean_shift_rejects_bad_embeddings():
    bridge = MeanShiftBridge(8)
    with pytest.raises(ValueError, match=r"\(batch, 8\)"):
        bridge.fit(unit(4, 7), unit(4, 8))
    with pytest.raises(ValueError, match="NaN"):
        bridge.link(torch.full((2, 8), float("nan")))


def test_text_only_diffusion_peer_inserts_audio_at_t599_without_noise():
    config = text_only_diffusion_config(embedding_dim=8, hidden_size=16)
    assert config.beta_schedule == "squaredcos_cap_v2" and config.link_start == "inserted"
    bridge = DiffusionLinkBridge(config)
    assert bridge.link_timesteps() == [599, 479, 359, 239, 119]
    # It trains on text alone.
    out = bridge(text_embeds=unit(4, 8))
    assert out.audio_prediction is None and torch.isfinite(out.loss)
    x = unit(2, 8)
    torch.testing.assert_close(
        bridge.link(x, generator=torch.Generator().manual_seed(0)),
        bridge.link(x, generator=torch.Generator().manual_seed(1)),
    )


@pytest.mark.parametrize("make", [IdentityBridge, lambda: MeanShiftBridge(8), lambda: DiffusionLinkBridge(
    text_only_diffusion_config(embedding_dim=8, hidden_size=16))])
def test_every_peer_shares_the_link_interface(make):
    bridge = make()
    out = bridge.link(unit(3, 8), strength=0.6, num_inference_steps=3, generator=None)
    assert out.shape == (3, 8)


def test_caption_memory_projects_onto_the_captions():
    from diffusion_link import CaptionMemoryBridge

    memory = unit(20, 8, seed=3)
    bridge = CaptionMemoryBridge(8).fit(memory * 2.0)  # stored L2-normalised
    torch.testing.assert_close(bridge.memory, memory)
    # An embedding close to one caption is mapped (almost) onto it; the output is a unit vector.
    near = F.normalize(memory[5] + 0.05 * unit(1, 8, seed=4)[0], dim=-1)[None]
    out = bridge.link(near, strength=0.3, num_inference_steps=2)
    assert out.shape == (1, 8) and torch.allclose(out.norm(dim=-1), torch.ones(1))
    assert float(out[0] @ memory[5]) > 0.99
    # The mix is the softmax of the cosines at the temperature (DeCap), and rows do not interact.
    x = unit(3, 8, seed=5)
    expected = F.normalize(((x @ memory.T) / 0.01).softmax(-1) @ memory, dim=-1)
    torch.testing.assert_close(bridge.link(x), expected)
    torch.testing.assert_close(bridge.link(x[1:2]), bridge.link(x)[1:2])


def test_caption_memory_top_k_mixes_only_the_nearest():
    from diffusion_link import CaptionMemoryBridge

    memory = unit(30, 8, seed=6)
    x = unit(4, 8, seed=7)
    out = CaptionMemoryBridge(8, temperature=1.0, top_k=1).fit(memory).link(x)
    torch.testing.assert_close(out, memory[(x @ memory.T).argmax(-1)])  # k=1: the nearest caption itself
    wide = CaptionMemoryBridge(8, temperature=1.0, top_k=30).fit(memory).link(x)
    torch.testing.assert_close(wide, CaptionMemoryBridge(8, temperature=1.0).fit(memory).link(x))


def test_caption_memory_rejects_bad_input():
    from diffusion_link import CaptionMemoryBridge

    with pytest.raises(ValueError, match="empty memory"):
        CaptionMemoryBridge(8).link(unit(2, 8))
    with pytest.raises(ValueError, match="temperature"):
        CaptionMemoryBridge(8, temperature=0.0)
    with pytest.raises(ValueError, match="top_k"):
        CaptionMemoryBridge(8, top_k=0)
    bridge = CaptionMemoryBridge(8).fit(unit(5, 8))
    with pytest.raises(ValueError, match=r"\(batch, 8\)"):
        bridge.link(unit(2, 9))
    with pytest.raises(ValueError, match="NaN"):
        bridge.link(torch.full((1, 8), float("nan")))


def test_linear_map_leave_one_out_error_equals_refitting_without_each_row():
    from diffusion_link import LinearMapBridge

    g = torch.Generator().manual_seed(0)
    audio, text = torch.randn(12, 5, generator=g), torch.randn(12, 5, generator=g)
    bridge = LinearMapBridge(5).fit(audio, text)
    a, t = torch.nn.functional.normalize(audio.double(), dim=-1), torch.nn.functional.normalize(text.double(), dim=-1)
    for lam in (1e-2, 1.0):
        errors = []
        for i in range(12):
            keep = torch.arange(12) != i
            held = LinearMapBridge(5, ridge=lam).fit(a[keep], t[keep])
            errors.append(float(((a[i].float() @ held.weight + held.bias) - t[i].float()).pow(2).sum()))
        assert abs(bridge.leave_one_out_errors[lam] - sum(errors) / 12) < 1e-4


def test_linear_map_recovers_a_rotation_held_out_and_beats_mean_shift():
    from diffusion_link import LinearMapBridge, MeanShiftBridge
    from diffusion_link.metrics import modality_gap

    g = torch.Generator().manual_seed(1)
    rotation = torch.linalg.qr(torch.randn(16, 16, generator=g))[0]
    offset = 0.5 * torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)

    def draw(n):
        text = torch.nn.functional.normalize(torch.randn(n, 16, generator=g), dim=-1)
        audio = torch.nn.functional.normalize(text @ rotation + offset + 0.05 * torch.randn(n, 16, generator=g), dim=-1)
        return audio, text

    audio, text = draw(400)
    held_audio, held_text = draw(200)
    linear = LinearMapBridge(16).fit(audio, text)
    shifted = MeanShiftBridge(16).fit(audio, text)
    assert linear.fitted_ridge in LinearMapBridge.RIDGE_GRID
    linear_cos = modality_gap(linear.link(held_audio), held_text)["paired_cosine"]
    assert linear_cos > 0.95 and linear_cos > modality_gap(shifted.link(held_audio), held_text)["paired_cosine"] + 0.3


def test_linear_map_bad_input():
    from diffusion_link import LinearMapBridge

    with pytest.raises(ValueError, match="ridge"):
        LinearMapBridge(4, ridge=0.0)
    with pytest.raises(ValueError, match="rows"):
        LinearMapBridge(4).fit(torch.randn(5, 4), torch.randn(6, 4))
    with pytest.raises(ValueError, match=r"\(batch, 4\)"):
        LinearMapBridge(4).link(torch.randn(2, 3))


def test_linear_map_treats_a_clip_with_several_captions_as_one_row():
    from diffusion_link import LinearMapBridge

    g = torch.Generator().manual_seed(2)
    audio, text = torch.randn(10, 6, generator=g), torch.randn(10, 6, generator=g)
    once = LinearMapBridge(6).fit(audio, text)
    thrice = LinearMapBridge(6).fit(audio.repeat_interleave(3, dim=0), text.repeat_interleave(3, dim=0))
    # Copies of a clip change neither the leave-one-out choice (a clip is left out whole) nor the fit.
    assert thrice.leave_one_out_errors == pytest.approx(once.leave_one_out_errors)
    torch.testing.assert_close(thrice.weight, once.weight, atol=1e-5, rtol=0)
