import io
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import pipeline

import diffusion_link  # noqa: F401  (registers the task)
from diffusion_link import AudioCaptionPipeline
from diffusion_link.audio_io import AudioDecodeError, prepare_audio, window_bounds

from .conftest import run_python, write_wav


RATE = 48000  # the tiny CLAP feature extractor's rate


def noise(seconds=2.0, rate=RATE, seed=0, amplitude=0.1):
    return (amplitude * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


def tone(freq, seconds=2.0, rate=RATE):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def pipe():
    from diffusion_link.testing import tiny_captioner

    return tiny_captioner(seed=0)


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-captioner")
    pipe.save_pretrained(folder)
    return folder


def caption(pipe, x, **kw):
    return pipe(x, sampling_rate=RATE, max_new_tokens=8, **kw)["generated_text"]


# ---------------------------------------------------------------------------------------------------- loading
@pytest.mark.integration  # a fresh Python process
def test_fresh_process_captions_a_file_an_array_and_a_batch(saved, tmp_path):
    wav = write_wav(tmp_path / "clip.wav", seconds=2.0, rate=44100)
    code = (
        "import json, numpy as np\n"
        "import diffusion_link\n"
        "from transformers import pipeline\n"
        f"pipe = pipeline('audio-captioning', model={str(saved)!r})\n"
        "x = (0.1 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32)\n"
        f"out = [pipe({wav!r}, max_new_tokens=8), pipe(x, sampling_rate=16000, max_new_tokens=8),\n"
        f"       pipe([{wav!r}, {{'array': x, 'sampling_rate': 16000}}], batch_size=2, max_new_tokens=8)]\n"
        "print(json.dumps(out))\n"
    )
    file_out, array_out, batch_out = json.loads(run_python(code).splitlines()[-1])
    for out in (file_out, array_out, *batch_out):
        assert isinstance(out["generated_text"], str) and out["generated_text"] and out["is_silent"] is False
    assert file_out["sampling_rate"] == 44100 and file_out["duration_s"] == 2.0
    assert array_out["sampling_rate"] == 16000
    assert batch_out[0] == file_out and batch_out[1] == array_out


@pytest.mark.integration  # a fresh Python process
def test_copied_folder_works_with_remote_code_only(saved, tmp_path):
    copied = shutil.copytree(saved, tmp_path / "elsewhere" / "captioner")
    wav = write_wav(tmp_path / "clip.wav")
    local = pipeline("audio-captioning", model=str(saved))(wav, max_new_tokens=8)
    code = (
        "import sys, json; sys.modules['diffusion_link'] = None  # the package must not be needed\n"
        "from transformers import pipeline\n"
        f"pipe = pipeline('audio-captioning', model={str(copied)!r}, trust_remote_code=True)\n"
        f"print(type(pipe).__module__.startswith('transformers_modules'), json.dumps(pipe({wav!r}, max_new_tokens=8)))\n"
    )
    flag, result = run_python(code).splitlines()[-1].split(" ", 1)
    assert flag == "True" and json.loads(result) == local


def test_registered_task_and_saved_code(saved):
    config = json.loads((saved / "config.json").read_text())
    assert config["custom_pipelines"]["audio-captioning"]["impl"] == "pipeline_audio_captioning.AudioCaptionPipeline"
    for name in ("pipeline_audio_captioning.py", "audio_io.py", "modeling_diffusion_link_captioner.py",
                 "tokenizer.json", "preprocessor_config.json"):
        assert (saved / name).exists(), name
    assert isinstance(pipeline("audio-captioning", model=str(saved)), AudioCaptionPipeline)


# ---------------------------------------------------------------------------------------------------- inputs
def test_every_input_form_gives_the_same_caption(pipe, tmp_path):
    x = noise()
    expected = caption(pipe, x)
    path = tmp_path / "x.wav"
    sf.write(path, x, RATE, subtype="FLOAT")
    buffer = io.BytesIO()
    sf.write(buffer, x, RATE, format="WAV", subtype="FLOAT")
    assert pipe(str(path), max_new_tokens=8)["generated_text"] == expected
    assert pipe(buffer.getvalue(), max_new_tokens=8)["generated_text"] == expected
    assert pipe({"array": x, "sampling_rate": RATE}, max_new_tokens=8)["generated_text"] == expected
    assert pipe(torch.from_numpy(x), sampling_rate=RATE, max_new_tokens=8)["generated_text"] == expected


def test_array_without_sampling_rate_is_refused(pipe):
    with pytest.raises(ValueError, match="sampling rate.*never guessed"):
        pipe(noise())
    with pytest.raises(ValueError, match="sampling rate"):
        pipe({"array": noise()})


def test_any_rate_is_resampled_to_the_encoder_rate():
    audio = prepare_audio(noise(1.0, rate=8000), RATE, sampling_rate=8000)
    assert audio.sampling_rate == 8000 and audio.target_rate == RATE and len(audio.waveform) == RATE
    audio = prepare_audio(noise(1.0, rate=96000), RATE, sampling_rate=96000)
    assert len(audio.waveform) == RATE


def test_any_rate_is_captioned(pipe):
    for rate in (8000, 22050, 96000):
        out = pipe(noise(1.5, rate=rate), sampling_rate=rate, max_new_tokens=8)
        assert out["sampling_rate"] == rate and out["duration_s"] == 1.5 and out["generated_text"]


def test_stereo_is_averaged_to_mono(pipe):
    left, right = noise(seed=1), noise(seed=2)
    stereo = np.stack([left, right], axis=1)  # (samples, channels)
    out = pipe(stereo, sampling_rate=RATE, max_new_tokens=8)
    assert out["num_channels"] == 2
    assert out["generated_text"] == caption(pipe, (left + right) / 2)
    channels_first = pipe(stereo.T, sampling_rate=RATE, max_new_tokens=8)
    assert channels_first == out
    np.testing.assert_allclose(prepare_audio(stereo, RATE, RATE).waveform, (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_inf_are_refused(pipe, bad):
    x = noise()
    x[100] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        pipe(x, sampling_rate=RATE)


def test_integer_pcm_is_converted(pipe):
    x = noise()
    pcm = np.round(x * 32767).astype(np.int16)
    np.testing.assert_allclose(prepare_audio(pcm, RATE, RATE).waveform, pcm / 32768.0, atol=1e-7)
    assert caption(pipe, pcm) == caption(pipe, pcm.astype(np.float32) / 32768.0)


@pytest.mark.parametrize("samples", [0, 1, 100])
def test_empty_or_near_empty_audio_is_refused(pipe, samples):
    with pytest.raises(ValueError, match=r"at least 0.1 s"):
        pipe(np.zeros(samples, dtype=np.float32) + 0.1, sampling_rate=RATE)


def test_silence_is_flagged_not_captioned(pipe):
    out = pipe(np.zeros(RATE, dtype=np.float32), sampling_rate=RATE)
    assert out["is_silent"] is True and out["generated_text"] == "" and out["peak_dbfs"] == float("-inf")
    quiet = pipe(noise(amplitude=1e-4), sampling_rate=RATE)  # -80 dBFS hiss
    assert quiet["is_silent"] is True and quiet["generated_text"] == ""
    assert pipe(noise(amplitude=1e-4), sampling_rate=RATE, silence_threshold_db=-100)["is_silent"] is False


def test_corrupt_and_missing_files_are_named(pipe, tmp_path):
    corrupt = tmp_path / "broken.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 4)
    with pytest.raises(AudioDecodeError, match="broken.wav"):
        pipe(str(corrupt))
    with pytest.raises(FileNotFoundError, match="nowhere.wav"):
        pipe(str(tmp_path / "nowhere.wav"))


def test_unsupported_input_type_is_refused(pipe):
    with pytest.raises(TypeError, match="Unsupported audio input"):
        pipe(object(), sampling_rate=RATE)


def test_on_error_report_keeps_going(pipe, tmp_path):
    corrupt = tmp_path / "broken.wav"
    corrupt.write_bytes(b"not audio")
    out = pipe([noise(), str(corrupt), noise(seed=3)], sampling_rate=RATE, max_new_tokens=8, on_error="report")
    assert out[0]["generated_text"] == caption(pipe, noise()) and out[2]["generated_text"]
    assert "broken.wav" in out[1]["error"]
    with pytest.raises(ValueError, match="on_error"):
        pipe(noise(), sampling_rate=RATE, on_error="ignore")


# ---------------------------------------------------------------------------------------------------- long audio
def test_window_bounds_are_deterministic_and_lose_nothing():
    assert window_bounds(10, 1, 4) == [(0, 4), (4, 8), (8, 10)]
    assert window_bounds(10, 1, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert window_bounds(100, 100, 0.45) == [(0, 45), (45, 90), (90, 100)]
    assert window_bounds(1005, 100, 5) == [(0, 500), (500, 1005)]  # a 0.05 s tail joins the last window
    with pytest.raises(ValueError, match="stride_s"):
        window_bounds(10, 1, 4, 5)


def test_long_audio_gets_per_window_captions_with_timestamps(pipe):
    x = np.concatenate([noise(2.0, seed=1), tone(440, 2.0), np.zeros(2 * RATE, dtype=np.float32)])
    out = pipe(x, sampling_rate=RATE, chunk_length_s=2.0, max_new_tokens=8)
    assert [c["timestamp"] for c in out["chunks"]] == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]
    assert [c["is_silent"] for c in out["chunks"]] == [False, False, True]
    assert out["chunks"][0]["generated_text"] == caption(pipe, noise(2.0, seed=1))
    assert out["chunks"][2]["generated_text"] == "" and out["is_silent"] is False
    assert out == pipe(x, sampling_rate=RATE, chunk_length_s=2.0, max_new_tokens=8)  # deterministic
    overlapping = pipe(x, sampling_rate=RATE, chunk_length_s=2.0, stride_s=1.0, max_new_tokens=8)
    assert [c["timestamp"][0] for c in overlapping["chunks"]] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_audio_longer_than_the_encoder_window_is_not_truncated(pipe):
    long = np.concatenate([noise(10.0, seed=1), tone(3000, 10.0)])  # CLAP reads 10 s at a time
    first_half_only = caption(pipe, long[: 10 * RATE])
    out = pipe(long, sampling_rate=RATE, max_new_tokens=8)
    assert out["duration_s"] == 20.0
    assert out["generated_text"] != first_half_only or caption(pipe, long[10 * RATE:]) == first_half_only


# ---------------------------------------------------------------------------------------------------- behaviour
def test_batch_invariant_and_deterministic(pipe):
    x, y, z = noise(seed=1), tone(440), noise(seed=5, amplitude=0.3)
    alone = pipe(x, sampling_rate=RATE, max_new_tokens=8)
    assert pipe([x, y], sampling_rate=RATE, max_new_tokens=8)[0] == alone
    assert pipe([y, z, x], sampling_rate=RATE, max_new_tokens=8, batch_size=2)[2] == alone
    assert pipe([y, x], sampling_rate=RATE, max_new_tokens=8, batch_size=8)[1] == alone
    assert pipe(x, sampling_rate=RATE, max_new_tokens=8) == alone
    # The captions do depend on the audio, so the checks above are not vacuous.
    assert len({caption(pipe, a) for a in (x, y, z, tone(220), tone(3000))}) > 1


def test_generation_and_bridge_knobs_pass_through(pipe):
    x = noise()
    short = pipe(x, sampling_rate=RATE, max_new_tokens=2)["generated_text"]
    assert len(pipe.tokenizer(short, add_special_tokens=False).input_ids) <= 3
    assert pipe(x, sampling_rate=RATE, max_new_tokens=8, num_beams=3)["generated_text"]
    assert pipe(x, sampling_rate=RATE, max_new_tokens=8, strength=0.05, num_inference_steps=2)["generated_text"]
    with pytest.raises(ValueError, match="strength"):
        pipe(x, sampling_rate=RATE, strength=2.0)
    with pytest.raises(TypeError, match="temperture"):
        pipe(x, sampling_rate=RATE, temperture=0.5)


def test_prompt_of_the_config_is_used(tiny_parts):
    from diffusion_link.testing import tiny_captioner

    pipe = tiny_captioner(prompt="Describe the audio you hear.")
    assert pipe._prompt_ids.shape[1] > 0
    assert pipe.tokenizer.decode(pipe._prompt_ids[0]).strip() == "Describe the audio you hear."
    assert isinstance(caption(pipe, noise()), str)


@pytest.mark.parametrize("fmt, subtype", [("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")])
def test_compressed_formats_decode_without_ffmpeg(pipe, tmp_path, fmt, subtype):
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, noise(1.0, rate=44100), 44100, format=fmt, subtype=subtype)
    out = pipe(str(path), max_new_tokens=4)
    assert out["sampling_rate"] == 44100 and abs(out["duration_s"] - 1.0) < 0.1 and out["generated_text"]


def test_return_embeddings_gives_what_the_decoder_read(pipe):
    from diffusion_link.seeding import content_seed

    x = noise(seed=3)
    plain = pipe(x, sampling_rate=RATE)
    out = pipe([x, np.zeros(RATE, dtype=np.float32)], sampling_rate=RATE, return_embeddings=True)
    assert {k: v for k, v in out[0].items() if not k.endswith("_embeds")} == plain  # captions unchanged
    assert "audio_embeds" not in out[1] and out[1]["is_silent"]  # silence is never embedded
    wave = prepare_audio(x, pipe.feature_extractor.sampling_rate, sampling_rate=RATE).waveform
    raw = pipe.model.embed_audio(waveforms=[wave], feature_extractor=pipe.feature_extractor)
    torch.testing.assert_close(out[0]["audio_embeds"], raw[0], rtol=0, atol=0)
    bridged = pipe.model.link(raw, generator=[torch.Generator().manual_seed(content_seed(wave))])
    torch.testing.assert_close(out[0]["bridged_embeds"], bridged[0], rtol=0, atol=0)
    chunked = pipe(x, sampling_rate=RATE, chunk_length_s=0.5, return_embeddings=True)
    assert all(c["audio_embeds"].shape == raw[0].shape for c in chunked["chunks"])


def test_model_and_pipeline_embed_long_audio_the_same_way(pipe):
    """A waveform longer than the encoder's window: the model's `embed_audio(waveforms=...)` (what the pipeline
    calls) averages consecutive windows, deterministically; nothing past the first window is dropped."""
    fe = pipe.feature_extractor
    window = fe.nb_max_samples
    wave = np.concatenate([noise(window / fe.sampling_rate, rate=fe.sampling_rate, seed=4),
                           noise(1.0, rate=fe.sampling_rate, seed=5, amplitude=0.05)])
    wave = prepare_audio(wave, fe.sampling_rate, sampling_rate=fe.sampling_rate).waveform
    long = pipe.model.embed_audio(waveforms=[wave], feature_extractor=fe)
    pieces = pipe.model.embed_audio(waveforms=[wave[:window], wave[window:]], feature_extractor=fe)
    torch.testing.assert_close(long[0], torch.nn.functional.normalize(pieces.sum(0), dim=0), rtol=0, atol=1e-6)
    assert not torch.allclose(long[0], pieces[0])  # the tail counts
    out = pipe({"array": wave, "sampling_rate": fe.sampling_rate}, return_embeddings=True, max_new_tokens=2)
    torch.testing.assert_close(out["audio_embeds"], long[0], rtol=0, atol=1e-6)  # batches of 1 there, of 2 here
    with pytest.raises(ValueError, match="exactly one"):
        pipe.model.embed_audio()
    with pytest.raises(ValueError, match="feature_extractor"):
        pipe.model.embed_audio(waveforms=[wave])


def test_num_workers_is_refused_not_dropped(pipe):
    x = {"array": noise(seed=1), "sampling_rate": RATE}
    with pytest.raises(ValueError, match="num_workers=2"):
        pipe(x, num_workers=2)
    with pytest.raises(ValueError, match="num_workers=1"):
        pipe([x], num_workers=1)
    assert pipe(x, num_workers=0) == pipe(x)


def test_transformers_call_streams_generators_and_keeps_the_error_policy(pipe, tmp_path):
    xs = [{"array": noise(seed=s), "sampling_rate": RATE} for s in (4, 5, 6)]
    expected = [pipe(x) for x in xs]
    produced = []

    def inputs():
        for x in xs:
            produced.append(1)
            yield x

    results = pipe(inputs(), batch_size=1)
    assert not isinstance(results, list) and len(produced) <= 1  # an iterator (transformers peeks at the first)
    assert next(results) == expected[0] and len(produced) <= 2
    assert list(results) == expected[1:]
    assert pipe(tuple(xs), batch_size=2) == expected and pipe([]) == []
    bad = str(tmp_path / "gone.wav")
    report = pipe([xs[0], bad, xs[1]], batch_size=2, on_error="report")
    assert report[0] == expected[0] and report[2] == expected[1] and "gone.wav" in report[1]["error"]


def test_the_window_batcher_fills_model_calls_with_audible_windows_across_inputs(pipe, monkeypatch):
    sizes = []
    real = pipe._forward

    def recorded(model_inputs, **kwargs):
        sizes.append(sum(not w["is_silent"] for w in model_inputs["windows"]))
        return real(model_inputs, **kwargs)

    monkeypatch.setattr(pipe, "_forward", recorded)
    long = np.concatenate([noise(seconds=1.0, seed=7), np.zeros(RATE, np.float32), noise(seconds=1.0, seed=8)])
    out = pipe([noise(seed=9), long, noise(seed=10)], sampling_rate=RATE, batch_size=2, chunk_length_s=1.0)
    assert sizes == [2, 2, 2]  # 2 + 3 + 2 one-second windows, one silent: three calls of two audible windows
    assert [c["is_silent"] for c in out[1]["chunks"]] == [False, True, False]
