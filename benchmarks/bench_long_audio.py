#!/usr/bin/env python
"""Memory and speed of captioning one long file with windows: the file is streamed, so memory stays bounded.

    python benchmarks/bench_long_audio.py [--model FOLDER] [--duration_s 3600] [--rate 16000] [--chunk_length_s 10]
                                          [--max_new_tokens 30] [--batch_size 8] [--in_memory]

Writes a synthetic mono file of `--duration_s` seconds (default one hour; 16-bit PCM at `--rate`, noise whose level
changes every few seconds, written a minute at a time so the writer stays small) into a temporary folder, loads the
captioner (default: the starter, as `pipeline("audio-captioning")` gives), warms it up on one batch of windows, then
captions the file with `chunk_length_s` windows and measures:

- `peak_rss_growth_mb`: growth of the process's peak resident memory (`ru_maxrss`) over the captioning call;
- `signal_mb`: the whole decoded signal as float32 at the encoder's rate (what decoding the file whole would hold);
- `peak_growth_over_signal_bytes`: their ratio (the streamed file: far below 1, and falling as the file gets longer;
  decoding it whole took about 2.3);
- `windows`, `windows_per_s`, `seconds`.

`--in_memory` decodes the whole file first (`prepare_audio`) and captions the array instead: the old behaviour, for
comparison. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

import numpy as np


def write_long_file(path: str, seconds: float, rate: int, seed: int = 0) -> None:
    """Mono 16-bit noise, its level changing every 5 s, written a minute at a time (the writer holds one minute)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    total, minute = int(seconds * rate), 60 * rate
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
        for start in range(0, total, minute):
            n = min(minute, total - start)
            levels = np.repeat(10 ** rng.uniform(-2.5, -0.7, size=n // (5 * rate) + 1), 5 * rate)[:n]
            f.write((levels * rng.standard_normal(n)).astype(np.float32))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> dict:
    from diffusion_link.pipeline_audio_captioning import DEFAULT_MAX_NEW_TOKENS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="A captioner folder or Hub id (default: the starter).")
    parser.add_argument("--duration_s", type=float, default=3600.0)
    parser.add_argument("--rate", type=int, default=16000, help="Sampling rate of the synthetic file.")
    parser.add_argument("--chunk_length_s", type=float, default=10.0)
    parser.add_argument("--max_new_tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--in_memory", action="store_true", help="Decode the whole file first (the old behaviour).")
    args = parser.parse_args(argv)

    import torch
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    import diffusion_link  # noqa: F401  (registers the task)
    from diffusion_link.audio_io import prepare_audio

    hf_logging.set_verbosity_error()
    pipe = pipeline("audio-captioning", model=args.model) if args.model else pipeline("audio-captioning")
    target = pipe.feature_extractor.sampling_rate
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "long.wav")
        write_long_file(path, args.duration_s, args.rate)
        # Warm up on one full batch of windows, so that the model's own buffers (activations, caches) are in the
        # "before" figure and the growth measured is what the file's length adds.
        warm_s = args.batch_size * args.chunk_length_s
        warm = (0.1 * np.random.default_rng(1).standard_normal(int(warm_s * args.rate))).astype(np.float32)
        pipe(warm, sampling_rate=args.rate, chunk_length_s=args.chunk_length_s, max_new_tokens=args.max_new_tokens,
             batch_size=args.batch_size)
        before = peak_rss_mb()
        started = time.perf_counter()
        with torch.inference_mode():
            if args.in_memory:
                audio = prepare_audio(path, target)
                out = pipe(audio.waveform, sampling_rate=target, chunk_length_s=args.chunk_length_s,
                           max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
            else:
                out = pipe(path, chunk_length_s=args.chunk_length_s, max_new_tokens=args.max_new_tokens,
                           batch_size=args.batch_size)
        seconds = time.perf_counter() - started
        growth = peak_rss_mb() - before
    signal_mb = args.duration_s * target * 4 / 2**20
    result = {
        "mode": "in_memory" if args.in_memory else "streamed",
        "model": args.model or "starter",
        "duration_s": out["duration_s"],
        "file_rate": args.rate,
        "encoder_rate": target,
        "chunk_length_s": args.chunk_length_s,
        "max_new_tokens": args.max_new_tokens,
        "windows": len(out["chunks"]),
        "audible_windows": sum(not c["is_silent"] for c in out["chunks"]),
        "seconds": round(seconds, 1),
        "windows_per_s": round(len(out["chunks"]) / seconds, 2),
        "peak_rss_growth_mb": round(growth, 1),
        "signal_mb": round(signal_mb, 1),
        "peak_growth_over_signal_bytes": round(growth / signal_mb, 4),
        "first_captions": [c["generated_text"] for c in out["chunks"][:3]],
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
