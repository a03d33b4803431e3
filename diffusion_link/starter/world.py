"""The starter's world: its recording sources, their captions per label, the train/test split, the folds, the class
prototypes and the cache of frozen tower embeddings.

A world is built from `Source`s. Each source is a collection of recordings in the shared data folder (read by path,
never copied) with its own labels and, per label, any number of caption variants. ESC-50 (`ESC50`) is the first:
50 labels with 5 captions each (`diffusion_link/starter/esc50_captions.json`). The world indexes the labels of all its
sources in source order, so a clip's `target` is its label's index in the world and the caption embeddings of a
world are stored label by label (`CaptionTable`): `class_caption_rows(label)` gives the rows of a label's captions
wherever a layout such as "50 classes x 5 captions" would otherwise be typed as arithmetic.

A clip is a dict with `filename` (relative to its source's audio folder), `target` (the label's index in the world),
`category` (the label), `src_file` (the recording the clip was cut from: clips of one recording stay together in the
split and in the folds) and, in a world of several sources, `source` (the source's name; ESC-50 when absent, as in
the committed `split.json`).
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from diffusion_link.starter import STARTER_DIR


logger = logging.getLogger(__name__)

REPO_ROOT = os.path.dirname(os.path.dirname(STARTER_DIR))
ESC50_CAPTIONS_FILE = os.path.join(STARTER_DIR, "esc50_captions.json")
SPLIT_FILE = os.path.join(STARTER_DIR, "split.json")
SPLIT_KEYS = ("filename", "target", "category", "src_file")  # what `split.json` keeps of a clip
OPTIONAL_SPLIT_KEYS = ("source", "name")  # kept where clips have them (a Debian clip's `name`: its place in the package)


def data_dir(path: str | None = None, required: str | None = "esc50") -> str:
    """The shared data folder: `path`, else `$DIFFUSION_LINK_DATA`, else `../shared/data` beside the checkout.

    Raises `FileNotFoundError` when it has no `required` subfolder (None: no check)."""
    path = path or os.environ.get("DIFFUSION_LINK_DATA") or os.path.join(REPO_ROOT, "..", "shared", "data")
    if required is not None and not os.path.isdir(os.path.join(path, required)):
        raise FileNotFoundError(
            f"No {required} data at {os.path.join(path, required)}; set DIFFUSION_LINK_DATA to the shared data folder."
        )
    return path


# ---------------------------------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class Source:
    """One recording collection of the world.

    Args:
        name: short name, stored in each clip's `source`.
        audio_dir: folder of the audio files, relative to the shared data folder (or to `audio_root`).
        captions: label -> its caption variants (at least one each), in the source's label order.
        split: `split(data_folder, label_index) -> {"train": [clip, ...], "test": [...], "split_within_source": [...]}`
            with each clip's `target` taken from `label_index` (label -> index in the world).
        licence, version: of the recordings, for the model card's sources table.
        audio_root: a folder outside the shared data that holds `audio_dir` (the Debian recordings extracted into
            the cache, `diffusion_link.starter.debian.sources`); None: the shared data folder.
    """

    name: str
    audio_dir: str
    captions: Mapping[str, Sequence[str]]
    split: Callable[[str, Mapping[str, int]], dict]
    audio_root: str | None = None
    licence: str = ""
    version: str = ""

    def __post_init__(self):
        empty = [label for label, texts in self.captions.items() if not texts]
        if empty:
            raise ValueError(f"Source {self.name!r}: labels {empty[:5]} have no caption.")


def read_class_captions(path: str = ESC50_CAPTIONS_FILE) -> dict[str, list[str]]:
    """{label: [captions]} of a captions file (`{"classes": {label: [...]}}`), in file order."""
    with open(path, encoding="utf-8") as f:
        return dict(json.load(f)["classes"])


def esc50_split(path: str | None = None, label_index: Mapping[str, int] | None = None) -> dict[str, list[dict]]:
    """Per class, 3 test and 5 train clips of ESC-50 fold 4, deterministically.

    Clips cut from one source recording stay on one side where the class allows it: the test side takes the first
    combination of whole recordings (in `src_file` order) that holds exactly 3 clips; a class whose recordings
    cannot make 3 (one recording of 8, or 4 + 4) is split by file name instead, and listed in `split_within_source`.
    `label_index` maps ESC-50's categories to the world's label indices (default: ESC-50's own targets).
    """
    folder = data_dir(path)
    with open(os.path.join(folder, "esc50", "meta.csv"), newline="", encoding="utf-8") as f:
        rows = [dict(r, target=int(r["target"])) for r in csv.DictReader(f)]
    if label_index is not None:
        rows = [dict(r, target=label_index[r["category"]]) for r in rows]
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


ESC50 = Source(name="esc50", audio_dir=os.path.join("esc50", "audio"), captions=read_class_captions(),
               split=lambda folder, label_index: esc50_split(folder, label_index), licence="CC-BY-NC-3.0",
               version="fold 4")


# ---------------------------------------------------------------------------------------------------- captions
class CaptionTable:
    """The caption variants of every label, stored label by label: row `r` of a world's caption embeddings is
    `texts[r]`, a caption of label `row_labels[r]`. Labels are strings with an index (their order of first mention);
    a label named by several sources has the captions of each, in source order, each text once."""

    def __init__(self, captions_per_source: Sequence[Mapping[str, Sequence[str]]]):
        merged: dict[str, list[str]] = {}
        for captions in captions_per_source:
            for label, texts in captions.items():
                known = merged.setdefault(label, [])
                known.extend(t for t in texts if t not in known)
        self.labels: list[str] = list(merged)
        self.label_index: dict[str, int] = {label: k for k, label in enumerate(self.labels)}
        self.texts: list[str] = [t for label in self.labels for t in merged[label]]
        self._rows: list[range] = []
        start = 0
        for label in self.labels:
            self._rows.append(range(start, start + len(merged[label])))
            start += len(merged[label])
        self.row_labels = torch.tensor([k for k, rows in enumerate(self._rows) for _ in rows], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.texts)

    def index(self, label: int | str) -> int:
        """The index of `label` (its name or its index)."""
        if isinstance(label, str):
            if label not in self.label_index:
                raise KeyError(f"Unknown label {label!r}; the world's labels are {self.labels[:5]}...")
            return self.label_index[label]
        label = int(label)
        if not 0 <= label < len(self.labels):
            raise IndexError(f"Label index {label} out of range for {len(self.labels)} labels.")
        return label

    def class_caption_rows(self, label: int | str) -> list[int]:
        """The rows of `label`'s captions (its name or index) in the caption table, in caption order."""
        return list(self._rows[self.index(label)])

    def captions(self, label: int | str) -> list[str]:
        """The caption texts of `label`."""
        return [self.texts[r] for r in self.class_caption_rows(label)]

    def first_caption_rows(self, labels: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """(N,) rows of the first caption of each of the (N,) `labels`: the clip's reference caption in the gap
        figures and in the bridge's validation pairs."""
        return torch.tensor([self._rows[self.index(int(l))].start for l in labels], dtype=torch.long)

    def pair_rows(self, labels: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every (clip, caption) pair of the (N,) `labels`: (P,) clip positions and (P,) caption rows, each clip
        with each of its label's captions in turn."""
        clips, rows = [], []
        for i, label in enumerate(labels):
            caption_rows = self.class_caption_rows(int(label))
            clips += [i] * len(caption_rows)
            rows += caption_rows
        return torch.tensor(clips, dtype=torch.long), torch.tensor(rows, dtype=torch.long)

    def random_caption_row(self, label: int | str, generator: torch.Generator | None = None) -> int:
        """The row of one of `label`'s captions, drawn uniformly with `generator`."""
        rows = self.class_caption_rows(label)
        return rows[int(torch.randint(len(rows), (1,), generator=generator))]

    def random_caption_rows(self, labels: torch.Tensor | Sequence[int], generator: torch.Generator | None = None
                            ) -> list[int]:
        """One drawn caption row per label of the (N,) `labels`, drawn in order with `generator`."""
        return [self.random_caption_row(int(l), generator) for l in labels]

    def prototypes(self, text_embeds: torch.Tensor) -> torch.Tensor:
        """(L, D) unit class prototypes: the mean of each label's rows of the (len(self), D) caption embeddings."""
        from diffusion_link.metrics import class_prototypes

        if len(text_embeds) != len(self):
            raise ValueError(f"`text_embeds` has {len(text_embeds)} rows, the caption table {len(self)}.")
        return class_prototypes(text_embeds, self.row_labels, len(self.labels))


# ---------------------------------------------------------------------------------------------------- the world
class StarterWorld:
    """The starter's sources over the shared data folder `data` (see `data_dir`)."""

    def __init__(self, sources: Sequence[Source] = (ESC50,), data: str | None = None):
        if not sources:
            raise ValueError("A world needs at least one source.")
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"Source names must be distinct, got {names}.")
        self.sources = {s.name: s for s in sources}
        self.data = data
        self.captions = CaptionTable([s.captions for s in sources])

    @property
    def labels(self) -> list[str]:
        return self.captions.labels

    def split(self) -> dict[str, list]:
        """Each source's split, concatenated in source order (clips carry `source` in a world of several)."""
        out: dict[str, list] = {"train": [], "test": [], "split_within_source": []}
        several = len(self.sources) > 1
        for source in self.sources.values():
            part = source.split(self.data, self.captions.label_index)
            for side in ("train", "test"):
                out[side] += [dict(c, source=source.name) if several else c for c in part[side]]
            out["split_within_source"] += part["split_within_source"]
        return out

    def audio_path(self, clip: Mapping) -> str:
        """The audio file of `clip` in the shared data folder."""
        source = self.sources[clip.get("source", next(iter(self.sources)))]
        root = source.audio_root or data_dir(self.data, required=None)
        return os.path.join(root, source.audio_dir, clip["filename"])

    def source_index(self, clips: Sequence[Mapping]) -> torch.Tensor:
        """(N,) index of each clip's source (in source order)."""
        names = list(self.sources)
        return torch.tensor([names.index(c.get("source", names[0])) for c in clips], dtype=torch.long)

    def source_label_mask(self) -> torch.Tensor:
        """(S, L) boolean: which labels each source names (a label two sources share is in both rows)."""
        mask = torch.zeros(len(self.sources), len(self.labels), dtype=torch.bool)
        for s, source in enumerate(self.sources.values()):
            mask[s, [self.captions.label_index[label] for label in source.captions]] = True
        return mask

    def candidates(self, source_index: torch.Tensor) -> torch.Tensor:
        """(N, L) boolean class-accuracy `candidates` of clips of the (N,) `source_index`: a clip is named among its
        own source's labels (see `diffusion_link.metrics.class_accuracy`)."""
        return self.source_label_mask()[source_index]

    def labels_of(self, clips: Sequence[Mapping]) -> torch.Tensor:
        """(N,) label indices of `clips`."""
        return torch.tensor([c["target"] for c in clips], dtype=torch.long)

    def references(self, labels: torch.Tensor | Sequence[int]) -> list[list[str]]:
        """The reference captions (the label's captions) of each of the (N,) `labels`."""
        return [self.captions.captions(int(l)) for l in labels]


def sources_report(world: StarterWorld, split: Mapping) -> list[dict]:
    """Per source: its licence, version, training and test clips, and concepts (labels)."""
    several = len(world.sources) > 1
    rows = []
    for name, source in world.sources.items():
        def count(side):
            return sum(1 for c in split[side] if (c.get("source") == name if several else True))
        rows.append({"source": name, "licence": source.licence, "version": source.version,
                     "train_clips": count("train"), "test_clips": count("test"), "concepts": len(source.captions)})
    return rows


def write_split(split: Mapping, path: str) -> None:
    """`split.json`: the clips of each side (`SPLIT_KEYS`) and the classes split within a recording."""
    keep = SPLIT_KEYS + tuple(k for k in OPTIONAL_SPLIT_KEYS if any(k in c for c in split["train"]))
    with open(path, "w", encoding="utf-8") as f:
        json.dump({side: [{k: c[k] for k in keep if k in c} for c in split[side]] for side in ("train", "test")}
                  | {"split_within_source": split["split_within_source"]}, f, indent=1)


def read_split(path: str = SPLIT_FILE) -> dict:
    """The committed split (`split.json`)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_audiocaps_clotho_captions(path: str | None = None) -> list[str]:
    """AudioCaps v1 train captions and Clotho development captions (text only), in file order."""
    folder = data_dir(path)
    captions = []
    with open(os.path.join(folder, "captions", "audiocaps", "v1", "train.csv"), newline="", encoding="utf-8") as f:
        captions += [r["caption"].strip() for r in csv.DictReader(f)]
    with open(os.path.join(folder, "captions", "clotho", "clotho_captions_development.csv"), newline="",
              encoding="utf-8") as f:
        for row in csv.DictReader(f):
            captions += [row[f"caption_{i}"].strip() for i in range(1, 6)]
    return [c for c in captions if c]


# ---------------------------------------------------------------------------------------------------- folds
def source_folds(clips: Sequence[Mapping], num_folds: int = 5, seed: int = 0) -> list[int]:
    """A fold per clip, stratified by label and grouped by recording (as scikit-learn's StratifiedGroupKFold):
    the clips of one recording (`source`, `src_file`) share a fold, and each label's recordings, largest first, go to
    the fold holding the fewest clips of that label (ties: the smallest fold, then a seeded draw). So a held-out fold
    keeps as many of its labels' clips in the other folds as the recordings allow, as the test clips have the whole
    training side."""
    if num_folds < 2:
        raise ValueError(f"`num_folds` must be at least 2, got {num_folds}.")
    rng = random.Random(seed)

    def recording(clip: Mapping) -> tuple[str, str]:
        return clip.get("source", ""), clip["src_file"]

    sizes: dict[int, dict[tuple[str, str], int]] = {}
    for clip in clips:
        by_recording = sizes.setdefault(clip["target"], {})
        by_recording[recording(clip)] = by_recording.get(recording(clip), 0) + 1
    fold_of, total = {}, [0] * num_folds
    for target in sorted(sizes):
        per_fold = [0] * num_folds
        for source, n in sorted(sizes[target].items(), key=lambda kv: (-kv[1], kv[0])):
            order = rng.sample(range(num_folds), num_folds)
            fold = min(order, key=lambda f: (per_fold[f], total[f]))
            fold_of[(target, source)] = fold
            per_fold[fold] += n
            total[fold] += n
    return [fold_of[(clip["target"], recording(clip))] for clip in clips]


# ---------------------------------------------------------------------------------------------------- towers
def text_tokenizer(encoder):
    """The tokenizer of the starter encoder's text tower (`encoder.config.text_model_name_or_path`)."""
    from transformers import AutoTokenizer

    from diffusion_link.hub.references import resolve_reference

    return AutoTokenizer.from_pretrained(resolve_reference(encoder.config.text_model_name_or_path))


@torch.no_grad()
def embed_texts(encoder, tokenizer, texts: Sequence[str], what: str = "texts", batch: int = 256) -> torch.Tensor:
    """(N, D) text-tower embeddings of `texts` (before the projection head), in the input order.

    Batches of similar length waste little on padding, so the texts are embedded sorted by length."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.zeros(len(texts), encoder.config.text_config.hidden_size)
    for start in range(0, len(texts), batch):
        rows = order[start : start + batch]
        tokens = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=64, return_tensors="pt")
        out[rows] = encoder.text_tower_embeddings(tokens["input_ids"], tokens["attention_mask"])
        if (start // batch) % 40 == 0:
            logger.info("  MiniLM %s: %d / %d", what, min(start + batch, len(texts)), len(texts))
    return out


@torch.no_grad()
def embed_audio_files(encoder, paths: Sequence[str], batch: int = 16) -> torch.Tensor:
    """(N, D_audio) audio-tower embeddings (before the projection head) of the audio files `paths`."""
    from diffusion_link.audio_io import load_audio
    from diffusion_link.starter.feature_extraction_starter_encoder import StarterFeatureExtractor

    fe = StarterFeatureExtractor()
    audio = []
    for start in range(0, len(paths), batch):
        features = fe([load_audio(p, fe.sampling_rate) for p in paths[start : start + batch]], return_tensors="pt")
        audio.append(encoder.audio_tower_embeddings(features["input_features"], features.get("attention_mask")))
        logger.info("  aiSFX: %d / %d clips", min(start + batch, len(paths)), len(paths))
    return torch.cat(audio)


def cached_tensors(path: str, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The tensors in the safetensors file `path`, computed by `compute()` and saved there when it is absent."""
    from safetensors.torch import load_file, save_file

    if os.path.exists(path):
        return load_file(path)
    tensors = compute()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    return tensors


def tower_embeddings(world: StarterWorld, encoder, split: Mapping, cache: str) -> dict[str, torch.Tensor]:
    """The frozen tower embeddings of the world, cached in the safetensors file `cache`:
    `audio` (N_train + N_test, D_audio) of the split's clips, train first; `esc_text` (len(world.captions), D) of
    the caption table (row r: `world.captions.texts[r]`); `corpus_text` (M, D) of the AudioCaps + Clotho captions."""

    def compute() -> dict[str, torch.Tensor]:
        tokenizer = text_tokenizer(encoder)
        clips = list(split["train"]) + list(split["test"])
        return {
            "audio": embed_audio_files(encoder, [world.audio_path(c) for c in clips]),
            "esc_text": embed_texts(encoder, tokenizer, world.captions.texts, "class captions"),
            "corpus_text": embed_texts(encoder, tokenizer, read_audiocaps_clotho_captions(world.data),
                                       "AudioCaps + Clotho captions"),
        }

    return cached_tensors(cache, compute)
