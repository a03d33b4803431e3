#!/usr/bin/env python
"""The committed starter captioner on the 150 held-out ESC-50 clips: quality with and without the bridge, speed, memory.

    python benchmarks/bench_starter.py [--data ../shared/data] [--predictions captions.jsonl]

- **Class accuracy** (`diffusion_link.metrics.caption_class_accuracy`): a caption counts as right when its nearest
  class (the mean MiniLM embedding of the class's five captions in `diffusion_link/starter/esc50_captions.json`) is
  the clip's class; an empty caption counts as wrong. Three decoder inputs:
  - `diffusion_link`: the audio through the pipeline, bridge included (what `diffusion-link caption` prints); with
    `--predictions`, the JSON lines that `diffusion-link caption ... --output` wrote are scored instead;
  - `identity`: the raw audio embedding, no bridge (the baseline the paper improves on);
  - `text_oracle`: the MiniLM embedding of one of the clip's class captions (the upper limit).
  - `diffusion_link_greedy`: the same pipeline with greedy decoding (`num_candidates=1`), when the model's default
    decoding is not greedy.
- **Speed**: the latency of one clip and the throughput at batch 8 (through the pipeline, its default decoding); and
  for greedy and for the default decoding, clips/s at batch 8 and 16 through the pipeline on the first 48 clips,
  with the ratio to the bare language model's `generate` on the same prefixes (`pipeline_over_bare_lm`: how much of
  the pipeline's time is decoding; the faster of `ROUNDS` alternating rounds of each) and the default decoding's time
  per clip over greedy's (`default_over_greedy`). The model is loaded as `diffusion-link caption` loads it
  (`load_captioning_pipeline`: LoRA merged), and the bare LM is that same merged LM.
- **Memory**: the process's peak resident memory.

The last line is one JSON object of figures measured in this run; the ratios (`ratio_to_oracle`,
`gain_over_identity`, `batch8_speedup` = throughput at batch 8 x one-clip latency) do not drift with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import torch

ROUNDS = 2  # of each side of a speed ratio, alternating

def main(argv: list[str] | None = None) -> dict:
    from diffusion_link.configuration_diffusion_link_captioner import DEFAULT_MAX_NEW_TOKENS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("DIFFUSION_LINK_DATA") or os.path.join("..", "shared", "data"))
    parser.add_argument("--predictions", help="JSON lines written by `diffusion-link caption --output`, to score.")
    parser.add_argument("--max_new_tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from diffusion_link.apps.loading import load_captioning_pipeline
    from diffusion_link.audio_io import load_audio
    from diffusion_link.embedding_extraction import embed_audio, embed_text
    from diffusion_link.hub.references import resolve_reference
    from diffusion_link.metrics import caption_class_accuracy
    from diffusion_link.starter import default_captioner
    from diffusion_link.starter.world import StarterWorld, read_split

    hf_logging.set_verbosity_error()
    audio_dir = os.path.join(args.data, "esc50", "audio")
    if default_captioner() is None or not os.path.isdir(audio_dir):
        sys.exit(f"needs the committed starter and the ESC-50 clips at {audio_dir}")
    test = read_split()["test"]
    captions = StarterWorld(data=args.data).captions
    labels = [captions.index(clip["category"]) for clip in test]
    files = [os.path.join(audio_dir, clip["filename"]) for clip in test]

    pipe = load_captioning_pipeline()  # as `diffusion-link caption` loads it (LoRA merged for captioning)
    model = pipe.model
    encoder = model.audio_tower
    minilm_tokenizer = AutoTokenizer.from_pretrained(resolve_reference(encoder.config.text_model_name_or_path))
    prototypes = captions.prototypes(embed_text(encoder, minilm_tokenizer, captions.texts))

    # Speed first, before anything else fills the caches: one clip, then batches of 8.
    pipe(files[0], max_new_tokens=args.max_new_tokens)  # warm-up
    start = time.perf_counter()
    pipe(files[1], max_new_tokens=args.max_new_tokens)
    latency = time.perf_counter() - start
    start = time.perf_counter()
    results = pipe(files, batch_size=8, max_new_tokens=args.max_new_tokens)
    throughput = len(files) / (time.perf_counter() - start)
    bridged = [r["generated_text"] for r in results]
    if args.predictions:
        with open(args.predictions, encoding="utf-8") as f:
            rows = {row["file"]: row for row in map(json.loads, f)}
        missing = [p for p in files if p not in rows]
        if missing:
            sys.exit(f"{args.predictions} has no caption for {len(missing)} test clips, e.g. {missing[0]}")
        bridged = [rows[p].get("generated_text", "") for p in files]

    # The same decoder fed the raw audio embedding (no bridge) and a reference caption's text embedding (oracle).
    rate = pipe.feature_extractor.sampling_rate
    audio = embed_audio(encoder, pipe.feature_extractor, [load_audio(p, rate) for p in files], batch_size=16)
    # The oracle takes the clips' captions in turn: the i-th test clip gets caption i modulo its label's count.
    oracle_texts = [captions.captions(label)[i % len(captions.captions(label))] for i, label in enumerate(labels)]
    oracle = embed_text(encoder, minilm_tokenizer, oracle_texts)

    def decode(embeds: torch.Tensor) -> list[str]:
        return model.caption_embeds(embeds, pipe.tokenizer, max_new_tokens=args.max_new_tokens, batch_size=16)

    decoded = {"diffusion_link": bridged, "identity": decode(audio), "text_oracle": decode(oracle)}
    if getattr(model.config, "num_candidates", 1) > 1:
        greedy = pipe(files, batch_size=8, max_new_tokens=args.max_new_tokens, num_candidates=1)
        decoded["diffusion_link_greedy"] = [r["generated_text"] for r in greedy]
    prompt = torch.tensor([pipe.tokenizer(model.config.prompt, add_special_tokens=False).input_ids])
    speed = decoding_speed(pipe, files[:48], audio[:48], prompt, args.max_new_tokens)
    accuracy = {k: caption_class_accuracy(v, labels, prototypes, lambda texts: embed_text(encoder, minilm_tokenizer, texts))
                for k, v in decoded.items()}
    for k, v in decoded.items():
        print(f"{k:15s} class accuracy {accuracy[k]:.3f}   e.g. {v[:3]}")
    result = {
        "clips": len(files),
        "class_accuracy": accuracy,
        "ratio_to_oracle": accuracy["diffusion_link"] / max(accuracy["text_oracle"], 1e-9),
        "gain_over_identity": accuracy["diffusion_link"] / max(accuracy["identity"], 1e-9) - 1,
        "latency_one_clip_s": round(latency, 3),
        "clips_per_s_batch8": round(throughput, 3),
        "batch8_speedup": round(throughput * latency, 3),
        "decoding_speed": speed,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "scored": args.predictions or "pipeline",
    }
    print(json.dumps(result))
    return result


def decoding_speed(pipe, files: list[str], audio: torch.Tensor, prompt: torch.Tensor, max_new_tokens: int) -> dict:
    """clips/s of greedy and of the model's default decoding at batch 8 and 16, through the pipeline and through the
    bare LM's `generate` on the same prefixes (bridged audio + prompt), measured back to back in this run."""
    from diffusion_link.reranking import candidate_generate_kwargs

    model = pipe.model
    default_k = getattr(model.config, "num_candidates", 1)
    prefixes = model.prefix_from_embeds(model.link(audio))
    out = {"num_candidates": default_k}
    for name, k in (("greedy", 1), ("default", default_k)):
        lm_kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False}
        if k > 1:
            lm_kwargs = candidate_generate_kwargs(k, lm_kwargs)
        for batch in (8, 16):

            def through_pipeline():
                pipe(files, batch_size=batch, max_new_tokens=max_new_tokens, num_candidates=k)

            def bare_lm():
                with torch.no_grad():
                    for s in range(0, len(files), batch):
                        rows = prefixes[s : s + batch]
                        embeds, mask, _ = model._with_prefix(rows, prompt.expand(len(rows), -1), None, None)
                        model.language_model.generate(inputs_embeds=embeds, attention_mask=mask, **lm_kwargs)

            # Alternating rounds, the faster of each side: a drift in the machine's load hits both.
            pipeline_s, bare_s = [], []
            for _ in range(ROUNDS):
                for run, times in ((through_pipeline, pipeline_s), (bare_lm, bare_s)):
                    start = time.perf_counter()
                    run()
                    times.append(time.perf_counter() - start)
            pipeline_rate, bare_rate = len(files) / min(pipeline_s), len(files) / min(bare_s)
            out[f"{name}_batch{batch}"] = {"pipeline_clips_per_s": round(pipeline_rate, 3),
                                           "bare_lm_clips_per_s": round(bare_rate, 3),
                                           "pipeline_over_bare_lm": round(bare_rate / pipeline_rate, 3)}
    for batch in (8, 16):
        out[f"default_over_greedy_batch{batch}"] = round(
            out[f"greedy_batch{batch}"]["pipeline_clips_per_s"] / out[f"default_batch{batch}"]["pipeline_clips_per_s"], 3)
    return out


if __name__ == "__main__":
    main()
