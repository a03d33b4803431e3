"""Audio input: decoding, resampling, mono mixdown and validation, in one place for the pipeline, the CLI and the
embedding extraction.

Decoding uses soundfile (libsndfile: wav, flac, ogg, mp3) with librosa as a fallback; neither ffmpeg nor torchaudio
is needed. Every error about a file names the file.
"""

from __future__ import annotations

import io
import os

import numpy as np


class AudioDecodeError(ValueError):
    """A file or byte string could not be decoded as audio."""


def decode_audio(source: str | os.PathLike | bytes) -> tuple[np.ndarray, int]:
    """Decode a file path or encoded bytes to `(samples, sampling_rate)`.

    Returns float32 samples of shape (num_samples,) or (num_samples, channels), as stored (no mixdown).
    Raises `FileNotFoundError` for a missing path and `AudioDecodeError` (a `ValueError`) naming the source when it
    cannot be decoded.
    """
    import soundfile as sf

    if isinstance(source, (bytes, bytearray)):
        name, handle = "<bytes>", io.BytesIO(bytes(source))
    else:
        name = os.fspath(source)
        if not os.path.isfile(name):
            raise FileNotFoundError(f"Audio file not found: {name}")
        handle = name
    try:
        samples, rate = sf.read(handle, dtype="float32", always_2d=False)
    except Exception as sf_error:  # libsndfile raises LibsndfileError / RuntimeError for unknown formats
        try:
            import librosa

            if isinstance(handle, io.BytesIO):
                handle.seek(0)
            samples, rate = librosa.load(handle, sr=None, mono=False)
            samples = np.asarray(samples, dtype=np.float32).T  # librosa gives (channels, time)
        except Exception as librosa_error:
            raise AudioDecodeError(
                f"Could not decode audio from {name}: {sf_error} (soundfile); {librosa_error} (librosa)"
            ) from librosa_error
    return np.asarray(samples, dtype=np.float32), int(rate)


def to_mono_float(samples: np.ndarray, name: str = "audio") -> np.ndarray:
    """Convert integer PCM to float in [-1, 1] and average channels to mono.

    Accepts (num_samples,), (num_samples, channels) or (channels, num_samples) with at most 8 channels (the shorter
    axis is taken as channels). Raises `ValueError` for NaN/Inf samples or more than two dimensions.
    """
    samples = np.asarray(samples)
    if samples.dtype.kind in "iu":
        info = np.iinfo(samples.dtype)
        scale = float(max(abs(info.min), info.max))
        offset = 0.0 if info.min < 0 else (info.max + 1) / 2  # unsigned PCM is centred on half its range
        samples = (samples.astype(np.float64) - offset) / scale
    elif samples.dtype.kind != "f":
        raise TypeError(f"{name}: expected float or integer PCM samples, got dtype {samples.dtype}.")
    if samples.ndim == 2:
        channel_axis = int(np.argmin(samples.shape))
        if samples.shape[channel_axis] > 8:
            raise ValueError(f"{name}: expected mono or up to 8 channels, got an array of shape {samples.shape}.")
        samples = samples.mean(axis=channel_axis)  # documented: multichannel audio is averaged to mono
    elif samples.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D or 2-D (samples, channels) array, got shape {samples.shape}.")
    samples = samples.astype(np.float32, copy=False)
    if not np.isfinite(samples).all():
        raise ValueError(f"{name}: audio contains NaN or Inf samples.")
    return samples


def resample(samples: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample mono float32 audio with librosa's soxr backend (deterministic)."""
    if orig_rate <= 0:
        raise ValueError(f"sampling_rate must be a positive number of Hz, got {orig_rate}.")
    if orig_rate == target_rate:
        return samples
    import librosa

    return librosa.resample(samples, orig_sr=orig_rate, target_sr=target_rate, res_type="soxr_hq").astype(np.float32)


def load_audio(source: str | os.PathLike | bytes, sampling_rate: int) -> np.ndarray:
    """Decode `source`, mix to mono and resample to `sampling_rate`. Returns float32 (num_samples,)."""
    samples, rate = decode_audio(source)
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else os.fspath(source)
    return resample(to_mono_float(samples, name), rate, sampling_rate)
