#!/usr/bin/env python
"""Memory plan and GPU figures of the paper's captioner at its real size: CLAP HTSAT-unfused + Llama-2-7b, LM in
bf16, LoRA r=8/alpha=32 on q_proj,v_proj, prefix 10, bridge hidden 1024 (all read from `training/configs/`).

    python benchmarks/bench_paper_scale.py [--gpu_memory_gb 24 40 80] [--caption_tokens 30] [--output_json F]
    python benchmarks/bench_paper_scale.py --device cpu --tiny        # the run path on tiny configs, on the CPU

1. The plan (always; nothing is downloaded or allocated): the captioner is built on the `meta` device from
   `training/configs/architectures/*.json`, and one training step at the recipe's `per_device_train_batch_size` (16)
   and sequence length (BOS + prefix + `--prompt_tokens` + `--caption_tokens` + EOS) is priced, in GiB:
   - `parameters`: every weight at its dtype (tower fp32, bridge fp32, LM bf16, LoRA and projector fp32);
   - `gradients`: the trainable parameters only (fp32);
   - `optimizer`: AdamW's two fp32 states per trainable parameter;
   - `activations`: the bytes autograd saves for backward, counted with `saved_tensors_hooks` during a forward
     pass on `meta` at full size (parameters excluded). Off: every layer's; on (gradient checkpointing): each
     layer's input, plus one layer recomputed during backward, plus the head (final norm, lm_head, loss). The meta
     pass runs without autocast (fp32 copies in RMSNorm and LoRA are counted) and with the math attention kernel,
     so it is an estimate; the run below reports measured peak / plan.
   A plan fits a GPU when the total is at most (1 - `--headroom`) of its memory (room for the CUDA context,
   allocator fragmentation and the transient tensors of backward).
2. The run (when `torch.cuda.is_available()`, or forced with `--device cpu`): the full-size captioner with RANDOM
   weights (no download) runs `--warmup_steps` + `--steps` `transformers.Trainer` steps (bf16, `report_to="none"`)
   on random audio features through the CLAP tower (`--inputs input_features`; `audio_embeds` skips the tower) and
   random caption tokens, with gradient checkpointing off and on, then one batch of `--generate_batch` greedy
   captions of exactly `--new_tokens` tokens. Ratios, each measured in this run:
   - `peak_over_gpu_memory`: torch.cuda.max_memory_allocated / the GPU's total memory;
   - `peak_over_plan`: the same peak / the plan's total for that setting;
   - `steps_per_s_over_bare_lm`: Trainer steps/s / steps/s of a bare LM forward + backward (no optimizer, no
     tower, no bridge) on the same batch shape;
   - `captions_per_s_over_bare_generate`: captioner `generate` / the LM's own `generate` on prefixes of the same
     length.
   Without CUDA (and without `--device cpu`) the run is skipped and said so.

`--tiny` swaps in tiny CLAP and LLaMA configs (same code path) so that the run can be smoke-tested on a CPU in
seconds. The last line printed is one JSON object (also written to `--output_json`).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time

import torch
from transformers import TrainerCallback


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

CONFIGS = os.path.join(REPO_ROOT, "training", "configs")
CLAP_CONFIG = os.path.join(CONFIGS, "architectures", "clap_htsat_unfused_config.json")
LLAMA_CONFIG = os.path.join(CONFIGS, "architectures", "llama2_7b_config.json")
CAPTIONER_RECIPE = os.path.join(CONFIGS, "paper_captioner_llama2_zero_shot.json")
BRIDGE_RECIPE = os.path.join(CONFIGS, "paper_bridge_clap.json")
GIB = 2**30
# ClapFeatureExtractor(truncation="rand_trunc") output of one 10 s clip: (1 channel, 1001 frames, 64 mel bins).
FEATURE_SHAPE = (1, 1001, 64)
GC_MODES = ("off", "on")


def architectures(tiny: bool):
    """(ClapConfig, LlamaConfig): the real ones from the committed files, or tiny stand-ins for a CPU smoke run."""
    from transformers import ClapConfig, LlamaConfig

    if not tiny:
        return ClapConfig.from_json_file(CLAP_CONFIG), LlamaConfig.from_json_file(LLAMA_CONFIG)
    clap = ClapConfig(
        text_config=dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=37, max_position_embeddings=72),
        # spec_size 256 with 64 mel bins, as the real tower: smaller spectrogram sizes reject 10 s clips.
        audio_config=dict(spec_size=256, num_mel_bins=64, patch_embeds_hidden_size=8, hidden_size=64,
                          depths=[1, 1, 1, 1], num_attention_heads=[2, 2, 2, 2], window_size=8, enable_fusion=False),
        projection_dim=24,
    )
    llama = LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2)
    return clap, llama


def read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def captioner_config(clap, llama, tiny: bool):
    """The captioner config of the paper recipe (prefix, prompt, LoRA, referenced bases, bridge size)."""
    from diffusion_link import DiffusionLinkCaptionerConfig, DiffusionLinkConfig

    recipe, bridge = read_json(CAPTIONER_RECIPE), read_json(BRIDGE_RECIPE)
    return DiffusionLinkCaptionerConfig(
        audio_config=clap,
        text_config=llama,
        bridge_type=bridge["bridge_type"],
        bridge_config=DiffusionLinkConfig(
            embedding_dim=clap.projection_dim,
            hidden_size=48 if tiny else bridge["hidden_size"],
            num_blocks=bridge["num_blocks"],
        ),
        prefix_length=recipe["prefix_length"],
        prompt=recipe["prompt"],
        lora_r=recipe["lora_r"],
        lora_alpha=recipe["lora_alpha"],
        lora_dropout=recipe["lora_dropout"],
        lora_target_modules=recipe["lora_target_modules"].split(","),
        base_weights=recipe["base_weights"],
        audio_tower_name_or_path=recipe["audio_tower_name_or_path"],
        language_model_name_or_path=recipe["language_model_name_or_path"],
    )


def build_captioner(config, device: str, lm_dtype: torch.dtype):
    """Random-weight captioner on `device`: what `from_pretrained_parts(..., dtype=lm_dtype)` builds from real
    weights (tower fp32, LM in `lm_dtype`, bridge and projector fp32, LoRA fp32)."""
    from transformers import AutoModel, AutoModelForCausalLM

    from diffusion_link import DiffusionLinkForAudioCaptioning

    with torch.device(device):
        tower = AutoModel.from_config(config.audio_config)
        lm = AutoModelForCausalLM.from_config(config.text_config, dtype=lm_dtype)
        model = DiffusionLinkForAudioCaptioning(config, audio_tower=tower, language_model=lm)
    return model


def sequence_length(prefix_length: int, prompt_tokens: int, caption_tokens: int) -> int:
    # [BOS] [prefix] [prompt] [caption] [EOS], as the captioner and train_captioner's collator lay it out.
    return 1 + prefix_length + prompt_tokens + caption_tokens + 1


def saved_activation_bytes(model, batch: int, tokens: int) -> dict[str, int]:
    """Bytes autograd keeps for backward in one training forward (parameters excluded), split into one decoder layer
    (the largest), the layers' inputs, and the rest (projector, embeddings, final norm, lm_head, loss).

    `tokens` is the number after the prefix (prompt + caption + EOS). Runs on whatever device `model` is on (meta:
    no memory, no compute)."""
    lm = model.language_model
    layers = lm.get_decoder().layers
    device = next(model.parameters()).device
    owned = {t.untyped_storage()._cdata for t in (*model.parameters(), *model.buffers())}
    section, seen = ["rest"], {}

    def pack(tensor):
        key = tensor.untyped_storage()._cdata
        if key not in owned and key not in seen:
            seen[key] = (section[0], tensor.untyped_storage().nbytes())
        return tensor

    hooks = []
    for i, layer in enumerate(layers):
        hooks.append(layer.register_forward_pre_hook(lambda m, a, i=i: section.__setitem__(0, i)))
        hooks.append(layer.register_forward_hook(lambda m, a, o: section.__setitem__(0, "rest")))
    was_training = model.training
    model.train()
    try:
        embeds = torch.empty(batch, model.config.embedding_dim, device=device)
        ids = torch.zeros(batch, tokens, dtype=torch.long, device=device)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            prefix = model.prefix_from_embeds(embeds)  # (B, P, H), requires grad through the projector
            embed_tokens = lm.get_input_embeddings()
            bos = embed_tokens(torch.zeros(batch, 1, dtype=torch.long, device=device))
            inputs_embeds = torch.cat([bos, prefix, embed_tokens(ids)], dim=1)  # (B, L, H)
            labels = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long, device=device)
            lm(inputs_embeds=inputs_embeds, labels=labels)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    per_layer = [0] * len(layers)
    rest = 0
    for where, nbytes in seen.values():
        if where == "rest":
            rest += nbytes
        else:
            per_layer[where] += nbytes
    seq = inputs_embeds.shape[1]
    layer_input = batch * seq * lm.config.hidden_size * inputs_embeds.element_size()
    return {"per_layer": max(per_layer), "num_layers": len(layers), "layer_input": layer_input, "rest": rest}


def memory_plan(config, lm_dtype: torch.dtype, batch: int, prompt_tokens: int, caption_tokens: int) -> dict:
    """Memory of one training step, in bytes, for gradient checkpointing off and on (see the module docstring)."""
    model = build_captioner(config, "meta", lm_dtype)

    def nbytes(params):
        return sum(p.numel() * p.element_size() for p in params)

    lm_named = list(model.language_model.named_parameters())
    parts = {
        "audio_tower": nbytes(model.audio_tower.parameters()),
        "bridge": nbytes(model.bridge.parameters()),
        "language_model": nbytes(p for n, p in lm_named if "lora_" not in n),
        "lora": nbytes(p for n, p in lm_named if "lora_" in n),
        "projector": nbytes(model.multi_modal_projector.parameters()),
    }
    trainable = [p for p in model.parameters() if p.requires_grad]
    parameters = sum(parts.values())
    gradients = nbytes(trainable)
    optimizer = 2 * 4 * sum(p.numel() for p in trainable)  # AdamW exp_avg + exp_avg_sq, fp32
    seq = sequence_length(config.prefix_length, prompt_tokens, caption_tokens)
    act = saved_activation_bytes(model, batch, seq - 1 - config.prefix_length)
    activations = {
        "off": act["num_layers"] * act["per_layer"] + act["rest"],
        "on": act["num_layers"] * act["layer_input"] + act["per_layer"] + act["rest"],
    }
    plan = {
        "batch": batch, "sequence_length": seq, "trainable_parameters": sum(p.numel() for p in trainable),
        "parameter_bytes_by_part": parts, "activation_detail": act, "settings": {},
    }
    for mode in GC_MODES:
        total = parameters + gradients + optimizer + activations[mode]
        plan["settings"][mode] = {
            "parameters": parameters, "gradients": gradients, "optimizer": optimizer,
            "activations": activations[mode], "total": total,
        }
    return plan


def print_plan(plan: dict, gpu_sizes: list[float], headroom: float) -> dict:
    fits = {}
    print(f"Training step plan: batch {plan['batch']} x {plan['sequence_length']} tokens, "
          f"{plan['trainable_parameters']:,} trainable parameters (GiB)")
    header = f"{'grad. ckpt':<10} {'params':>8} {'grads':>8} {'optim':>8} {'activ.':>8} {'total':>8}"
    header += "".join(f" {f'{g:g} GB':>10}" for g in gpu_sizes)
    print(header)
    for mode in GC_MODES:
        row = plan["settings"][mode]
        line = f"{mode:<10}" + "".join(
            f" {row[k] / GIB:8.2f}" for k in ("parameters", "gradients", "optimizer", "activations", "total"))
        for gpu in gpu_sizes:
            ok = row["total"] <= (1.0 - headroom) * gpu * GIB
            fits[f"{gpu:g}GB_gc_{mode}"] = ok
            cell = f"{'fits' if ok else 'NO'} {row['total'] / (gpu * GIB):.0%}"
            line += f" {cell:>10}"
        print(line)
    print(f"(fits: total <= {1 - headroom:.0%} of the GPU's memory; the percentage is total / memory)")
    return fits


class StepTimer(TrainerCallback):
    """Trainer callback: a timestamp at the end of every optimizer step, after `sync()` (a device sync)."""

    def __init__(self, sync):
        self.sync, self.times = sync, []

    def on_step_end(self, args, state, control, **kwargs):
        self.sync()
        self.times.append(time.perf_counter())


class RandomCaptionRows(torch.utils.data.Dataset):
    """Random training rows: audio features (or audio embeddings) and prompt + caption + EOS token ids."""

    def __init__(self, n: int, inputs: str, embedding_dim: int, vocab: int, prompt_tokens: int, caption_tokens: int,
                 eos: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.inputs = inputs
        shape = FEATURE_SHAPE if inputs == "input_features" else (embedding_dim,)
        self.audio = torch.randn(n, *shape, generator=g)
        ids = torch.randint(3, vocab, (n, prompt_tokens + caption_tokens), generator=g)
        self.input_ids = torch.cat([ids, torch.full((n, 1), eos)], dim=1)
        self.labels = self.input_ids.clone()
        self.labels[:, :prompt_tokens] = -100  # the prompt is input, never target

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {self.inputs: self.audio[i], "input_ids": self.input_ids[i],
                "attention_mask": torch.ones_like(self.input_ids[i]), "labels": self.labels[i]}


def run(config, args, plan: dict) -> dict:
    """Trainer steps, a bare-LM baseline, and one batch of generations, with random weights at the configs' size."""
    from transformers import Trainer, TrainingArguments, default_data_collator

    device = args.device
    cuda = device == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def reset_peak():
        if cuda:
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak():
        return torch.cuda.max_memory_allocated() if cuda else None

    total_memory = torch.cuda.get_device_properties(0).total_memory if cuda else None
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model = build_captioner(config, device, torch.bfloat16)
    sync()
    result = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "gpu_total_memory": total_memory,
              "build_s": time.perf_counter() - start, "train": {}}
    llama = config.text_config
    steps = args.warmup_steps + args.steps
    batch = args.batch_size
    rows = RandomCaptionRows(steps * batch, args.inputs, config.embedding_dim, llama.vocab_size, args.prompt_tokens,
                             args.caption_tokens, llama.eos_token_id, seed=args.seed)
    seq = plan["sequence_length"]

    for mode in args.gradient_checkpointing:
        model.gradient_checkpointing_disable()
        model.zero_grad(set_to_none=True)
        reset_peak()
        timer = StepTimer(sync)
        with tempfile.TemporaryDirectory() as out:
            training_args = TrainingArguments(
                output_dir=out, per_device_train_batch_size=batch, max_steps=steps, learning_rate=1e-4,
                bf16=True, gradient_checkpointing=mode == "on", report_to="none", save_strategy="no",
                logging_strategy="no", disable_tqdm=True, remove_unused_columns=False, dataloader_num_workers=0,
                dataloader_pin_memory=cuda, use_cpu=not cuda, seed=args.seed,
            )
            trainer = Trainer(model=model, args=training_args, train_dataset=rows,
                              data_collator=default_data_collator, callbacks=[timer])
            trainer.train()
        train_peak = peak()
        times = timer.times
        steps_per_s = args.steps / (times[-1] - times[args.warmup_steps - 1])
        del trainer
        model.zero_grad(set_to_none=True)

        # Baseline: the bare LM (LoRA included) forward + backward on the same batch shape, same checkpointing.
        lm = model.language_model
        reset_peak()
        embeds = torch.randn(batch, seq, llama.hidden_size, device=device, dtype=torch.bfloat16, requires_grad=True)
        labels = torch.randint(3, llama.vocab_size, (batch, seq), device=device)
        lm.train()
        stamps = []
        for _ in range(steps):
            with torch.autocast(device_type=device, dtype=torch.bfloat16):
                loss = lm(inputs_embeds=embeds, labels=labels).loss
            loss.backward()
            lm.zero_grad(set_to_none=True)
            embeds.grad = None
            sync()
            stamps.append(time.perf_counter())
        bare_peak = peak()
        bare_steps_per_s = args.steps / (stamps[-1] - stamps[args.warmup_steps - 1])
        planned = plan["settings"][mode]["total"]
        result["train"][mode] = {
            "steps_per_s": steps_per_s, "bare_lm_steps_per_s": bare_steps_per_s,
            "steps_per_s_over_bare_lm": steps_per_s / bare_steps_per_s,
            "peak_bytes": train_peak, "bare_lm_peak_bytes": bare_peak, "planned_bytes": planned,
            "peak_over_gpu_memory": train_peak / total_memory if cuda else None,
            "peak_over_plan": train_peak / planned if cuda else None,
        }
        del embeds, labels, loss
    model.gradient_checkpointing_disable()
    model.zero_grad(set_to_none=True)
    model.eval()

    # One batch of greedy captions of exactly `new_tokens` tokens, against the LM's own generate on equal prefixes.
    n = args.generate_batch
    audio = rows.audio[:n].to(device)
    prompt = rows.input_ids[:1, : args.prompt_tokens].to(device)
    gen = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens, "pad_token_id": llama.eos_token_id}
    head = sequence_length(config.prefix_length, args.prompt_tokens, 0) - 1  # BOS + prefix + prompt
    prefixes = torch.randn(n, head, llama.hidden_size, device=device, dtype=torch.bfloat16)
    mask = torch.ones(n, head, dtype=torch.long, device=device)

    def captioner_generate():
        return model.generate(**{args.inputs: audio}, input_ids=prompt, **gen)

    def bare_generate():
        return model.language_model.generate(inputs_embeds=prefixes, attention_mask=mask, do_sample=False, **gen)

    reset_peak()
    timings = {}
    for name, fn in (("captioner", captioner_generate), ("bare", bare_generate)):
        fn()  # warm-up
        best = float("inf")
        for _ in range(args.generate_repeats):
            sync()
            t0 = time.perf_counter()
            ids = fn()
            sync()
            best = min(best, time.perf_counter() - t0)
        assert ids.shape == (n, args.new_tokens), ids.shape
        timings[name] = best
    gen_peak = peak()
    result["generate"] = {
        "batch": n, "new_tokens": args.new_tokens, "captions_per_s": n / timings["captioner"],
        "bare_generate_captions_per_s": n / timings["bare"],
        "captions_per_s_over_bare_generate": timings["bare"] / timings["captioner"],
        "peak_bytes": gen_peak, "peak_over_gpu_memory": gen_peak / total_memory if cuda else None,
    }
    return result


def print_run(result: dict) -> None:
    print(f"\nRun on {result['device']} (random weights; built in {result['build_s']:.1f} s)")
    for mode, r in result["train"].items():
        line = (f"train, gradient checkpointing {mode}: {r['steps_per_s']:.3f} steps/s "
                f"({r['steps_per_s_over_bare_lm']:.2f} x bare LM fwd+bwd at {r['bare_lm_steps_per_s']:.3f}/s)")
        if r["peak_bytes"] is not None:
            line += (f"; peak {r['peak_bytes'] / GIB:.2f} GiB = {r['peak_over_gpu_memory']:.1%} of the GPU, "
                     f"{r['peak_over_plan']:.2f} x plan")
        print(line)
    g = result["generate"]
    line = (f"generate {g['batch']} x {g['new_tokens']} tokens: {g['captions_per_s']:.2f} captions/s "
            f"({g['captions_per_s_over_bare_generate']:.2f} x the LM's own generate)")
    if g["peak_bytes"] is not None:
        line += f"; peak {g['peak_bytes'] / GIB:.2f} GiB = {g['peak_over_gpu_memory']:.1%} of the GPU"
    print(line)


def main(argv: list[str] | None = None) -> dict:
    recipe = read_json(CAPTIONER_RECIPE)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu_memory_gb", type=float, nargs="+", default=[24.0, 40.0, 80.0],
                        help="GPU memory sizes (GiB as the cards report them) to check the plan against.")
    parser.add_argument("--batch_size", type=int, default=recipe["per_device_train_batch_size"],
                        help="Training batch per device (default: the paper recipe's).")
    parser.add_argument("--prompt_tokens", type=int, default=7,
                        help="Tokens of the prompt after the prefix (about 7 for 'Describe the audio you hear.').")
    parser.add_argument("--caption_tokens", type=int, default=30, help="Caption tokens per training row.")
    parser.add_argument("--headroom", type=float, default=0.10,
                        help="Fraction of GPU memory kept free in the fits check (context, fragmentation).")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="Where the run happens: auto = cuda when available, else the run is skipped.")
    parser.add_argument("--tiny", action="store_true", help="Tiny CLAP and LLaMA configs (CPU smoke test).")
    parser.add_argument("--inputs", choices=("input_features", "audio_embeds"), default="input_features",
                        help="Training input: audio features through the CLAP tower, or audio embeddings.")
    parser.add_argument("--gradient_checkpointing", choices=("off", "on", "both"), default="both")
    parser.add_argument("--warmup_steps", type=int, default=2, help="Trainer steps not timed (at least 1).")
    parser.add_argument("--steps", type=int, default=5, help="Timed Trainer steps.")
    parser.add_argument("--generate_batch", type=int, default=16)
    parser.add_argument("--new_tokens", type=int, default=30)
    parser.add_argument("--generate_repeats", type=int, default=2, help="Timed generate calls (best kept).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_json", default=None, help="Also write the result JSON here.")
    args = parser.parse_args(argv)
    if args.warmup_steps < 1 or args.steps < 1:
        raise ValueError(f"--warmup_steps and --steps must be >= 1, got {args.warmup_steps} and {args.steps}.")
    modes = args.gradient_checkpointing
    args.gradient_checkpointing = list(GC_MODES) if modes == "both" else [modes]

    clap, llama = architectures(args.tiny)
    config = captioner_config(clap, llama, args.tiny)
    plan = memory_plan(config, torch.bfloat16, args.batch_size, args.prompt_tokens, args.caption_tokens)
    fits = print_plan(plan, args.gpu_memory_gb, args.headroom)
    result = {"tiny": args.tiny, "plan": plan, "fits": fits, "headroom": args.headroom}

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else None
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was given but torch.cuda.is_available() is False.")
    if device is None:
        print("\nRun skipped: no CUDA device (torch.cuda.is_available() is False); --device cpu forces it.")
        result["run"] = {"skipped": "no CUDA device"}
    else:
        args.device = device
        config = captioner_config(*architectures(args.tiny), args.tiny)  # a fresh one: the plan's LM set its dtype
        result["run"] = run(config, args, plan)
        print_run(result["run"])
    if args.output_json:
        with open(args.output_json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
