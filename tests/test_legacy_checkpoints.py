"""Folders saved by older trees of the package still load, and compute what they computed there.

The folders are made by `tests/legacy/save_checkpoints.py` run against the package as it was at each of
`LEGACY_COMMITS`, taken from this repository's own history with `git archive`; no weights are committed. The folders
of `REMOTE_CODE_COMMIT` are also loaded as remote code (`trust_remote_code=True`), in a fresh process, through the
modules they carry: those import `diffusion_link.pretrained_references` and `diffusion_link.model_cards` by absolute
path, which the package keeps importable for them.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from .conftest import REPO_ROOT


pytestmark = pytest.mark.integration  # a `git archive`, and the old package run in a child process

LEGACY_COMMITS = {
    "190158d": "main before the Hub-boundary / one-home-per-concept restructuring",
    "69a4135": "main before the folder restructuring (the Hub set at the top of diffusion_link/, the rest in subpackages)",
}
REMOTE_CODE_COMMIT = "69a4135"
_SAVED: dict[str, tuple] = {}  # commit -> (folder, expected): each old tree saves its folders once per session


def saved_by(commit: str, tmp_path_factory) -> tuple:
    """(the folder `save_checkpoints.py` wrote with the package at `commit`, its `expected.json`)."""
    if commit in _SAVED:
        return _SAVED[commit]
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the legacy tree is taken from the repository's history")
    found = subprocess.run(["git", "-C", REPO_ROOT, "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True)
    if found.returncode != 0:
        pytest.skip(f"commit {commit} is not in this clone (a shallow clone?); fetch the full history to run this")
    tree = tmp_path_factory.mktemp(f"legacy_tree_{commit}")
    archive = subprocess.run(
        ["git", "-C", REPO_ROOT, "archive", commit, "diffusion_link", "hub_cards", ":(exclude)diffusion_link/starter"],
        capture_output=True, check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    out = tmp_path_factory.mktemp(f"legacy_checkpoints_{commit}")
    env = dict(os.environ, PYTHONPATH=str(tree))  # the old package shadows the installed (editable) one
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tests", "legacy", "save_checkpoints.py"), str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"diffusion_link from {tree}" in proc.stdout, proc.stdout  # the old code made the folders
    with open(out / "expected.json", encoding="utf-8") as f:
        _SAVED[commit] = out, json.load(f)
    return _SAVED[commit]


@pytest.fixture(scope="module", params=list(LEGACY_COMMITS))
def legacy(request, tmp_path_factory):
    return saved_by(request.param, tmp_path_factory)


def test_legacy_bridge_loads_and_links_the_same(legacy):
    from diffusion_link import DiffusionLinkBridge

    out, expected = legacy
    bridge = DiffusionLinkBridge.from_pretrained(out / "bridge").eval()
    linked = bridge.link(torch.tensor(expected["bridge_inputs"]))
    torch.testing.assert_close(linked, torch.tensor(expected["bridge_link"]), rtol=0, atol=1e-6)


def test_legacy_captioner_loads_and_generates_the_same(legacy):
    from transformers import pipeline

    from diffusion_link import DiffusionLinkForAudioCaptioning

    out, expected = legacy
    model = DiffusionLinkForAudioCaptioning.from_pretrained(out / "captioner").eval()
    ids = model.generate(audio_embeds=torch.tensor(expected["audio_embeds"]), max_new_tokens=8)
    assert ids.tolist() == expected["caption_ids"]
    pipe = pipeline("audio-captioning", model=str(out / "captioner"))
    wave = (0.3 * np.sin(np.linspace(0, 2000, 48000))).astype(np.float32)
    assert pipe({"array": wave, "sampling_rate": 48000}, max_new_tokens=8)["generated_text"] == expected["waveform_caption"]


def test_legacy_referenced_captioner_loads_and_generates_the_same(legacy):
    from diffusion_link import DiffusionLinkForAudioCaptioning

    out, expected = legacy
    model = DiffusionLinkForAudioCaptioning.from_pretrained(out / "referenced" / "captioner").eval()
    ids = model.generate(audio_embeds=torch.tensor(expected["audio_embeds"]), max_new_tokens=6)
    assert ids.tolist() == expected["referenced_ids"]


# A fresh process, so that transformers imports each folder's own modules (as `transformers_modules.*`): the
# referenced captioner loads its bases through a `cache:` reference, so its copied `pretrained_loading` imports
# `diffusion_link.pretrained_references`, and saving it again renders its card through `diffusion_link.model_cards`.
# Once that copied code has imported the installed package, `AutoModel` prefers the package's registered classes, so
# the complete captioner folder's class is taken from its own modules as `AutoModel` itself does for remote code.
REMOTE_CODE_CHILD = """
import json, sys, tempfile
import torch
from transformers import AutoModel
from transformers.dynamic_module_utils import get_class_from_dynamic_module

out, referenced = sys.argv[1], sys.argv[2]
with open(f"{out}/expected.json", encoding="utf-8") as f:
    expected = json.load(f)
audio_embeds = torch.tensor(expected["audio_embeds"])
model = AutoModel.from_pretrained(referenced, trust_remote_code=True).eval()
referenced_ids = model.generate(audio_embeds=audio_embeds, max_new_tokens=6)
with tempfile.TemporaryDirectory() as again:
    model.save_pretrained(again)
    card = open(f"{again}/README.md", encoding="utf-8").read()
with open(f"{out}/captioner/config.json", encoding="utf-8") as f:
    class_ref = json.load(f)["auto_map"]["AutoModel"]
complete = get_class_from_dynamic_module(class_ref, f"{out}/captioner").from_pretrained(f"{out}/captioner").eval()
caption_ids = complete.generate(audio_embeds=audio_embeds, max_new_tokens=8)
print(json.dumps({"modules": [type(model).__module__, type(complete).__module__], "card": card,
                  "referenced_ids": referenced_ids.tolist(), "caption_ids": caption_ids.tolist()}))
"""


def test_legacy_folders_run_as_remote_code_with_their_own_modules(tmp_path_factory, tmp_path):
    out, expected = saved_by(REMOTE_CODE_COMMIT, tmp_path_factory)
    cache = tmp_path / "cache"
    cache.mkdir()
    os.symlink(out / "referenced", cache / "legacy")  # cache:legacy/clap is the saved base folder
    referenced = tmp_path / "referenced_by_cache"
    shutil.copytree(out / "referenced" / "captioner", referenced)
    with open(referenced / "config.json", encoding="utf-8") as f:
        config = json.load(f)
    assert "AutoModel" in config["auto_map"]
    config.update(audio_tower_name_or_path="cache:legacy/clap", language_model_name_or_path="cache:legacy/llama")
    with open(referenced / "config.json", "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    env = dict(os.environ, DIFFUSION_LINK_CACHE=str(cache), HF_MODULES_CACHE=str(tmp_path / "modules"))
    proc = subprocess.run([sys.executable, "-c", REMOTE_CODE_CHILD, str(out), str(referenced)], env=env,
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(module.startswith("transformers_modules.") for module in result["modules"]), result["modules"]
    assert result["referenced_ids"] == expected["referenced_ids"]
    assert result["caption_ids"] == expected["caption_ids"]
    assert result["card"].startswith("---")
