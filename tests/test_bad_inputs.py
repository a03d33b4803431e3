"""Bad input, systematically: generated files of every kind USERS.md lists, each with its asserted behaviour (the
exact exception and a message naming the file, or the flags of the result), the same set as one `on_error="report"`
batch, every format streamed exactly as decoded whole (MP3 included), embeddings too large or too small to normalise,
a one-hour file, and property-based checks of the validation and resampling in `audio_io`. Bad call *arguments* are
in `test_bad_arguments.py`.

Every other class of bad input has its own table-driven file, each listed with what it gets in `docs/reliability.md`:
command-line options (`test_cli_arguments.py`), result files (`test_result_files.py`), saved folders
(`test_bad_folders.py`), training runs (`test_bad_training_inputs.py`), Space folders (`test_space.py`), reference
files (`test_evaluation.py`), the web page (`test_web_demo.py`)."""

import json
import os
import re

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion_link.audio_io import (
    MIN_DURATION_S,
    STREAM_BLOCK_FRAMES,
    AudioDecodeError,
    open_audio_stream,
    prepare_audio,
    to_mono_float,
)
from diffusion_link.validation import check_embeddings

from .conftest import run_python


RATE = 44100
TOKENS = 4


def noise(seconds=1.0, rate=RATE, channels=1, amplitude=0.1, seed=0):
    rng = np.random.default_rng(seed)
    shape = (int(seconds * rate), channels) if channels > 1 else (int(seconds * rate),)
    return (amplitude * rng.standard_normal(shape)).astype(np.float32)


def write(path, samples, rate=RATE, subtype="PCM_16"):
    sf.write(path, samples, rate, subtype=subtype)


def truncated(path):
    write(path, noise())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut mid-data: the header still claims 1 s


def cut_in_header(path):
    write(path, noise())
    path.write_bytes(path.read_bytes()[:30])


def with_bad_samples(value):
    def make(path):
        samples = noise()
        samples[100:200] = value
        write(path, samples, subtype="FLOAT")

    return make


# name -> (how the file is made, what the package must do with it). Expected: an exception type and a message
# fragment (the file's path always comes first), or a dict of result fields.
CASES = {
    "corrupt": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)), (AudioDecodeError, "Format not recognised")),
    "empty": (lambda p: p.write_bytes(b""), (AudioDecodeError, "Format not recognised")),
    "cut-in-header": (cut_in_header, (AudioDecodeError, "data' chunk")),
    "zero-frames": (lambda p: write(p, np.zeros(0, np.float32)), (ValueError, "audio is 0 samples")),
    "zero-frames-stereo": (lambda p: write(p, np.zeros((0, 2), np.float32)), (ValueError, "audio is 0 samples")),
    "few-samples": (lambda p: write(p, noise(0.001)), (ValueError, "at least 0.1 s")),
    "nan": (with_bad_samples(np.nan), (ValueError, "NaN or Inf")),
    "inf": (with_bad_samples(np.inf), (ValueError, "NaN or Inf")),
    # libsndfile reads the frames that are there: the intact half is captioned, with its real duration.
    "truncated": (truncated, {"is_silent": False, "duration_s": 0.5, "sampling_rate": RATE}),
    "silent": (lambda p: write(p, np.zeros(RATE, np.float32)),
               {"is_silent": True, "generated_text": "", "peak_dbfs": float("-inf")}),
    # Saturated at +-1.0: still captioned; the peak is that of the input (0 dBFS), not of the resampled overshoot.
    "clipped": (lambda p: write(p, np.clip(noise() * 100, -1, 1), subtype="FLOAT"), {"is_silent": False, "peak_dbfs": 0.0}),
    "stereo": (lambda p: write(p, noise(channels=2)), {"is_silent": False, "num_channels": 2, "duration_s": 1.0}),
    "8khz": (lambda p: write(p, noise(rate=8000), 8000), {"is_silent": False, "sampling_rate": 8000, "duration_s": 1.0}),
    "96khz": (lambda p: write(p, noise(rate=96000), 96000), {"is_silent": False, "sampling_rate": 96000, "duration_s": 1.0}),
    "int16": (lambda p: write(p, noise(), subtype="PCM_16"), {"is_silent": False, "num_channels": 1, "duration_s": 1.0}),
    "int32": (lambda p: write(p, noise(), subtype="PCM_32"), {"is_silent": False, "num_channels": 1, "duration_s": 1.0}),
    # Not regular files: refused by name, without opening them (reading a FIFO would wait forever).
    "folder": (lambda p: p.mkdir(), (AudioDecodeError, "not a regular file")),
    **({"fifo": (os.mkfifo, (AudioDecodeError, "not a regular file"))} if hasattr(os, "mkfifo") else {}),
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-inputs")
    paths = {}
    for name, (make, _) in CASES.items():
        paths[name] = folder / f"{name}.wav"
        make(paths[name])
    return {name: str(path) for name, path in paths.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_each_bad_input(tiny_pipeline, bad_files, name):
    path, expected = bad_files[name], CASES[name][1]
    if isinstance(expected, tuple):
        error, fragment = expected
        with pytest.raises(error, match=rf"{re.escape(path)}.*{re.escape(fragment)}") as err:
            tiny_pipeline(path, max_new_tokens=TOKENS)
        assert type(err.value) is error
    else:
        out = tiny_pipeline(path, max_new_tokens=TOKENS)
        assert out["generated_text"] == "" if out["is_silent"] else out["generated_text"]
        for key, value in expected.items():
            assert out[key] == (pytest.approx(value, abs=2e-3) if isinstance(value, float) else value), key


def test_report_policy_over_all_bad_inputs(tiny_pipeline, bad_files):
    names = list(CASES)
    out = tiny_pipeline([bad_files[n] for n in names], max_new_tokens=TOKENS, on_error="report")
    assert len(out) == len(names)
    for name, result in zip(names, out):
        expected = CASES[name][1]
        if isinstance(expected, tuple):
            assert set(result) == {"error"} and bad_files[name] in result["error"], name
            assert result["error"].startswith(expected[0].__name__ + ": "), name
        else:
            # The good ones get the same caption as alone (the bad ones do not disturb the batch).
            assert result == tiny_pipeline(bad_files[name], max_new_tokens=TOKENS), name


@pytest.mark.parametrize("wrong", [16, 11])
def test_bridge_refuses_a_wrong_embedding_dimension(tiny_bridge, wrong):
    with pytest.raises(ValueError, match=rf"\(batch, 12\), got \(2, {wrong}\)"):
        tiny_bridge.link(torch.randn(2, wrong))


# ---------------------------------------------------------------------------------------------- streamed formats
# (format, subtype, suffix) -> decoded whole when streamed. libsndfile decodes MP3 differently after every read
# boundary (up to 0.36 off on this 0.3-amplitude sine, for ~2300 frames), and Opus's last frames for some block
# sizes (4097 here), so both are decoded whole, then streamed.
FORMATS = {
    ("WAV", "PCM_16", "wav"): False,
    ("FLAC", "PCM_16", "flac"): False,
    ("OGG", "VORBIS", "ogg"): False,
    ("OGG", "OPUS", "opus"): True,
    ("MP3", "MPEG_LAYER_III", "mp3"): True,
}


@pytest.mark.parametrize("target", [44100, 48000])  # resampled as a stream, and not
@pytest.mark.parametrize("fmt, subtype, suffix", list(FORMATS))
def test_every_format_streams_the_samples_of_decoding_it_whole(tmp_path, fmt, subtype, suffix, target):
    if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {fmt}/{subtype}")
    path = str(tmp_path / f"sine.{suffix}")
    rate = 48000  # one that Opus takes
    t = np.arange(int(3.5 * rate)) / rate  # longer than two blocks of STREAM_BLOCK_FRAMES
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format=fmt, subtype=subtype)
    assert sf.info(path).frames > 2 * STREAM_BLOCK_FRAMES
    whole = prepare_audio(path, target).waveform
    for block in (STREAM_BLOCK_FRAMES, 4097):
        stream = open_audio_stream(path, target)
        stream.block_frames = block
        assert stream.decode_whole is FORMATS[fmt, subtype, suffix]
        windows = list(stream.windows(1.0, 0.75))
        assert windows[-1][1] == len(whole) == stream.num_samples
        for lo, hi, samples in windows:
            np.testing.assert_array_equal(samples, whole[lo:hi])  # exact, window by window


# ---------------------------------------------------------------------------------------------- embeddings
# A row of finite values whose L2 norm overflows (or underflows) float32 normalises to a zero row: a bridge trained
# on such rows learned nothing and reported success. Refused wherever embeddings enter (`check_embeddings`).
EMBEDDING_ROWS = {"1e30": 1e30, "-1e30": -1e30, "1e20": 1e20, "1e-30": 1e-30}


@pytest.mark.parametrize("name", list(EMBEDDING_ROWS))
def test_embeddings_that_cannot_be_normalised_are_refused(tiny_bridge, name):
    embeds = torch.randn(4, 12)
    embeds[2] = EMBEDDING_ROWS[name]
    message = r"`text_embeds` has rows whose L2 norm overflows or underflows torch.float32 \(rows \[2\]"
    with pytest.raises(ValueError, match=message):
        check_embeddings("text_embeds", embeds)
    with pytest.raises(ValueError, match=message):
        tiny_bridge.fit_normalization(embeds)


@pytest.mark.parametrize("value", [0.0, 1e-3, 1.0, 1e3, 1e15])
def test_embeddings_at_any_normalisable_scale_are_taken(value):
    embeds = torch.full((3, 12), value)
    assert check_embeddings("audio_embeds", embeds) is embeds


# ---------------------------------------------------------------------------------------------- one hour of audio
HOUR_CODE = """
import json, resource, numpy as np, soundfile as sf
from diffusion_link.testing import tiny_captioner

path, rate = {path!r}, 8000
with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as f:  # 57.6 MB, written a minute at a time
    rng = np.random.default_rng(0)
    for _ in range(60):
        f.write((0.1 * rng.standard_normal(60 * rate)).astype(np.float32))
pipe = tiny_captioner(seed=0)
pipe((0.1 * rng.standard_normal(rate)).astype(np.float32), sampling_rate=rate, max_new_tokens=2)  # warm up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = pipe(path, chunk_length_s=30, max_new_tokens=2)
growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # ru_maxrss is in KiB on Linux
print(json.dumps({{"growth_mb": growth_mb, "encoder_rate": pipe.feature_extractor.sampling_rate,
                  "duration_s": out["duration_s"], "timestamps": [c["timestamp"] for c in out["chunks"]]}}))
"""


@pytest.mark.slow
def test_one_hour_file_is_streamed_in_bounded_memory(tmp_path):
    # 1-2 minutes on 2 cores. The file is read, mixed and resampled block by block, and each 30 s window is captioned
    # as it arrives, so memory follows the window, not the file. Whole-file decoding (before streaming) grew by
    # ~1.6 GB here, ~2.3x the 691 MB float32 waveform at the tiny CLAP's 48 kHz.
    result = json.loads(run_python(HOUR_CODE.format(path=str(tmp_path / "hour.wav")), timeout=600).strip().splitlines()[-1])
    assert result["duration_s"] == 3600.0
    assert [tuple(t) for t in result["timestamps"]] == [(30.0 * i, 30.0 * (i + 1)) for i in range(120)]
    waveform_mb = 3600 * result["encoder_rate"] * 4 / 2**20
    assert result["growth_mb"] < 0.1 * waveform_mb, result


# ---------------------------------------------------------------------------------------------- properties
TARGET_RATES = st.sampled_from([16000, 44100, 48000])
RATES = st.integers(4000, 96000)


@settings(max_examples=25, deadline=None, derandomize=True)  # the same examples every run: CI never flakes
@given(rate=RATES, target=TARGET_RATES, channels=st.integers(1, 4), seconds=st.floats(MIN_DURATION_S, 0.4),
       amplitude=st.floats(1e-4, 10.0), seed=st.integers(0, 2**16), channels_first=st.booleans())
def test_prepare_audio_gives_mono_float32_at_the_target_rate(rate, target, channels, seconds, amplitude, seed,
                                                             channels_first):
    n = int(np.ceil(seconds * rate))
    samples = noise(n / rate, rate, channels, amplitude, seed)[:n]
    n = len(samples)  # what `noise` actually made (its float duration can round one sample short)
    if channels_first and channels > 1:
        samples = samples.T
    audio = prepare_audio(samples, target, sampling_rate=rate)
    assert audio.waveform.dtype == np.float32 and audio.waveform.ndim == 1
    assert abs(len(audio.waveform) - round(n * target / rate)) <= 1
    assert abs(audio.duration_s - n / rate) <= 1 / target + 1e-9
    assert np.isfinite(audio.waveform).all()
    assert (audio.sampling_rate, audio.target_rate, audio.num_channels) == (rate, target, channels)
    mono = samples.mean(axis=0 if channels_first and channels > 1 else -1) if channels > 1 else samples
    assert audio.peak_dbfs == pytest.approx(20 * np.log10(np.abs(mono).max()), abs=1e-4)
    # Deterministic; at the target rate itself the samples are the mono mix, untouched.
    np.testing.assert_array_equal(prepare_audio(samples, target, sampling_rate=rate).waveform, audio.waveform)
    np.testing.assert_allclose(prepare_audio(samples, rate, sampling_rate=rate).waveform, mono, rtol=0, atol=1e-6)


@settings(max_examples=25, deadline=None, derandomize=True)  # the same examples every run: CI never flakes
@given(dtype=st.sampled_from([np.int16, np.int32, np.uint8]), channels=st.integers(1, 2), seed=st.integers(0, 2**16),
       extremes=st.booleans())
def test_integer_pcm_maps_into_unit_range(dtype, channels, seed, extremes):
    info, rate = np.iinfo(dtype), 8000
    rng = np.random.default_rng(seed)
    samples = rng.integers(info.min, info.max, size=(rate // 5, channels), endpoint=True).astype(dtype)
    if extremes:
        samples[:10], samples[10:20] = info.min, info.max
    mono = to_mono_float(samples)
    assert mono.dtype == np.float32 and mono.shape == (rate // 5,)
    assert np.abs(mono).max() <= 1.0
    audio = prepare_audio(samples, rate, sampling_rate=rate)
    assert np.abs(audio.waveform).max() <= 1.0 and audio.peak_dbfs <= 0.0
    if extremes and dtype != np.uint8:
        assert mono[:10].min() == pytest.approx(-1.0, abs=1e-4)


@settings(max_examples=25, deadline=None, derandomize=True)  # the same examples every run: CI never flakes
@given(rate=RATES, channels=st.integers(1, 4), position=st.floats(0, 1, exclude_max=True),
       bad=st.sampled_from([np.nan, np.inf, -np.inf]), as_tensor=st.booleans())
def test_any_nan_or_inf_is_refused(rate, channels, position, bad, as_tensor):
    samples = noise(0.2, rate, channels)
    flat = samples.reshape(-1)
    flat[int(position * flat.size)] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        prepare_audio(torch.from_numpy(samples) if as_tensor else samples, 48000, sampling_rate=rate)


@settings(max_examples=25, deadline=None, derandomize=True)  # the same examples every run: CI never flakes
@given(rate=RATES, channels=st.integers(1, 4), fraction=st.floats(0, 1, exclude_max=True))
def test_audio_shorter_than_the_minimum_is_refused(rate, channels, fraction):
    min_samples = int(round(MIN_DURATION_S * rate))
    n = int(fraction * min_samples)
    samples = np.zeros((n, channels), np.float32) if channels > 1 else np.zeros(n, np.float32)
    with pytest.raises(ValueError, match=r"at least 0.1 s is needed"):
        prepare_audio(samples, 48000, sampling_rate=rate)
