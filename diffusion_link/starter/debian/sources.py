"""The starter's Debian sources: one `Source` per collection (`collections.COLLECTIONS`), whose clips are the
manifest's recordings (`diffusion_link/starter/debian_sounds.tsv`) as extracted into the cache by
`training/debian_sounds.py` (`$DIFFUSION_LINK_CACHE/debian/audio/PACKAGE/MD5.EXT`).

Each recording's label is its concept (the manifest's `caption`); a concept's caption variants are committed data,
`diffusion_link/starter/debian_captions.json` (written once from the concepts by `caption_variants`, then kept and
edited as data). A Debian source trains only: it has no test side; the starter is measured on it by leaving the whole
source out (`training/leave_one_source_out.py`).

Recordings that are near-duplicates (`cattle_01.ogg` ... `cattle_05.ogg`: one animal, one session) share a
`src_file` (`near_duplicate_key`), so the folds keep them together as they keep the clips of one ESC-50 recording.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

from diffusion_link.starter import STARTER_DIR
from diffusion_link.starter.debian.collections import BY_PACKAGE, COLLECTIONS
from diffusion_link.starter.debian.manifest import Recording, read_manifest, recording_file
from diffusion_link.starter.debian.packages import debian_cache
from diffusion_link.starter.world import Source, read_class_captions


MANIFEST_FILE = os.path.join(STARTER_DIR, "debian_sounds.tsv")
DEBIAN_CAPTIONS_FILE = os.path.join(STARTER_DIR, "debian_captions.json")
# Words ending in "ing" that are not the caption's verb, and verb stems whose base form ends in "e".
NOT_VERBS = {"building", "casing", "ceiling", "during", "gatling", "lightning", "morning", "nothing", "sling",
             "something", "swing", "warning", "ring", "king", "wing", "string", "spring", "thing"}
E_STEMS = {"bounc", "slic", "clos", "collaps", "strik", "whin", "rag", "rac", "mov", "tak", "releas", "weav", "inflat",
           "explod", "slid", "fir", "bor", "breath", "ho", "glid", "wip", "chim", "scrap", "shak", "squeez", "rattl",
           "danc", "ston", "pil", "graz", "giv", "driv", "smok", "us", "caus"}
PERSON = "someone"


def verb_base(word: str) -> str:
    """The base form of an "-ing" verb: "grunting" -> "grunt", "chopping" -> "chop", "striking" -> "strike",
    "crackling" -> "crackle"."""
    stem = word[:-3]
    if stem == "be":
        return "be"
    if stem in E_STEMS:
        return stem + "e"
    if stem.endswith("ll") and stem.startswith("chisel"):
        return stem[:-1]
    if len(stem) > 2 and stem[-1] == stem[-2] and stem[-1] in "bdgmnprtv":
        return stem[:-1]
    if len(stem) > 2 and stem[-1] == "l" and stem[-2] in "bcdfgkptz":
        return stem + "e"
    return stem


def third_person(base: str) -> str:
    """"grunt" -> "grunts", "hiss" -> "hisses", "cry" -> "cries", "echo" -> "echoes"."""
    if base == "be":
        return "is"
    if base.endswith(("s", "sh", "ch", "x", "z")) or (base.endswith("o") and not base.endswith("oo")):
        return base + "es"
    if base.endswith("y") and base[-2:-1] not in ("a", "e", "o", "u"):
        return base[:-1] + "ies"
    return base + "s"


def split_caption(concept: str) -> tuple[str, str, str] | None:
    """`(subject, verb, rest)` of a caption whose verb is an "-ing" word ("a pig grunting" -> ("a pig", "grunting",
    "")); a caption that starts with its verb ("chopping wood") gets the subject `PERSON`; None when it has no verb
    ("an explosion")."""
    words = concept.split()
    for i, word in enumerate(words):
        if not word.endswith("ing") or len(word) < 5 or word in NOT_VERBS or len(words) == 1:
            continue
        if i == 0 and words[1].endswith("s") and not words[1].endswith("ss"):
            continue  # "running footsteps on sand": an adjective
        if i > 0 and words[i - 1] in ("a", "an", "the", "with", "of", "heavy", "running", "swimming"):
            continue  # "a boiling pot", "with falling debris": an adjective
        subject = " ".join(words[:i]) or PERSON
        return subject, word, " ".join(words[i + 1 :])
    return None


def caption_variants(concept: str) -> list[str]:
    """Five natural variants of a concept, in the manner of AudioCaps: "a pig grunting" -> "A pig grunting", "A pig
    grunts", "A pig is grunting", "A pig grunts nearby", "The sound of a pig grunting"; a caption without a verb ("an
    explosion") -> "An explosion", "The sound of an explosion", "An explosion is heard", "An explosion nearby",
    "A recording of an explosion"."""
    concept = " ".join(concept.strip().rstrip(".").split())
    parts = split_caption(concept)
    if parts is None:
        variants = [concept, f"the sound of {concept}", f"{concept} is heard", f"{concept} nearby",
                    f"a recording of {concept}"]
    else:
        subject, verb, rest = parts
        plural = subject != PERSON and subject.split()[0] not in ("a", "an") and subject.endswith("s") \
            and not subject.endswith(("ss", "us"))
        base = verb_base(verb)
        present = base if plural else third_person(base)
        tail = f" {rest}" if rest else ""
        and_verb = re.match(r"(.*\band )(\w+ing)\b(.*)", tail)  # "opening and closing": both verbs agree
        tail_present = tail if and_verb is None or and_verb.group(2) in NOT_VERBS else \
            and_verb.group(1) + (verb_base(and_verb.group(2)) if plural else third_person(verb_base(and_verb.group(2)))) \
            + and_verb.group(3)
        variants = [concept, f"{subject} {present}{tail_present}",
                    f"{subject} {'are' if plural else 'is'} {verb}{tail}", f"{subject} {present}{tail_present} nearby",
                    f"the sound of {concept}"]
    return [v[0].upper() + v[1:] for v in variants]


def near_duplicate_key(recording: Recording) -> str:
    """The recording's folder and its name without a trailing take number: `audio/fauna/cattle_03.ogg` ->
    `PACKAGE:audio/fauna/cattle`."""
    path = recording.member or recording.file
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"{recording.package}:{os.path.dirname(path)}/{re.sub(r'[^a-zA-Z]*[0-9]+[a-z]?$', '', stem) or stem}"


def write_debian_captions(manifest: str = MANIFEST_FILE, path: str = DEBIAN_CAPTIONS_FILE) -> dict[str, list[str]]:
    """(Re)write the captions file with the variants of every concept of the manifest, keeping the variants of the
    concepts already in it (they may have been edited); returns its classes."""
    kept = read_class_captions(path) if os.path.exists(path) else {}
    concepts = sorted({r.caption for r in read_manifest(manifest)})
    classes = {c: kept.get(c) or caption_variants(c) for c in concepts}
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"description": "Caption variants of each Debian concept (the manifest's `caption`); see "
                                  "diffusion_link/starter/debian/sources.py.", "classes": classes}, f, indent=1)
    return classes


def debian_sources(packages: Sequence[str] | None = None, audio_dir: str | None = None,
                   manifest: str = MANIFEST_FILE, captions_file: str = DEBIAN_CAPTIONS_FILE) -> list[Source]:
    """One `Source` per package (default: every collection, in `COLLECTIONS` order), named by the package."""
    audio_dir = audio_dir or debian_cache("audio")
    packages = list(packages) if packages is not None else [c.package for c in COLLECTIONS]
    unknown = [p for p in packages if p not in BY_PACKAGE]
    if unknown:
        raise ValueError(f"Unknown Debian collections {unknown}; known: {sorted(BY_PACKAGE)}.")
    variants = read_class_captions(captions_file)
    rows = read_manifest(manifest)
    sources = []
    for package in packages:
        mine = [r for r in rows if r.package == package]
        missing = sorted({r.caption for r in mine} - set(variants))
        if missing:
            raise ValueError(f"{captions_file}: no caption variants for the concepts {missing[:5]} of {package}.")
        concepts = list(dict.fromkeys(r.caption for r in sorted(mine, key=lambda r: r.caption)))
        sources.append(Source(name=package, audio_dir="", audio_root=audio_dir,
                              captions={c: variants[c] for c in concepts},
                              split=_package_split(package, mine, audio_dir), licence=BY_PACKAGE[package].licence,
                              version=", ".join(sorted({r.version for r in mine}))))
    return sources


def _package_split(package: str, rows: Sequence[Recording], audio_dir: str):
    def split(folder, label_index) -> dict:
        absent = [r for r in rows if not os.path.exists(os.path.join(audio_dir, recording_file(r)))]
        if absent:
            raise FileNotFoundError(
                f"{len(absent)} of {len(rows)} recordings of {package} are not in {audio_dir} (e.g. "
                f"{recording_file(absent[0])}); fetch them with `python training/debian_sounds.py --packages {package}`.")
        clips = [{"filename": recording_file(r), "target": label_index[r.caption], "category": r.caption,
                  "src_file": near_duplicate_key(r), "name": f"{r.file}/{r.member}" if r.member else r.file}
                 for r in sorted(rows, key=lambda r: (r.file, r.member))]
        return {"train": clips, "test": [], "split_within_source": []}

    return split
