"""Long files are streamed a window at a time (`audio_io.AudioFileStream`): the windows are bit for bit those cut from
the whole decoded file, the pipeline's result is the same as for the file decoded into memory, and the memory the
audio takes stays bounded by a window whatever the file's length."""

import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from diffusion_link.audio_io import MIN_DURATION_S, AudioDecodeError, decode_audio, open_audio_stream, prepare_audio
from diffusion_link.audio_io import window_bounds


TOKENS = 2


def noise_file(path, seconds, rate, channels=1, subtype="PCM_16", seed=0):
    rng = np.random.default_rng(seed)
    shape = (int(seconds * rate), channels) if channels > 1 else (int(seconds * rate),)
    sf.write(path, (0.1 * rng.standard_normal(shape)).astype(np.float32), rate, subtype=subtype)
    return str(path)


# (file rate, target rate, channels, subtype, seconds, chunk_length_s, stride_s, block frames): odd blocks and odd
# lengths put window edges, block edges and the short tail everywhere.
STREAM_CASES = [
    (16000, 16000, 1, "PCM_16", 7.37, 2.0, None, 4096),
    (44100, 48000, 2, "PCM_16", 7.37, 2.0, 1.5, 3001),
    (22050, 48000, 1, "FLOAT", 5.02, 1.0, 0.25, 777),
    (96000, 48000, 3, "PCM_24", 4.0, 1.3, None, 65536),
    (8000, 48000, 1, "PCM_16", 3.05, 1.0, None, 1000),  # a 0.05 s tail joins the last window
    (48000, 48000, 2, "FLOAT", 0.7, 2.0, None, 500),  # shorter than one window
]


@pytest.mark.parametrize("rate,target,channels,subtype,seconds,chunk,stride,block", STREAM_CASES)
def test_streamed_windows_equal_the_windows_of_the_whole_file(tmp_path, rate, target, channels, subtype, seconds,
                                                              chunk, stride, block):
    path = noise_file(tmp_path / "clip.wav", seconds, rate, channels, subtype)
    whole = prepare_audio(path, target)
    stream = open_audio_stream(path, target)
    stream.block_frames = block
    windows = list(stream.windows(chunk, stride))
    assert [(lo, hi) for lo, hi, _ in windows] == window_bounds(len(whole.waveform), target, chunk, stride)
    for lo, hi, samples in windows:
        np.testing.assert_array_equal(samples, whole.waveform[lo:hi])  # exact: soxr's stream = its one-shot
    assert stream.num_samples == len(whole.waveform)
    assert (stream.duration_s, stream.peak_dbfs, stream.num_channels) == (whole.duration_s, whole.peak_dbfs,
                                                                         whole.num_channels)


def test_streamed_file_gets_the_same_result_as_the_file_in_memory(tiny_pipeline, tmp_path):
    path = noise_file(tmp_path / "stereo.wav", 6.5, 44100, channels=2)
    samples, rate = decode_audio(path)
    call = dict(chunk_length_s=2.0, stride_s=1.5, max_new_tokens=TOKENS, batch_size=3, return_embeddings=True)
    streamed, in_memory = tiny_pipeline(path, **call), tiny_pipeline(samples, sampling_rate=rate, **call)
    assert [c["timestamp"] for c in streamed["chunks"]] == [(0.0, 2.0), (1.5, 3.5), (3.0, 5.0), (4.5, 6.5)]
    for key in ("generated_text", "is_silent", "duration_s", "sampling_rate", "num_channels", "peak_dbfs"):
        assert streamed[key] == in_memory[key], key
    for a, b in zip(streamed["chunks"], in_memory["chunks"]):
        assert (a["generated_text"], a["timestamp"], a["is_silent"]) == (b["generated_text"], b["timestamp"],
                                                                         b["is_silent"])
        assert a["audio_embeds"].equal(b["audio_embeds"]) and a["bridged_embeds"].equal(b["bridged_embeds"])
    # In a list with other inputs, the streamed file's windows share batches with theirs: still the same result.
    both = tiny_pipeline([samples, path], sampling_rate=rate, chunk_length_s=2.0, max_new_tokens=TOKENS, batch_size=3)
    assert both[1] == tiny_pipeline(path, chunk_length_s=2.0, max_new_tokens=TOKENS)
    assert both[0] == tiny_pipeline(samples, sampling_rate=rate, chunk_length_s=2.0, max_new_tokens=TOKENS)


def test_bad_streamed_files_are_named(tiny_pipeline, tmp_path):
    missing, corrupt = str(tmp_path / "missing.wav"), tmp_path / "corrupt.wav"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    short = noise_file(tmp_path / "short.wav", 0.05, 16000)
    nan = tmp_path / "nan.wav"
    samples = np.full(16000 * 5, 0.1, np.float32)
    samples[16000 * 4] = np.nan  # in the last window: found only after the first windows were captioned
    sf.write(nan, samples, 16000, subtype="FLOAT")
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        tiny_pipeline(missing, chunk_length_s=1.0)
    with pytest.raises(AudioDecodeError, match="corrupt.wav"):
        tiny_pipeline(str(corrupt), chunk_length_s=1.0)
    with pytest.raises(ValueError, match=rf"short.wav: audio is 800 samples .*at least {MIN_DURATION_S} s"):
        tiny_pipeline(short, chunk_length_s=1.0)
    with pytest.raises(ValueError, match="nan.wav: audio contains NaN or Inf"):
        tiny_pipeline(str(nan), chunk_length_s=1.0, max_new_tokens=TOKENS)
    good = noise_file(tmp_path / "good.wav", 2.0, 16000)
    out = tiny_pipeline([str(nan), good, str(corrupt)], chunk_length_s=1.0, max_new_tokens=TOKENS, on_error="report")
    assert out[0]["error"].startswith("ValueError: ") and "nan.wav" in out[0]["error"]
    assert out[1] == tiny_pipeline(good, chunk_length_s=1.0, max_new_tokens=TOKENS)
    assert out[2]["error"].startswith("AudioDecodeError: ")


def test_a_long_file_is_captioned_in_memory_bounded_by_a_window(tiny_pipeline, tmp_path):
    # 15 minutes at 16 kHz, written a minute at a time; resampled to the tiny CLAP's 48 kHz the whole signal is
    # 173 MB of float32 (decoding it whole used to hold about 2.3 times that). Mostly digital silence, so that only a
    # few windows go through the model and the test stays fast; every window is still decoded, resampled and checked.
    rate, minutes, chunk_s = 16000, 15, 10.0
    audible = {3, 47, 88}  # windows with noise
    path = str(tmp_path / "long.wav")
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
        for minute in range(minutes):
            block = np.zeros(60 * rate, np.float32)
            for w in audible:
                lo = int(w * chunk_s * rate) - minute * 60 * rate
                if 0 <= lo < len(block):
                    block[lo : lo + int(chunk_s * rate)] = 0.1 * rng.standard_normal(int(chunk_s * rate))
            f.write(block)
    target = tiny_pipeline.feature_extractor.sampling_rate
    window_bytes = int(chunk_s * target) * 4
    signal_bytes = minutes * 60 * target * 4
    tiny_pipeline(np.zeros(rate, np.float32) + 0.1, sampling_rate=rate, max_new_tokens=TOKENS)  # warm up (lazy imports)

    tracemalloc.start()  # numpy registers its buffers with tracemalloc, so every array the audio takes is counted
    try:
        out = tiny_pipeline(path, chunk_length_s=chunk_s, max_new_tokens=TOKENS, batch_size=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    n = minutes * 60 / chunk_s
    assert out["duration_s"] == minutes * 60 and len(out["chunks"]) == n
    assert [c["timestamp"] for c in out["chunks"]] == [(chunk_s * i, chunk_s * (i + 1)) for i in range(int(n))]
    assert [i for i, c in enumerate(out["chunks"]) if not c["is_silent"]] == sorted(audible)
    assert all(c["generated_text"] for i, c in enumerate(out["chunks"]) if i in audible)
    # Measured: about 19 windows' worth (the stream's window, lookahead and their copies, two audible windows waiting
    # for their model call, and the float64 features of a window), a fixed number however long the file is; decoding
    # the whole file held about 2.3 times the 90 windows of the signal.
    assert peak < 24 * window_bytes, (peak / window_bytes, peak / signal_bytes)
