#!/usr/bin/env python
"""Overhead of `pipeline("audio-captioning")` over the bare language model, measured in one run.

    python benchmarks/bench_pipeline.py [--batch 8] [--new_tokens 20] [--seconds 5] [--repeats 3] [--num_candidates 2]

The captioner is a tiny random CLAP audio tower and bridge in front of a *random* LLaMA of SmolLM2-135M's size (30
layers, width 576, vocab 49152), so that generation costs what it costs in a real small captioner. Both sides
generate exactly `--new_tokens` tokens (`min_new_tokens` = `max_new_tokens`), greedy; with `--num_candidates k`, both
run a k-beam search returning k captions a clip, and the pipeline also scores and reranks them (the audio tower's text
side embeds every candidate), which is the glue this measures.

- `captions_per_s`: the pipeline on `--batch` clips of `--seconds` s at 44.1 kHz, everything included (decoding
  checks, resampling, features, audio tower, bridge, prefix, generation, detokenising);
- `bare_generate_per_s`: `language_model.generate` alone on the same prefixes (computed before timing);
- `ratio`: captions_per_s / bare_generate_per_s (goal: at least 0.9). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def best_times(fns, repeats: int) -> list[float]:
    """Best wall time of each function. The functions take turns in every round, so a change in the machine's load
    hits both sides of the ratio alike instead of one side only."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def smollm_sized_captioner(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    from diffusion_link import AudioCaptionPipeline, DiffusionLinkCaptionerConfig, DiffusionLinkConfig
    from diffusion_link import DiffusionLinkForAudioCaptioning
    from diffusion_link.testing import tiny_clap, tiny_llama_tokenizer

    clap, processor = tiny_clap(seed=seed)
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(seed)
    lm = LlamaForCausalLM(LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    ))
    config = DiffusionLinkCaptionerConfig(
        audio_config=clap.config, text_config=lm.config,
        bridge_config=DiffusionLinkConfig(embedding_dim=clap.config.projection_dim, hidden_size=48),
        prefix_length=4, prompt="", lora_r=8, lora_alpha=16,
    )
    model = DiffusionLinkForAudioCaptioning(config, audio_tower=clap, language_model=lm).eval()
    return AudioCaptionPipeline(model=model, tokenizer=tokenizer, feature_extractor=processor.feature_extractor,
                                audio_text_tokenizer=processor.tokenizer)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new_tokens", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num_candidates", type=int, default=1)
    args = parser.parse_args()
    from diffusion_link.reranking import candidate_generate_kwargs


    pipe = smollm_sized_captioner()
    rate = 44100
    clips = [(0.1 * np.random.default_rng(i).standard_normal(int(args.seconds * rate))).astype(np.float32)
             for i in range(args.batch)]
    gen = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens}
    bare_gen = candidate_generate_kwargs(args.num_candidates, gen) if args.num_candidates > 1 else gen

    def run_pipeline():
        out = pipe(clips, sampling_rate=rate, batch_size=args.batch, generate_kwargs=gen,
                   num_candidates=args.num_candidates)
        assert len(out) == args.batch

    # The same prefixes, outside the timed region.
    from diffusion_link.audio_io import prepare_audio

    model = pipe.model
    waves = [prepare_audio(c, pipe.feature_extractor.sampling_rate, rate).waveform for c in clips]
    with torch.no_grad():
        embeds = model.link(model.embed_audio(waveforms=waves, feature_extractor=pipe.feature_extractor,
                                              batch_size=args.batch))
        inputs_embeds, mask, _ = model._with_prefix(model.prefix_from_embeds(embeds), None, None, None)

    def run_bare():
        with torch.no_grad():
            out = model.language_model.generate(inputs_embeds=inputs_embeds, attention_mask=mask, do_sample=False,
                                                **bare_gen)
        ids = out.sequences if args.num_candidates > 1 else out
        assert ids.shape == (args.batch * args.num_candidates, args.new_tokens)

    pipe_time, bare_time = best_times([run_pipeline, run_bare], args.repeats)
    result = {
        "captions_per_s": args.batch / pipe_time,
        "bare_generate_per_s": args.batch / bare_time,
        "ratio": bare_time / pipe_time,
        "batch": args.batch,
        "num_candidates": args.num_candidates,
        "new_tokens": args.new_tokens,
        "clip_seconds": args.seconds,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
