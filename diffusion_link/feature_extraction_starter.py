"""Feature extractor of the starter encoder: aiSFX's 96-band log-mel at 44.1 kHz (from `audio_io`)."""

from __future__ import annotations

import numpy as np
from transformers import BatchFeature, SequenceFeatureExtractor

from .audio_io import AISFX_HOP, AISFX_MELS, AISFX_SAMPLING_RATE, aisfx_log_mel


class StarterFeatureExtractor(SequenceFeatureExtractor):
    """Waveforms at 44.1 kHz -> `input_features` (B, frames, 96) zero-padded, and `attention_mask` (B, frames).

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

    def __call__(self, raw_audio, sampling_rate: int | None = None, return_tensors: str | None = None, **kwargs) -> BatchFeature:
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
        return BatchFeature({"input_features": features, "attention_mask": mask}, tensor_type=return_tensors)
