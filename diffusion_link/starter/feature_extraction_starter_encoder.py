"""Feature extractor of the starter encoder: aiSFX's 96-band log-mel front end at 44.1 kHz."""

from __future__ import annotations

import numpy as np
import torch
from transformers import BatchFeature, SequenceFeatureExtractor


# The front end aiSFX was trained on (ISMIR 2022, computed there with Essentia): 44.1 kHz, 2048-sample Hann frames
# every 1024 samples, 96 HTK-mel power bands whose weights sum to one, log10(1e4 x + 1), divided by the paper's
# maximum so values fall in about [0, 1]. The waveform is peak-normalised first, as aiSFX's librosa front end does.
AISFX_SAMPLING_RATE = 44100
AISFX_FRAME, AISFX_HOP, AISFX_MELS = 2048, 1024, 96
AISFX_LOG_MEL_MAX = 9.457798957824707
_MEL_CACHE: dict = {}


def aisfx_log_mel(waveform: np.ndarray) -> np.ndarray:
    """(num_samples,) mono float32 at 44.1 kHz -> (frames, 96) float32 log-mel, frames every 1024 samples."""
    waveform = np.asarray(waveform, dtype=np.float32)
    peak = float(np.max(np.abs(waveform))) if len(waveform) else 0.0
    signal = torch.from_numpy(waveform / peak if peak > 0 else waveform)
    spectrum = torch.stft(
        signal, n_fft=AISFX_FRAME, hop_length=AISFX_HOP, window=torch.hann_window(AISFX_FRAME),
        center=True, pad_mode="constant", return_complex=True,
    ).abs().pow(2)  # (1025, frames)
    mel = torch.from_numpy(_aisfx_mel_filters()).T @ spectrum  # (96, frames)
    return (torch.log10(1e4 * mel + 1.0) / AISFX_LOG_MEL_MAX).T.contiguous().numpy().astype(np.float32)


def _aisfx_mel_filters() -> np.ndarray:
    if "aisfx" not in _MEL_CACHE:
        from transformers.audio_utils import mel_filter_bank

        filters = mel_filter_bank(
            num_frequency_bins=AISFX_FRAME // 2 + 1, num_mel_filters=AISFX_MELS, min_frequency=0.0,
            max_frequency=AISFX_SAMPLING_RATE / 2, sampling_rate=AISFX_SAMPLING_RATE, norm=None, mel_scale="htk",
        )  # (1025, 96)
        _MEL_CACHE["aisfx"] = (filters / np.maximum(filters.sum(axis=0, keepdims=True), 1e-12)).astype(np.float32)
    return _MEL_CACHE["aisfx"]


class StarterFeatureExtractor(SequenceFeatureExtractor):
    """Waveforms at 44.1 kHz -> `input_features` (B, frames, 96) zero-padded, and `attention_mask` (B, frames).

    The mask comes when the clips differ in length (padding) or `return_attention_mask=True`; clips of one length
    need none (`return_attention_mask=None`, the default). So one clip gives `input_features` alone, as CLAP's
    extractor does, and transformers' `pipeline("zero-shot-audio-classification")` can pass the text's own
    `attention_mask` beside it.

    Args:
        max_length_s (`float`, defaults to 10.0): the longest piece the encoder reads in one go
            (`nb_max_samples`); callers split longer audio into pieces and average their embeddings.
    """

    model_input_names = ["input_features", "attention_mask"]

    def __init__(self, feature_size: int = AISFX_MELS, sampling_rate: int = AISFX_SAMPLING_RATE,
                 padding_value: float = 0.0, max_length_s: float = 10.0, **kwargs):
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        self.max_length_s = max_length_s
        self.nb_max_samples = int(max_length_s * sampling_rate)
        self.hop_length = AISFX_HOP

    def __call__(self, raw_audio, sampling_rate: int | None = None, return_tensors: str | None = None,
                 return_attention_mask: bool | None = None, **kwargs) -> BatchFeature:
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(
                f"StarterFeatureExtractor expects audio at {self.sampling_rate} Hz, got {sampling_rate} Hz; resample "
                "first (the pipeline does)."
            )
        batch = [raw_audio] if isinstance(raw_audio, np.ndarray) and raw_audio.ndim == 1 else list(raw_audio)
        mels = [aisfx_log_mel(np.asarray(w, dtype=np.float32)) for w in batch]
        frames = max(m.shape[0] for m in mels)
        features = np.full((len(mels), frames, self.feature_size), self.padding_value, dtype=np.float32)
        mask = np.zeros((len(mels), frames), dtype=np.int64)
        for i, mel in enumerate(mels):
            features[i, : len(mel)] = mel
            mask[i, : len(mel)] = 1
        out = {"input_features": features}
        if return_attention_mask or (return_attention_mask is None and len({m.shape[0] for m in mels}) > 1):
            out["attention_mask"] = mask
        return BatchFeature(out, tensor_type=return_tensors)
