"""Audio input: decoding, resampling, mono mixdown and validation, in one place for the pipeline, the CLI and the
embedding extraction.

Decoding uses soundfile (libsndfile 1.1+: wav, flac, ogg/vorbis, opus, mp3, aiff, ...); resampling uses librosa's
soxr backend. Neither ffmpeg nor torchaudio is needed. Every error about a file names the file.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from transformers.utils import is_librosa_available, is_soundfile_available

from .validation import check_positive_float


class AudioDecodeError(ValueError):
    """A file or byte string could not be decoded as audio."""


def _soundfile():
    """The `soundfile` module, or an ImportError that says how to get it."""
    if not is_soundfile_available():
        raise ImportError("Decoding audio files needs soundfile (pip install soundfile).")
    if is_soundfile_available():  # guarded import: a Hub copy of this file does not require soundfile up front
        import soundfile as sf
    return sf



# At most 7.1 surround: an array with more "channels" than this along its shorter axis is far more likely a
# (channels, samples) mix-up of a tiny clip, or not audio at all, than real multichannel audio.
MAX_CHANNELS = 8

def decode_audio(source: str | os.PathLike | bytes) -> tuple[np.ndarray, int]:
    """Decode a file path or encoded bytes to `(samples, sampling_rate)`.

    Returns float32 samples of shape (num_samples,) or (num_samples, channels), as stored (no mixdown).
    Raises `FileNotFoundError` for a missing path and `AudioDecodeError` (a `ValueError`) naming the source when it
    cannot be decoded.
    """
    sf = _soundfile()

    if isinstance(source, (bytes, bytearray)):
        name, handle = "<bytes>", io.BytesIO(bytes(source))
    else:
        name = os.fspath(source)
        _check_audio_path(name)
        handle = name
    try:
        samples, rate = sf.read(handle, dtype="float32", always_2d=False)
    except Exception as err:  # libsndfile raises LibsndfileError / RuntimeError / TypeError for bad data
        raise AudioDecodeError(f"Could not decode audio from {name}: {err}") from err
    return np.asarray(samples, dtype=np.float32), int(rate)


def _check_audio_path(name: str) -> None:
    """`FileNotFoundError` for a path that does not exist; `AudioDecodeError` for one that is not a regular file (a
    folder, a FIFO that would block the read, a device), each naming the path."""
    if not os.path.exists(name):
        raise FileNotFoundError(f"Audio file not found: {name}")
    if not os.path.isfile(name):
        raise AudioDecodeError(f"Could not decode audio from {name}: not a regular file (a folder, FIFO or device); "
                               "give an audio file.")


def to_mono_float(samples: np.ndarray, name: str = "audio") -> np.ndarray:
    """Convert integer PCM to float in [-1, 1] and average channels to mono.

    Accepts (num_samples,), (num_samples, channels) or (channels, num_samples) with at most `MAX_CHANNELS` (the shorter
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
    if samples.ndim == 2 and samples.size == 0:
        samples = samples.reshape(0)  # no frames (e.g. an empty stereo file): the mean over channels would be NaN
    elif samples.ndim == 2:
        channel_axis = int(np.argmin(samples.shape))
        if samples.shape[channel_axis] > MAX_CHANNELS:
            raise ValueError(f"{name}: expected mono or up to {MAX_CHANNELS} channels, got an array of shape {samples.shape}.")
        samples = samples.mean(axis=channel_axis)  # documented: multichannel audio is averaged to mono
    elif samples.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D or 2-D (samples, channels) array, got shape {samples.shape}.")
    samples = samples.astype(np.float32, copy=False)
    if not all_finite(samples):
        raise ValueError(f"{name}: audio contains NaN or Inf samples.")
    return samples


def all_finite(samples: np.ndarray, block: int = 1 << 20) -> bool:
    """`np.isfinite(samples).all()`, checked a block at a time so a long input gets no full-length mask."""
    return all(np.isfinite(samples[i : i + block]).all() for i in range(0, len(samples), block))


def resample(samples: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample mono float32 audio with librosa's soxr backend (deterministic)."""
    if orig_rate <= 0:
        raise ValueError(f"sampling_rate must be a positive number of Hz, got {orig_rate}.")
    if orig_rate == target_rate:
        return samples
    if not is_librosa_available():
        raise ImportError(f"Resampling {orig_rate} Hz audio to {target_rate} Hz needs librosa (pip install librosa).")
    if is_librosa_available():  # guarded import: a Hub copy of this file does not require librosa up front
        import librosa

    return librosa.resample(samples, orig_sr=orig_rate, target_sr=target_rate, res_type="soxr_hq").astype(np.float32)


def load_audio(source: str | os.PathLike | bytes, sampling_rate: int) -> np.ndarray:
    """Decode `source`, mix to mono and resample to `sampling_rate`. Returns float32 (num_samples,)."""
    samples, rate = decode_audio(source)
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else os.fspath(source)
    return resample(to_mono_float(samples, name), rate, sampling_rate)


# File name endings that `diffusion-link caption` / `evaluate` pick up from folders (soundfile decodes them all).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")
MIN_DURATION_S = 0.1
SILENCE_THRESHOLD_DBFS = -60.0


@dataclass
class PreparedAudio:
    """A validated mono waveform at the encoder's rate, and what users want to know about the input."""

    waveform: np.ndarray  # (num_samples,) float32 at `target_rate`
    target_rate: int
    sampling_rate: int  # of the input, before resampling
    num_channels: int
    name: str
    # Peak of the mono mix at the input rate: resampling can overshoot full scale (a file clipped at +-1.0 would
    # otherwise report a peak above 0 dBFS). None: measured on `waveform`.
    input_peak: float | None = None

    @property
    def duration_s(self) -> float:
        return len(self.waveform) / self.target_rate

    @property
    def peak_dbfs(self) -> float:
        if self.input_peak is None:
            return level_dbfs(self.waveform, "peak")
        return 20.0 * np.log10(self.input_peak) if self.input_peak > 0 else float("-inf")


def level_dbfs(samples: np.ndarray, kind: str = "rms") -> float:
    """Level of float samples in dB relative to full scale (1.0): `"rms"` or `"peak"`; -inf for digital silence."""
    if len(samples) == 0:
        return float("-inf")
    value = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if kind == "rms" else peak_level(samples)
    return 20.0 * np.log10(value) if value > 0 else float("-inf")


def peak_level(samples: np.ndarray) -> float:
    """max(|samples|) without materialising |samples| (a full-length copy for a long input)."""
    return float(max(np.max(samples), -np.min(samples))) if len(samples) else 0.0


def is_silent(samples: np.ndarray, threshold_dbfs: float = SILENCE_THRESHOLD_DBFS) -> bool:
    """True when the RMS level is below `threshold_dbfs` (default `SILENCE_THRESHOLD_DBFS`): nothing there worth a
    caption."""
    return level_dbfs(samples, "rms") < threshold_dbfs


def prepare_audio(
    inputs,
    target_rate: int,
    sampling_rate: int | None = None,
    min_duration_s: float = MIN_DURATION_S,
) -> PreparedAudio:
    """Turn any supported input into a validated mono float32 waveform at `target_rate`.

    Accepted inputs: a file path; encoded bytes (wav/flac/ogg/mp3); a numpy array or torch tensor with
    `sampling_rate`; a dict `{"array" | "raw": samples, "sampling_rate": int}` (also `{"path": ...}`, as datasets'
    `Audio` column gives). Integer PCM becomes float; several channels are averaged to mono; any rate is resampled.

    Raises `ValueError` (naming the input) for a missing sampling rate, NaN/Inf, or audio shorter than
    `min_duration_s`; `FileNotFoundError` / `AudioDecodeError` for files that cannot be read.
    """
    name = "audio array"
    if isinstance(inputs, dict):
        inputs = dict(inputs)
        if "path" in inputs and inputs.get("array") is None and inputs.get("raw") is None and inputs.get("bytes") is None:
            inputs = inputs["path"]
        else:
            samples = next((inputs[k] for k in ("array", "raw", "bytes") if inputs.get(k) is not None), None)
            if samples is None:
                raise ValueError(f"An audio dict needs an `array` (or `raw`) and a `sampling_rate`; got keys {sorted(inputs)}.")
            if isinstance(samples, (bytes, bytearray)):
                inputs = bytes(samples)
            else:
                rate = inputs.get("sampling_rate", sampling_rate)
                name = str(inputs.get("path") or name)
                return _prepare_array(samples, rate, target_rate, name, min_duration_s)
    if isinstance(inputs, (str, os.PathLike, bytes, bytearray)):
        name = "<bytes>" if isinstance(inputs, (bytes, bytearray)) else os.fspath(inputs)
        samples, rate = decode_audio(inputs)
        return _prepare_array(samples, rate, target_rate, name, min_duration_s)
    return _prepare_array(inputs, sampling_rate, target_rate, name, min_duration_s)


def _prepare_array(samples, rate, target_rate: int, name: str, min_duration_s: float) -> PreparedAudio:
    if hasattr(samples, "detach"):  # a torch tensor
        samples = samples.detach().cpu().numpy()
    if not isinstance(samples, np.ndarray):
        if isinstance(samples, (list, tuple)):
            samples = np.asarray(samples)
        else:
            raise TypeError(
                f"Unsupported audio input of type {type(samples).__name__}: give a file path, bytes, a numpy array or "
                "tensor with `sampling_rate`, or a dict with `array` and `sampling_rate`."
            )
    if rate is None:
        raise ValueError(
            f"{name}: a raw audio array needs its sampling rate; pass `sampling_rate=` (or a dict with "
            "`sampling_rate`). It is never guessed."
        )
    rate = check_sampling_rate(rate, name)
    num_channels = 1 if samples.ndim < 2 else int(min(samples.shape))
    mono = to_mono_float(samples, name)
    _check_length(len(mono), rate, name, min_duration_s)
    peak = peak_level(mono)
    return PreparedAudio(resample(mono, rate, target_rate), target_rate, rate, num_channels, name, peak)


def check_sampling_rate(rate, name: str | None = None) -> int:
    """Return `rate` as an int, or raise `ValueError` (naming the input `name`, when given) unless it is a positive
    whole number of Hz: a Python or numpy int, as a dataset column gives; a bool or a float is not a rate."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise ValueError(f"{name + ': ' if name else ''}`sampling_rate` must be a positive int (Hz), got {rate!r}.")
    return int(rate)


def window_bounds(num_samples: int, rate: int, chunk_length_s: float, stride_s: float | None = None) -> list[tuple[int, int]]:
    """Deterministic windows `[(start, end), ...]` in samples: starts every `stride_s` (default: `chunk_length_s`,
    no overlap), each `chunk_length_s` long or cut at the end. A tail shorter than `MIN_DURATION_S` joins the window
    before it, so no audio is dropped.

    Raises `ValueError` unless `chunk_length_s` is a finite number of seconds >= `MIN_DURATION_S` (a shorter window
    could not be captioned, and every one would join the first: the chunking would be silently lost) and `stride_s`
    lies in (0, chunk_length_s] and spans at least one sample."""
    check_positive_float("chunk_length_s", chunk_length_s)
    if chunk_length_s < MIN_DURATION_S:
        raise ValueError(f"`chunk_length_s` must be at least {MIN_DURATION_S} s (the shortest audio that gets a "
                         f"caption), got {chunk_length_s!r}.")
    stride_s = chunk_length_s if stride_s is None else check_positive_float("stride_s", stride_s)
    if stride_s > chunk_length_s:
        raise ValueError(f"`stride_s` must lie in (0, chunk_length_s={chunk_length_s}], got {stride_s!r}: a stride "
                         "longer than the window would skip audio.")
    chunk, stride = int(round(chunk_length_s * rate)), int(round(stride_s * rate))
    if stride < 1:
        raise ValueError(f"`stride_s`={stride_s} is shorter than one sample at {rate} Hz.")
    min_len = int(round(MIN_DURATION_S * rate))
    bounds = []
    for start in range(0, num_samples, stride):
        end = min(start + chunk, num_samples)
        if bounds and end - start < min_len:
            bounds[-1] = (bounds[-1][0], num_samples)
            break
        bounds.append((start, end))
        if end == num_samples:
            break
    return bounds


STREAM_BLOCK_FRAMES = 1 << 16  # frames decoded per read when a file is streamed (about 1.4 s at 48 kHz)
# Encodings libsndfile does not decode in blocks as it decodes them whole (seen with 1.2.2): its MP3 reader gives
# other samples for about 2300 frames after every read boundary (up to 0.36 off on a 0.3-amplitude sine), its Opus
# reader other last frames for some block sizes. A file in one of them is decoded whole when it is streamed, and its
# blocks are then taken from memory. WAV, FLAC, AIFF and Vorbis read in blocks are the file decoded whole.
WHOLE_DECODE_SUBTYPES = ("MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III", "OPUS")


@dataclass
class AudioFileStream:
    """A file read window by window, so that captioning it needs memory for a window, not for the whole file.

    Made by `open_audio_stream`, which checks the header up front (missing, undecodable, too many channels, shorter
    than `MIN_DURATION_S`). `windows` then decodes `STREAM_BLOCK_FRAMES` at a time, averages the channels, checks
    for NaN/Inf and resamples block by block with soxr's streaming resampler, which gives bit for bit the samples of
    `resample` on the whole file (the same soxr "HQ" filter, run in one pass). The windows are therefore exactly those
    that `window_bounds` cuts from `prepare_audio(path).waveform`. `duration_s` and `peak_dbfs` are known once every
    window has been read.

    MP3 and Opus (`WHOLE_DECODE_SUBTYPES`) are the exception: libsndfile decodes them differently at block
    boundaries, so such a file is decoded whole (`decode_whole`) and then mixed, checked and resampled block by block
    from memory. The samples are still those of `prepare_audio`, but memory then holds the decoded file: 4 bytes per
    sample and channel (10 minutes of 44.1 kHz stereo is 212 MB, an hour 1.3 GB).
    """

    path: str
    target_rate: int
    sampling_rate: int  # of the file
    num_channels: int
    name: str
    block_frames: int = STREAM_BLOCK_FRAMES
    decode_whole: bool = False  # decode the file in one read (MP3), then take the blocks from memory
    num_samples: int | None = None  # at `target_rate`; set when the stream has ended
    input_peak: float = 0.0  # of the mono mix at the file's rate, over the blocks read so far

    @property
    def duration_s(self) -> float:
        if self.num_samples is None:
            raise RuntimeError(f"{self.name}: the duration is known once all windows have been read.")
        return self.num_samples / self.target_rate

    @property
    def peak_dbfs(self) -> float:
        return 20.0 * np.log10(self.input_peak) if self.input_peak > 0 else float("-inf")

    def windows(self, chunk_length_s: float, stride_s: float | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield `(start, end, samples)` per window: the bounds of `window_bounds` in samples at `target_rate` and a
        float32 (end - start,) copy. At most one window plus a lookahead (one stride, `MIN_DURATION_S` and a block)
        is held, whatever the length of the file. Raises `ValueError` for NaN/Inf samples when it reaches them."""
        rate = self.target_rate
        window_bounds(1, rate, chunk_length_s, stride_s)  # validates both
        stride_s = chunk_length_s if stride_s is None else stride_s
        chunk, stride = int(round(chunk_length_s * rate)), int(round(stride_s * rate))
        # Far enough ahead that the window at `start` is not the last one (which absorbs a short tail).
        lookahead = chunk + stride + int(round(MIN_DURATION_S * rate))
        blocks = self._resampled_blocks()
        pending: list[np.ndarray] = []  # resampled samples from `offset` on
        offset = buffered = start = 0  # `buffered`: samples in `pending`
        while True:
            while self.num_samples is None and buffered < start - offset + lookahead:
                block = next(blocks, None)
                if block is not None:
                    pending.append(block)
                    buffered += len(block)
            buffer = np.concatenate(pending) if len(pending) != 1 else pending[0]
            if self.num_samples is None:  # more audio follows: this window is a full chunk
                bounds = [(start, start + chunk)]
            else:  # the last windows, exactly as `window_bounds` cuts the whole signal
                buffer = buffer[: max(0, self.num_samples - offset)]
                bounds = [b for b in window_bounds(self.num_samples, rate, chunk_length_s, stride_s) if b[0] >= start]
            for lo, hi in bounds:
                yield lo, hi, buffer[lo - offset : hi - offset].copy()
            if self.num_samples is not None:
                return
            start += stride
            pending, offset = [buffer[start - offset :].copy()], start  # drop what no later window reads
            buffered = len(pending[0])

    def _resampled_blocks(self) -> Iterator[np.ndarray]:
        """Mono float32 blocks at `target_rate`; sets `num_samples` (the length `resample` gives) at the end."""
        sf = _soundfile()

        streamer = None
        if self.sampling_rate != self.target_rate:
            try:
                import soxr
            except ImportError as err:
                raise ImportError(
                    f"Resampling {self.sampling_rate} Hz audio to {self.target_rate} Hz needs librosa (pip install librosa)."
                ) from err
            streamer = soxr.ResampleStream(self.sampling_rate, self.target_rate, 1, dtype="float32", quality="HQ")
        frames = produced = 0
        try:
            with sf.SoundFile(self.path) as f:
                for block in self._decoded_blocks(f):  # (frames, channels)
                    last = len(block) < self.block_frames
                    # Row by row the same float32 mean as `to_mono_float` over the whole file.
                    mono = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1)
                    mono = np.ascontiguousarray(mono, dtype=np.float32)
                    if not all_finite(mono):
                        raise ValueError(f"{self.name}: audio contains NaN or Inf samples.")
                    frames += len(mono)
                    if len(mono):
                        self.input_peak = max(self.input_peak, peak_level(mono))
                    out = mono if streamer is None else streamer.resample_chunk(mono, last=last)
                    produced += len(out)
                    yield out
                    if last:
                        break
        except (ValueError, OSError):
            raise
        except Exception as err:  # libsndfile raises LibsndfileError / RuntimeError for data it cannot decode
            raise AudioDecodeError(f"Could not decode audio from {self.name}: {err}") from err
        _check_length(frames, self.sampling_rate, self.name)
        # `resample` (librosa) pads or cuts soxr's output to ceil(frames * ratio) samples, ratio rounded as there.
        total = frames if streamer is None else int(np.ceil(frames * (float(self.target_rate) / self.sampling_rate)))
        if produced < total:
            yield np.zeros(total - produced, dtype=np.float32)
        self.num_samples = total

    def _decoded_blocks(self, f) -> Iterator[np.ndarray]:
        """(frames, channels) float32 blocks of `block_frames` from the open SoundFile `f`, the last one shorter
        (possibly empty), read one by one or, with `decode_whole`, cut from the whole file read at once."""
        if not self.decode_whole:
            while True:
                block = f.read(self.block_frames, dtype="float32", always_2d=True)
                yield block
                if len(block) < self.block_frames:
                    return
        whole = f.read(dtype="float32", always_2d=True)
        for start in range(0, len(whole) + 1, self.block_frames):
            yield whole[start : start + self.block_frames]


def open_audio_stream(path: str | os.PathLike, target_rate: int, min_duration_s: float = MIN_DURATION_S) -> AudioFileStream:
    """Check a file's header and return an `AudioFileStream` over it (nothing is decoded yet).

    Raises what `prepare_audio` raises for the same file: `FileNotFoundError`, `AudioDecodeError` naming the file,
    `ValueError` for more than `MAX_CHANNELS` channels or fewer frames than `min_duration_s`.
    """
    sf = _soundfile()

    name = os.fspath(path)
    _check_audio_path(name)
    try:
        info = sf.info(name)
    except Exception as err:
        raise AudioDecodeError(f"Could not decode audio from {name}: {err}") from err
    if info.channels > MAX_CHANNELS:
        raise ValueError(f"{name}: expected mono or up to {MAX_CHANNELS} channels, got {info.channels} channels.")
    _check_length(info.frames, info.samplerate, name, min_duration_s)
    return AudioFileStream(name, target_rate, int(info.samplerate), int(info.channels), name,
                           decode_whole=info.subtype in WHOLE_DECODE_SUBTYPES)


def _check_length(num_samples: int, rate: int, name: str, min_duration_s: float = MIN_DURATION_S) -> None:
    if num_samples < max(1, int(round(min_duration_s * int(rate)))):
        raise ValueError(
            f"{name}: audio is {num_samples} samples ({num_samples / int(rate):.3f} s) long; at least {min_duration_s} s "
            "is needed for a caption."
        )
