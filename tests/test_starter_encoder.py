import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffusion_link import StarterAudioTextEncoder, StarterEncoderConfig, StarterFeatureExtractor
from diffusion_link.starter.feature_extraction_starter_encoder import AISFX_SAMPLING_RATE, aisfx_log_mel


def tiny_config(**kw):
    text = dict(vocab_size=100, hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                max_position_embeddings=32)
    return StarterEncoderConfig(**{"text_config": text, "projection_dim": 24, "head_hidden_size": 16, **kw})


def test_aisfx_front_end_shape_and_range():
    rate = AISFX_SAMPLING_RATE
    tone = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(rate) / rate).astype(np.float32)
    mel = aisfx_log_mel(tone)
    assert mel.shape == (1 + rate // 1024, 96) and mel.dtype == np.float32
    assert 0.0 <= mel.min() and mel.max() < 1.5
    # A 1 kHz tone puts its energy in one band region; peak normalisation makes the level irrelevant.
    np.testing.assert_allclose(aisfx_log_mel(0.01 * tone), mel, atol=1e-4)
    assert np.argmax(mel[10]) == np.argmax(aisfx_log_mel(tone)[20])
    assert aisfx_log_mel(np.zeros(rate, dtype=np.float32)).max() == 0.0


def test_feature_extractor_pads_and_masks():
    fe = StarterFeatureExtractor()
    short, long = np.random.default_rng(0).standard_normal((2, 3 * AISFX_SAMPLING_RATE)).astype(np.float32)
    out = fe([short[: AISFX_SAMPLING_RATE], long], return_tensors="pt")
    assert out["input_features"].shape == (2, 1 + 3 * AISFX_SAMPLING_RATE // 1024, 96)
    assert out["attention_mask"][0].sum() == 1 + AISFX_SAMPLING_RATE // 1024 and out["attention_mask"][1].all()
    assert fe.nb_max_samples == 10 * AISFX_SAMPLING_RATE
    with pytest.raises(ValueError, match="44100 Hz"):
        fe([short], sampling_rate=16000)


def test_config_validation():
    with pytest.raises(ValueError, match="projection_dim must be 24"):
        tiny_config().__class__(text_config=tiny_config().text_config, projection_dim=32)
    with pytest.raises(ValueError, match="text_projection"):
        tiny_config(text_projection="linear")


def test_embeddings_are_batch_independent_and_normalised():
    torch.manual_seed(0)
    model = StarterAudioTextEncoder(tiny_config()).eval()
    fe = StarterFeatureExtractor()
    clips = [np.random.default_rng(i).standard_normal(int(s * AISFX_SAMPLING_RATE)).astype(np.float32)
             for i, s in enumerate((1.0, 4.0, 6.5))]
    batch = fe(clips, return_tensors="pt")
    with torch.no_grad():
        together = model.get_audio_features(batch["input_features"], batch["attention_mask"])
        alone = [model.get_audio_features(**{k: v for k, v in fe([c], return_tensors="pt").items()
                                             if k == "input_features"}) for c in clips]
    assert together.shape == (3, 24)
    torch.testing.assert_close(together.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-5, rtol=0)
    text = model.get_text_features(torch.tensor([[1, 5, 7, 2, 0]]), torch.tensor([[1, 1, 1, 1, 0]]))
    assert text.shape == (1, 24)


def test_contrastive_loss_trains_only_the_heads():
    torch.manual_seed(0)
    model = StarterAudioTextEncoder(tiny_config(text_projection="mlp", projection_dim=16))
    audio, text = torch.randn(8, 512), F.normalize(torch.randn(8, 24), dim=-1)
    out = model(audio_tower_embeds=audio, text_tower_embeds=text)
    assert out.logits_per_audio.shape == (8, 8) and out.loss > 0
    out.loss.backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trained and all(n.startswith(("audio_projection.", "text_projection.", "logit_scale")) for n in trained)
    assert "audio_model.conv_block1.conv1.weight" not in trained and not model.audio_model.training


def test_saved_folder_holds_only_the_heads(tmp_path):
    model = StarterAudioTextEncoder(tiny_config())
    model.save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith(("audio_projection.", "logit_scale")) for k in keys)


def test_from_pretrained_loads_the_heads_strictly_and_honours_its_arguments(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    monkeypatch.setattr(StarterAudioTextEncoder, "load_bases", lambda self: None)  # the towers: real files, not here
    torch.manual_seed(0)
    model = StarterAudioTextEncoder(tiny_config())
    model.save_pretrained(tmp_path / "repo" / "encoder")
    loaded = StarterAudioTextEncoder.from_pretrained(tmp_path / "repo", subfolder="encoder", local_files_only=True)
    for key, value in model.head_state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    assert StarterAudioTextEncoder.from_pretrained(tmp_path / "repo" / "encoder", dtype=torch.float64).logit_scale.dtype == torch.float64
    with pytest.raises(TypeError, match="device_mapp"):
        StarterAudioTextEncoder.from_pretrained(tmp_path / "repo" / "encoder", device_mapp="cpu")
    weights = tmp_path / "repo" / "encoder" / "model.safetensors"
    state = load_file(weights)
    save_file({**state, "text_model.extra": torch.zeros(1)}, weights)
    with pytest.raises(ValueError, match=r"model\.safetensors.*unexpected \(1\) \['text_model\.extra'\]"):
        StarterAudioTextEncoder.from_pretrained(tmp_path / "repo" / "encoder")
    with pytest.raises(ValueError, match="expected a 'diffusion_link_starter_encoder'"):
        StarterAudioTextEncoder.from_pretrained(tmp_path / "repo")  # no config.json there


def test_the_inference_net_folds_batch_norm_and_computes_the_same_function():
    from diffusion_link.starter.modeling_starter_encoder import AiSFXEmbeddingNet

    torch.manual_seed(0)
    net = AiSFXEmbeddingNet().eval()
    for module in net.modules():  # pretrained-like statistics, so folding has something to fold
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    blocks = torch.rand(3, 100, 96)
    with torch.no_grad():
        before = net(blocks)
        fast = net.for_inference()
        after = fast(blocks)
    assert fast is net and not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert net.conv_block2.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    net.for_inference()  # again: nothing left to fold, the same function
    torch.testing.assert_close(net(blocks), after, atol=0, rtol=0)
