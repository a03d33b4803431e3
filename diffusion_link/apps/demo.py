"""`make demo`: caption a few sounds with the bundled starter captioner, and show the modality gap it closes.

    python -m diffusion_link.apps.demo [FILES ...] [--output_dir demo_output] [--data ../shared/data]

Without FILES it captions sounds that this module synthesises (a siren, an alarm, a ticking clock, wind-like noise,
and silence, which must be flagged rather than captioned). When the ESC-50 clips are available (`--data`, else
`$DIFFUSION_LINK_DATA`, else `../shared/data`) it also prints the modality-gap figures of the starter's held-out
clips against their class captions, before and after the bridge, and saves the plot.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


RATE = 44100


def synthetic_sounds(folder: str, seconds: float = 5.0) -> list[str]:
    """Write the demo's example sounds as wav files into `folder`; return their paths."""
    import soundfile as sf

    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(0)
    sweep = 700 + 500 * np.sin(2 * np.pi * 0.5 * t)  # a siren's rising and falling pitch
    sounds = {
        "siren.wav": 0.4 * np.sin(2 * np.pi * np.cumsum(sweep) / RATE),
        "alarm_beeps.wav": 0.4 * np.sin(2 * np.pi * 2000 * t) * ((t * 4) % 1 < 0.5),
        "clock_ticks.wav": np.where((t % 1.0) < 0.004, rng.standard_normal(len(t)), 0.0) * 0.6,
        "wind_noise.wav": np.convolve(rng.standard_normal(len(t)), np.ones(64) / 64, mode="same")
        * (0.5 + 0.5 * np.sin(2 * np.pi * 0.3 * t)) * 2.0,
        "silence.wav": np.zeros(len(t)),
    }
    os.makedirs(folder, exist_ok=True)
    paths = []
    for name, samples in sounds.items():
        path = os.path.join(folder, name)
        sf.write(path, samples.astype(np.float32), RATE)
        paths.append(path)
    return paths


def gap_report(pipe, data: str, output_dir: str) -> dict | None:
    """Gap figures of the starter's 150 held-out ESC-50 clips vs their class captions, raw and bridged."""
    import torch

    from diffusion_link.audio_io import load_audio
    from diffusion_link.metrics import format_gap_table, modality_gap, plot_modality_gap
    from diffusion_link.starter import STARTER_DIR

    audio_dir = os.path.join(data, "esc50", "audio")
    split_file = os.path.join(STARTER_DIR, "split.json")
    if not (os.path.isdir(audio_dir) and os.path.exists(split_file)):
        print(f"\n(no ESC-50 clips at {audio_dir}: skipping the modality-gap figures)")
        return None
    with open(split_file, encoding="utf-8") as f:
        test = json.load(f)["test"]
    with open(os.path.join(STARTER_DIR, "esc50_captions.json"), encoding="utf-8") as f:
        classes = json.load(f)["classes"]
    model = pipe.model
    rate = pipe.feature_extractor.sampling_rate
    waves = [load_audio(os.path.join(audio_dir, clip["filename"]), rate) for clip in test]
    audio = model.embed_audio(waveforms=waves, feature_extractor=pipe.feature_extractor, batch_size=16)
    text = model.embed_text([classes[clip["category"]][0] for clip in test])  # the captioner's own joint space
    with torch.no_grad():
        bridged = model.link(audio)
    report = {"raw": modality_gap(audio, text), "bridged": modality_gap(bridged, text)}
    print(f"\nModality gap of the {len(test)} held-out ESC-50 clips against their class captions "
          f"(starter space, bridge s*/T={model.bridge.config.strength}):\n")
    print(format_gap_table(report))
    plot = plot_modality_gap(audio, text, os.path.join(output_dir, "starter_gap.png"), bridged_embeds=bridged,
                             title="Starter space: held-out ESC-50 clips")
    print(f"plot: {plot}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", help="Audio files to caption (default: synthesised examples).")
    parser.add_argument("--output_dir", default="demo_output")
    parser.add_argument("--data", default=os.environ.get("DIFFUSION_LINK_DATA") or os.path.join("..", "shared", "data"))
    args = parser.parse_args(argv)

    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    from diffusion_link.starter import require_captioner

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        require_captioner(None)  # the demo shows the starter, which `pipeline("audio-captioning")` loads by default
    except (ValueError, ImportError) as err:  # no starter, or its bases not set up (named, with the command)
        print(f"error: {err}", file=sys.stderr)
        return 2
    start = time.time()
    pipe = pipeline("audio-captioning")  # the starter: no model argument, no download
    print(f"loaded the starter captioner in {time.time() - start:.1f} s")
    files = args.files or synthetic_sounds(os.path.join(args.output_dir, "sounds"))
    start = time.time()
    results = pipe(files, batch_size=8, on_error="report")
    print(f"\ncaptions ({len(files)} files, {time.time() - start:.1f} s):\n")
    for path, result in zip(files, results):
        text = result.get("error") or ("[silent]" if result["is_silent"] else result["generated_text"])
        if result.get("confidence") is not None:
            text += f"   (confidence {result['confidence']:.0%})"
        print(f"  {os.path.basename(path):24s} {text}")
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "captions.json"), "w", encoding="utf-8") as f:
        json.dump([{"file": p, **r} for p, r in zip(files, results)], f, indent=2)
    gap_report(pipe, args.data, args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
