"""Stage "augment": waveform augmentation for the starter's audio head, what real recordings do to a clip that 250
clean ESC-50 clips never show the head, and the cached tower embeddings of the augmented clips.

`augmented_examples(waves, labels, folds, copies, seed, sampling_rate)` makes `copies` augmented versions of every
training clip. Each version draws, in order:
- vari-speed (resampling by 0.88-1.12: pitch and tempo together) or a phase-vocoder time stretch (0.85-1.15), with
  probability 0.5 each applied;
- a time shift (circular) and a random crop to 60-100 % of the clip, zero-padded back to its length;
- a background: with probability 0.3 another training clip of another class at 0-12 dB SNR, which makes a
  two-sound mixture captioned compositionally ("a dog barks while rain falls"); else, with probability 0.5,
  white, pink or brown noise at 5-30 dB SNR (the caption is unchanged);
- a random gain of -12 to +6 dB (peak-limited to 0.99).
The mixture partner comes from the same head fold as the clip, so an out-of-fold head never sees a clip of its own
fold inside a mixture, and the starter's test clips are never used at all: only the training clips are passed in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random

import numpy as np
import torch

from diffusion_link.starter.build.arguments import StarterArguments
from diffusion_link.starter.build.stages import stage
from diffusion_link.starter.world import StarterWorld, cached_tensors, embed_texts, text_tokenizer


logger = logging.getLogger("build_starter")


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white, pink (1/f) or brown (1/f^2) noise of `n` samples."""
    white = rng.standard_normal(n)
    if colour != "white":
        spectrum = np.fft.rfft(white)
        f = np.arange(len(spectrum), dtype=np.float64)
        f[0] = 1.0
        spectrum /= f ** (0.5 if colour == "pink" else 1.0)
        white = np.fft.irfft(spectrum, n)
    return white / (np.sqrt(np.mean(white**2)) + 1e-12)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12)


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    return x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))


def augment(wave: np.ndarray, rng: np.random.Generator, partner: np.ndarray | None) -> np.ndarray:
    """One augmented version of `wave` (float32, the clip's length); `partner` is mixed in when given."""
    n = len(wave)
    x = wave.astype(np.float64)
    if rng.random() < 0.5:
        rate = rng.uniform(0.88, 1.12)  # vari-speed: read the clip `rate` times as fast
        x = np.interp(np.arange(0, len(x) - 1, rate), np.arange(len(x)), x)
    if rng.random() < 0.5:
        import librosa

        x = librosa.effects.time_stretch(x.astype(np.float32), rate=float(rng.uniform(0.85, 1.15))).astype(np.float64)
    x = np.roll(fit_length(x, n), int(rng.integers(0, n)))
    keep = int(n * rng.uniform(0.6, 1.0))
    start = int(rng.integers(0, n - keep + 1))
    x = fit_length(x[start : start + keep], n)
    if partner is not None:
        snr = rng.uniform(0, 12)
        x = x + fit_length(partner.astype(np.float64), n) * rms(x) / rms(partner) / 10 ** (snr / 20)
    elif rng.random() < 0.5:
        snr = rng.uniform(5, 30)
        colour = ("white", "pink", "brown")[int(rng.integers(0, 3))]
        x = x + coloured_noise(n, colour, rng) * rms(x) / 10 ** (snr / 20)
    x = x * 10 ** (rng.uniform(-12, 6) / 20)
    peak = np.abs(x).max()
    if peak > 0.99:
        x = x * 0.99 / peak
    return x.astype(np.float32)


def mixture_caption(first: str, second: str) -> str:
    """"A dog barks" + "Rain falls" -> "A dog barks while rain falls"."""
    first, second = first.strip().rstrip("."), second.strip().rstrip(".")
    return f"{first} while {second[:1].lower()}{second[1:]}"


def augmented_examples(waves: list[np.ndarray], labels: list[int], folds: list[int], copies: int, seed: int,
                       mixture_probability: float = 0.3) -> list[dict]:
    """`copies` augmented versions of each clip: dicts with `wave`, `clip` (the source row), `label` and `partner`
    (the mixed-in clip's row, or -1)."""
    rng = np.random.default_rng(seed)
    out = []
    for copy in range(copies):
        for row, wave in enumerate(waves):
            partner = -1
            if rng.random() < mixture_probability:
                others = [r for r in range(len(waves)) if folds[r] == folds[row] and labels[r] != labels[row]]
                if others:
                    partner = int(others[int(rng.integers(0, len(others)))])
            out.append({"wave": augment(wave, rng, waves[partner] if partner >= 0 else None), "clip": row,
                        "label": labels[row], "partner": partner, "copy": copy})
    return out


@stage("augment")
def augmented_tower_embeddings(args: StarterArguments, world: StarterWorld, encoder, split: dict,
                               folds: list[int]) -> dict[str, torch.Tensor] | None:
    """Tower embeddings of `head_augmentation_copies` augmented versions of each training clip (cached), with
    `clip`, `label`, `partner` (-1: no mixture) and `text` (a mixture's compositional caption embedding); None with
    no copies."""
    if not args.head_augmentation_copies:
        return None
    # Mixtures pair clips within a fold, so the cache is keyed by the folds too.
    key = hashlib.sha1(json.dumps([args.head_augmentation_copies, args.seed, folds]).encode()).hexdigest()[:10]
    path = os.path.join(args.work_dir, f"towers_augmented_{key}.safetensors")
    return cached_tensors(path, lambda: _augmented(args, world, encoder, split, folds))


@torch.no_grad()
def _augmented(args: StarterArguments, world: StarterWorld, encoder, split: dict, folds: list[int]) -> dict:
    from diffusion_link.audio_io import load_audio
    from diffusion_link.starter.feature_extraction_starter_encoder import StarterFeatureExtractor

    fe = StarterFeatureExtractor()
    waves = [load_audio(world.audio_path(clip), fe.sampling_rate) for clip in split["train"]]
    labels = [clip["target"] for clip in split["train"]]
    examples = augmented_examples(waves, labels, folds, args.head_augmentation_copies, seed=args.seed + 1)
    audio = []
    for start in range(0, len(examples), 32):
        features = fe([e["wave"] for e in examples[start : start + 32]], return_tensors="pt")
        audio.append(encoder.audio_tower_embeddings(features["input_features"], features.get("attention_mask")))
    rng = random.Random(args.seed + 2)
    mixtures = [i for i, e in enumerate(examples) if e["partner"] >= 0]
    texts = [mixture_caption(rng.choice(world.captions.captions(examples[i]["label"])),
                             rng.choice(world.captions.captions(labels[examples[i]["partner"]])))
             for i in mixtures]
    text = torch.zeros(len(examples), encoder.config.text_config.hidden_size)
    if mixtures:
        text[mixtures] = embed_texts(encoder, text_tokenizer(encoder), texts, "mixture captions")
    logger.info("  augment: %d versions of %d clips, %d mixtures", len(examples), len(waves), len(mixtures))
    return {"audio": torch.cat(audio), "text": text,
            **{k: torch.tensor([e[k] for e in examples]) for k in ("clip", "label", "partner")}}
