"""The starter build's arguments: the recipe `training/configs/starter.json` (the heads, the depth candidates, which
bridge and decoder recipes) and the flags that override it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from diffusion_link.experiments.script_arguments import parse_script_args, read_json_config
from diffusion_link.hub.references import cache_dir
from diffusion_link.starter import STARTER_DIR
from diffusion_link.starter.world import ESC50, REPO_ROOT, StarterWorld


STARTER_RECIPE = os.path.join(REPO_ROOT, "training", "configs", "starter.json")
ENCODER_REFERENCE = "package:diffusion_link/starter/encoder"


@dataclass
class StarterArguments:
    """The starter's build; the numbers come from the recipe (`training/configs/starter.json`), not from here."""

    head_steps: int = field(metadata={"help": "InfoNCE steps of each audio head (one clip per class a step)."})
    head_learning_rate: float = field(metadata={"help": "AdamW learning rate of the audio heads."})
    head_weight_decay: float = field(metadata={"help": "AdamW weight decay of the audio heads."})
    bridge_recipe: str = field(metadata={"help": "train_bridge.py JSON config of the bridge (relative to the repo)."})
    decoder_recipe: str = field(metadata={"help": "train_captioner.py JSON config of the decoder (relative to the repo)."})
    eval_max_new_tokens: int = field(metadata={"help": "Caption length of the 150-clip evaluation."})
    decoding_candidates: list[int] = field(default_factory=lambda: [2, 4, 8],
                                           metadata={"help": "Beam counts the default decoding is picked from."})
    rerank_weights: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0, 8.0],
                                        metadata={"help": "Weights of the similarity in the 'combined' rerank."})
    head_augmentation_copies: int = field(default=0, metadata={
        "help": "Augmented versions of each training clip for the audio heads "
                "(diffusion_link/starter/build/augmentation.py); 0: none. The committed recipe "
                "(training/configs/starter.json) uses 8 at probability 0.25."})
    head_augmentation_probability: float = field(default=0.5, metadata={
        "help": "Chance that a head's training slot of a class takes an augmented clip instead of an original."})
    sources: list[str] = field(default_factory=lambda: ["esc50"], metadata={
        "help": "The world's sources: esc50, debian (every Debian collection) or Debian package names. The recipe "
                "uses esc50 and debian; fetch the Debian ones first (`python training/debian_sounds.py`)."})
    bridge_sources: list[str] | None = field(default=None, metadata={
        "help": "The sources whose out-of-fold training clips the bridges pair with captions (default: all)."})
    stop_after: str | None = field(default=None, metadata={"help": "Stop after this stage (e.g. 'heads' to measure them)."})
    decoding_heldout_other_clips: int = field(default=250, metadata={
        "help": "Held-out clips of the sources other than ESC-50 that the default decoding is picked on (a seeded draw)."})
    decoding_time_budget: float = field(default=2.0, metadata={
        "help": "The default decoding may take at most this many times greedy decoding's time per clip (batch 8)."})
    seed: int = field(default=0, metadata={"help": "Seed of the split of folds, the heads, the bridge and the decoder."})
    data: str | None = field(default=None, metadata={"help": "The shared data folder ($DIFFUSION_LINK_DATA or ../shared/data)."})
    output: str = field(default=STARTER_DIR)
    work_dir: str = field(default=os.path.join(cache_dir(), "starter_build"), metadata={"help": "Stage cache."})
    bridge_steps: int | None = field(default=None, metadata={"help": "Override the bridge recipe's max_steps."})
    bridge_hidden_size: int | None = field(default=None, metadata={"help": "Override the bridge recipe's hidden_size."})
    decoder_steps: int | None = field(default=None, metadata={"help": "Override the decoder recipe's max_steps."})
    decoder_from: str | None = field(
        default=None, metadata={"help": "Reuse this trained zero-shot decoder (a captioner folder) instead of training one."})
    results_dir: str = field(default=os.path.join(REPO_ROOT, "training", "results"),
                             metadata={"help": "Where the bridge's validation curve and the reliability diagram go."})
    skip_eval: bool = field(default=False, metadata={"help": "Skip the 150-clip evaluation."})

    def recipe_path(self, path: str) -> str:
        """`path` as given when absolute, else relative to the repository."""
        return path if os.path.isabs(path) else os.path.join(REPO_ROOT, path)

    def world(self, leave_out: str | None = None) -> StarterWorld:
        """The world of `sources` (without the source named `leave_out`)."""
        from diffusion_link.starter.debian.collections import BY_PACKAGE
        from diffusion_link.starter.debian.sources import debian_sources

        names = []
        for name in self.sources:
            if name == "debian":
                names += list(BY_PACKAGE)
            elif name == "esc50" or name in BY_PACKAGE:
                names.append(name)
            else:
                raise ValueError(f"--sources: unknown source {name!r}; expected esc50, debian or one of "
                                 f"{sorted(BY_PACKAGE)}.")
        names = [n for n in dict.fromkeys(names) if n != leave_out]
        packages = [n for n in names if n != "esc50"]
        sources = ([ESC50] if "esc50" in names else []) + (debian_sources(packages) if packages else [])
        return StarterWorld(sources, data=self.data)

    @property
    def language_model(self) -> str:
        """The decoder's base LM reference, from its recipe."""
        return read_json_config(self.recipe_path(self.decoder_recipe))["language_model_name_or_path"]


def parse_args(argv: list[str] | None = None) -> StarterArguments:
    """`[recipe.json] [--flag value ...]`; without a JSON first, the committed recipe (`STARTER_RECIPE`)."""
    (args,) = parse_script_args((StarterArguments,), argv, default_config=STARTER_RECIPE)
    return args
