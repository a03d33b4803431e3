"""Folders saved by an older tree of the package still load, and compute what they computed there.

The folders are made by `tests/legacy/save_checkpoints.py` run against the package as it was at `LEGACY_COMMIT` (the
last commit before the module restructuring), taken from this repository's own history with `git archive`; no
weights are committed.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEGACY_COMMIT = "190158d"  # main before the Hub-boundary / one-home-per-concept restructuring


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the legacy tree is taken from the repository's history")
    found = subprocess.run(["git", "-C", REPO_ROOT, "cat-file", "-e", f"{LEGACY_COMMIT}^{{commit}}"], capture_output=True)
    if found.returncode != 0:
        pytest.skip(f"commit {LEGACY_COMMIT} is not in this clone (a shallow clone?); fetch the full history to run this")
    tree = tmp_path_factory.mktemp("legacy_tree")
    archive = subprocess.run(
        ["git", "-C", REPO_ROOT, "archive", LEGACY_COMMIT, "diffusion_link", "hub_cards", ":(exclude)diffusion_link/starter"],
        capture_output=True, check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    out = tmp_path_factory.mktemp("legacy_checkpoints")
    env = dict(os.environ, PYTHONPATH=str(tree))  # the old package shadows the installed (editable) one
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tests", "legacy", "save_checkpoints.py"), str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"diffusion_link from {tree}" in proc.stdout, proc.stdout  # the old code made the folders
    with open(out / "expected.json", encoding="utf-8") as f:
        return out, json.load(f)


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
