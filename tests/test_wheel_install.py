"""A user's first ten minutes: the package's own wheel, installed into a fresh virtual environment, set up with
`diffusion-link setup-starter` from a folder of wheels (offline), captions a clip with the default model, quietly.

Integration (in `make test`, so in CI): it builds the wheel from this checkout, makes a new venv, installs torch and
the wheel with pip (its dependencies come from pip's index and cache, as any `pip install` does), then runs
everything else with no network: the starter's base wheels come from `.venv/wheelhouse`, which `make` downloads at
install time. The cache folder is new, so the aiSFX conversion and the GGUF de-quantisation run for real.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHEELHOUSE = os.path.join(ROOT, ".venv", "wheelhouse")
pytestmark = pytest.mark.integration


def _run(command, env=None, cwd=None, timeout=600):
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_wheel_in_a_fresh_venv_sets_up_and_captions(tmp_path):
    if not glob.glob(os.path.join(WHEELHOUSE, "aisfx-*.whl")):
        pytest.skip(f"no starter wheels in {WHEELHOUSE} (`make install` downloads them)")
    import soundfile as sf

    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", ROOT, "-w",
          str(tmp_path / "dist")], cwd=tmp_path)
    (wheel,) = glob.glob(str(tmp_path / "dist" / "diffusion_link-*.whl"))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python, cli = str(venv / "bin" / "python"), str(venv / "bin" / "diffusion-link")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, f"torch=={__import__('torch').__version__.split('+')[0]}"])
    _run([*pip, wheel, "-c", os.path.join(ROOT, "constraints.txt")])

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRANSFORMERS_VERBOSITY", "PYTHONPATH"))}
    env.update(DIFFUSION_LINK_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    sf.write(tmp_path / "tone.wav", 0.3 * np.sin(2 * np.pi * 440 * np.arange(16000 * 3) / 16000), 16000)
    before = subprocess.run([cli, "caption", "tone.wav"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert before.returncode == 2 and "Run `diffusion-link setup-starter` once" in before.stderr
    assert "Traceback" not in before.stderr

    setup = _run([cli, "setup-starter", "--find-links", WHEELHOUSE], env=env, cwd=tmp_path)
    assert "the starter is set up" in setup.stdout
    again = _run([cli, "setup-starter", "--find-links", WHEELHOUSE], env=env, cwd=tmp_path)
    assert "already installed" in again.stdout and "already de-quantised" in again.stdout  # idempotent

    done = _run([cli, "caption", "tone.wav"], env=env, cwd=tmp_path)
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["file"] == os.path.realpath(tmp_path / "tone.wav") and row["generated_text"].strip() and not row["is_silent"]
    # the package's own files came from the wheel, not this checkout
    where = _run([python, "-c", "import diffusion_link; print(diffusion_link.__file__)"], env=env, cwd=tmp_path)
    assert where.stdout.strip().startswith(str(venv))
    for noise in ("Traceback", "No model was supplied", "LOAD REPORT", "Warning", "Loading weights"):
        assert noise not in done.stderr, done.stderr
