"""The starter's data: the ESC-50 clips (read from the shared data folder, never copied), our class captions, the
deterministic train/test split, and the AudioCaps + Clotho caption corpus."""

from __future__ import annotations

import csv
import itertools
import json
import os
import random


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPTIONS_FILE = os.path.join(REPO_ROOT, "diffusion_link", "starter", "esc50_captions.json")


def data_dir(path: str | None = None) -> str:
    """The shared data folder: `path`, else `$DIFFUSION_LINK_DATA`, else `../shared/data` beside the checkout."""
    path = path or os.environ.get("DIFFUSION_LINK_DATA") or os.path.join(REPO_ROOT, "..", "shared", "data")
    if not os.path.isdir(os.path.join(path, "esc50")):
        raise FileNotFoundError(
            f"No ESC-50 data at {os.path.join(path, 'esc50')}; set DIFFUSION_LINK_DATA to the shared data folder."
        )
    return path


def class_captions() -> list[tuple[str, list[str]]]:
    """[(class name, [5 captions]), ...] in ESC-50 target order (0 = dog ... 49 = hand_saw)."""
    with open(CAPTIONS_FILE, encoding="utf-8") as f:
        classes = json.load(f)["classes"]
    return list(classes.items())


def esc50_split(path: str | None = None) -> dict[str, list[dict]]:
    """Per class, 3 test and 5 train clips of ESC-50 fold 4, deterministically.

    Clips cut from one source recording stay on one side where the class allows it: the test side takes the first
    combination of whole recordings (in `src_file` order) that holds exactly 3 clips; a class whose recordings
    cannot make 3 (one recording of 8, or 4 + 4) is split by file name instead, and listed in `split_within_source`.
    """
    folder = data_dir(path)
    with open(os.path.join(folder, "esc50", "meta.csv"), newline="", encoding="utf-8") as f:
        rows = [dict(r, target=int(r["target"])) for r in csv.DictReader(f)]
    train, test, within = [], [], []
    for target in sorted({r["target"] for r in rows}):
        clips = sorted((r for r in rows if r["target"] == target), key=lambda r: r["filename"])
        groups: dict[str, list[dict]] = {}
        for clip in clips:
            groups.setdefault(clip["src_file"], []).append(clip)
        names = sorted(groups)
        chosen = next(
            (combo for k in range(1, len(names) + 1) for combo in itertools.combinations(names, k)
             if sum(len(groups[n]) for n in combo) == 3),
            None,
        )
        if chosen is None:
            held = clips[-3:]
            within.append(clips[0]["category"])
        else:
            held = [c for n in chosen for c in groups[n]]
        held_names = {c["filename"] for c in held}
        test += held
        train += [c for c in clips if c["filename"] not in held_names]
    return {"train": train, "test": test, "split_within_source": within}


def read_audiocaps_clotho_captions(path: str | None = None) -> list[str]:
    """AudioCaps v1 train captions and Clotho development captions (text only), in file order."""
    folder = data_dir(path)
    captions = []
    with open(os.path.join(folder, "captions", "audiocaps", "v1", "train.csv"), newline="", encoding="utf-8") as f:
        captions += [r["caption"].strip() for r in csv.DictReader(f)]
    with open(os.path.join(folder, "captions", "clotho", "clotho_captions_development.csv"), newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            captions += [row[f"caption_{i}"].strip() for i in range(1, 6)]
    return [c for c in captions if c]


def source_folds(clips: list[dict], num_folds: int = 5, seed: int = 0) -> list[int]:
    """A fold per clip, stratified by class and grouped by source recording (as scikit-learn's StratifiedGroupKFold):
    the clips of one `src_file` share a fold, and each class's recordings, largest first, go to the fold holding the
    fewest clips of that class (ties: the smallest fold, then a seeded draw). So a held-out fold keeps as many of its
    classes' clips in the other folds as the recordings allow, as the test clips have the whole training side."""
    if num_folds < 2:
        raise ValueError(f"`num_folds` must be at least 2, got {num_folds}.")
    rng = random.Random(seed)
    sizes = {}
    for clip in clips:
        by_source = sizes.setdefault(clip["target"], {})
        by_source[clip["src_file"]] = by_source.get(clip["src_file"], 0) + 1
    fold_of, total = {}, [0] * num_folds
    for target in sorted(sizes):
        per_fold = [0] * num_folds
        for source, n in sorted(sizes[target].items(), key=lambda kv: (-kv[1], kv[0])):
            order = rng.sample(range(num_folds), num_folds)
            fold = min(order, key=lambda f: (per_fold[f], total[f]))
            fold_of[(target, source)] = fold
            per_fold[fold] += n
            total[fold] += n
    return [fold_of[(clip["target"], clip["src_file"])] for clip in clips]
