#!/usr/bin/env python
"""Training speed of `training/train_bridge.py` against a bare PyTorch loop on the same model, measured in one run.

    python benchmarks/bench_train_bridge.py [--pairs 40000] [--dim 384] [--steps 150] [--rounds 2] [--threads 2]
                                           [--recipe training/configs/starter_bridge.json]

Both sides train the same bridge on the same synthetic pairs (`diffusion_link.experiments.synthetic_gap`, `--pairs`
rows of width `--dim`, the starter's 384 by default) for `--steps` optimiser steps:

- `train_bridge`: the script's `main()` with its default recipe (or `--recipe`), changed only in `--max_steps`, the
  data, a temporary output folder and `--disable_tqdm true`. Everything the recipe does is timed: the Trainer's
  data loading, logging, EMA callback, the evaluation of `link()` on the 5 % validation split and the checkpoint it
  saves at the end of training (the recipe saves every 500 steps and at the last one, so a run of fewer steps
  evaluates more often per step than the full recipe does), and the work after training (depth sweep, final save,
  plots, `gap_metrics.json`).
- `bare loop`: the bridge built as the script builds it (`initial_bridge`), then per step a slice of a shuffled
  permutation of the rows, `bridge(...).loss`, `backward`, gradient clipping at the recipe's `max_grad_norm`, the
  recipe's optimiser (AdamW, same lr, betas, eps, weight decay, fused as the Trainer's `adamw_torch_fused`) and
  learning-rate schedule, and `update_ema()`: the same arithmetic without the Trainer.

The two take turns (`--rounds` of bare, train_bridge) so a change in the machine's load hits both sides alike. The
figures use each side's fastest round (the machine's load only ever slows a run down, and on a shared 2-core machine
one round can take several times as long); the median of the per-round ratios is printed with them. Pairs/s = steps x
batch size / seconds. Printed:

- `loop_ratio`: train_bridge's training loop (`Trainer.train`: steps, evaluation, checkpoint) over the bare loop
  (goal: >= 0.7). This is the part that grows with the number of steps, so it is what a long run on many pairs sees.
- `end_to_end_ratio`: the whole `main()` (loading, split, training, depth pick, saving, reports) over the bare loop;
  its fixed cost (`outside_training_loop_seconds`) weighs `3000 / --steps` times more here than in a full
  3000-step run.

The last line is one JSON object of these figures; the ratios do not drift with the machine's load the way the
absolute pairs/s do.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from unittest import mock

import torch


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from diffusion_link.experiments.embedding_files import load_embeddings, save_embeddings  # noqa: E402
from diffusion_link.experiments.synthetic_gap import synthetic_gap_embeddings  # noqa: E402
from training import train_bridge  # noqa: E402


def script_argv(recipe: str | None, train_file: str, output_dir: str, steps: int) -> list[str]:
    """train_bridge.py's command line: the recipe (default: the script's own), the data and the step count."""
    return [*([recipe] if recipe else []), "--train_file", train_file, "--output_dir", output_dir,
            "--max_steps", str(steps), "--disable_tqdm", "true"]


def time_train_bridge(argv: list[str]) -> dict[str, float]:
    """Seconds of `train_bridge.main(argv)` as a whole and of its `Trainer.train` call."""
    inner = {}
    train = train_bridge.BridgeTrainer.train

    def timed_train(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return train(self, *args, **kwargs)
        finally:
            inner["train"] = time.perf_counter() - start

    start = time.perf_counter()
    with mock.patch.object(train_bridge.BridgeTrainer, "train", timed_train):
        train_bridge.main(argv)
    total = time.perf_counter() - start
    return {"total": total, "train": inner["train"]}


def time_bare_loop(argv: list[str], steps: int, seed: int) -> float:
    """Seconds of `steps` optimiser steps of a bare PyTorch loop on the bridge and recipe that `argv` gives."""
    from transformers import get_scheduler

    model_args, data_args, training_args = train_bridge.parse_args(argv)
    tensors, _ = load_embeddings(data_args.train_file)
    audio, text = tensors["audio_embeds"].float(), tensors["text_embeds"].float()
    torch.manual_seed(seed)
    bridge = train_bridge.initial_bridge(model_args, tensors).train()
    params = [p for p in bridge.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=training_args.learning_rate, betas=(training_args.adam_beta1, training_args.adam_beta2),
        eps=training_args.adam_epsilon, weight_decay=training_args.weight_decay,
        fused=str(training_args.optim).endswith("fused"),
    )
    scheduler = get_scheduler(training_args.lr_scheduler_type, optimizer,
                              num_warmup_steps=training_args.get_warmup_steps(steps), num_training_steps=steps)
    batch = training_args.per_device_train_batch_size
    order, at = torch.randperm(len(text)), 0
    start = time.perf_counter()
    for _ in range(steps):
        if at + batch > len(order):
            order, at = torch.randperm(len(text)), 0
        rows = order[at:at + batch]
        at += batch
        loss = bridge(audio_embeds=audio[rows], text_embeds=text[rows]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, training_args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bridge.update_ema()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=40000, help="Synthetic paired rows in the train file.")
    parser.add_argument("--dim", type=int, default=384, help="Embedding width D (the starter's: 384).")
    parser.add_argument("--steps", type=int, default=150, help="Optimiser steps of each run.")
    parser.add_argument("--rounds", type=int, default=2, help="Turns of (bare loop, train_bridge).")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads of both sides.")
    parser.add_argument("--recipe", help="A train_bridge.py JSON recipe (default: the script's default recipe).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        train_file = os.path.join(tmp, "train.safetensors")
        data = synthetic_gap_embeddings(args.pairs, embedding_dim=args.dim, seed=args.seed)
        save_embeddings(train_file, {k: data[k] for k in ("audio_embeds", "text_embeds")})
        model_args, _, recipe_args = train_bridge.parse_args(script_argv(args.recipe, train_file, tmp, args.steps))
        batch = recipe_args.per_device_train_batch_size

        bare, script, script_loop = [], [], []
        for i in range(args.rounds):
            argv_i = script_argv(args.recipe, train_file, os.path.join(tmp, f"run{i}"), args.steps)
            bare.append(time_bare_loop(argv_i, args.steps, args.seed))
            times = time_train_bridge(argv_i)
            script.append(times["total"])
            script_loop.append(times["train"])
            logging.getLogger(__name__).warning(
                "round %d: bare %.1f s, train_bridge %.1f s (training loop %.1f s)", i, bare[-1], script[-1],
                script_loop[-1])

    pairs = args.steps * batch
    bare_rate, loop_rate, total_rate = (pairs / min(seconds) for seconds in (bare, script_loop, script))
    round_ratios = [b / t for b, t in zip(bare, script_loop)]
    print(f"pairs/s train_bridge {loop_rate:.0f} (training loop; whole main() {total_rate:.0f}), bare loop "
          f"{bare_rate:.0f}, ratio {loop_rate / bare_rate:.3f} (goal >= 0.7; median of the rounds' "
          f"{statistics.median(round_ratios):.3f}; whole main() {total_rate / bare_rate:.3f})")
    result = {
        "train_bridge_pairs_per_s": loop_rate,
        "train_bridge_end_to_end_pairs_per_s": total_rate,
        "bare_loop_pairs_per_s": bare_rate,
        "loop_ratio": loop_rate / bare_rate,
        "loop_ratio_median_of_rounds": statistics.median(round_ratios),
        "end_to_end_ratio": total_rate / bare_rate,
        "outside_training_loop_seconds": min(s - t for s, t in zip(script, script_loop)),
        "bare_seconds": bare,
        "train_bridge_seconds": script,
        "train_bridge_loop_seconds": script_loop,
        "pairs": args.pairs,
        "dim": args.dim,
        "hidden_size": model_args.hidden_size or 2 * args.dim,
        "steps": args.steps,
        "batch": batch,
        "recipe": args.recipe or os.path.relpath(train_bridge.DEFAULT_RECIPE, REPO_ROOT),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
