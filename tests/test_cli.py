import json

import torch

from diffusion_link import DiffusionLinkBridge, DiffusionLinkConfig
from diffusion_link.cli import main
from diffusion_link.embedding_data import save_embeddings
from diffusion_link.synthetic import synthetic_gap_embeddings


def test_gap_command_reports_raw_and_bridged_figures(tmp_path, capsys):
    data = synthetic_gap_embeddings(40, embedding_dim=12, seed=0)
    save_embeddings(tmp_path / "e.safetensors", {k: data[k] for k in ("audio_embeds", "text_embeds")})
    torch.manual_seed(0)
    DiffusionLinkBridge(DiffusionLinkConfig(embedding_dim=12, hidden_size=16)).save_pretrained(tmp_path / "bridge")
    code = main(["gap", str(tmp_path / "e.safetensors"), "--bridge", str(tmp_path / "bridge"), "--json",
                 str(tmp_path / "gap.json"), "--plot", str(tmp_path / "gap.png")])
    assert code == 0
    out = capsys.readouterr().out
    assert "| raw |" in out and "| bridged |" in out
    report = json.loads((tmp_path / "gap.json").read_text())
    assert report["raw"]["num_pairs"] == 40 and 0 <= report["bridged"]["retrieval_r1"] <= 1
    assert (tmp_path / "gap.png").stat().st_size > 1000


def test_gap_command_errors_name_the_file(tmp_path, capsys):
    save_embeddings(tmp_path / "t.safetensors", {"unpaired_text_embeds": torch.randn(4, 12)})
    assert main(["gap", str(tmp_path / "t.safetensors")]) == 2
    assert "t.safetensors" in capsys.readouterr().err
    assert main(["gap", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err
