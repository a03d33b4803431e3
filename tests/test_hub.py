"""Hub round trips (`push_to_hub`, then loading by repo id) through a local stand-in Hub on 127.0.0.1.

`huggingface_hub` reads `HF_ENDPOINT` and `HF_HUB_OFFLINE` at import, so every client call runs in a fresh process
with the environment pointing at the server (see the `hub` fixture in conftest.py); the server runs in this process.
"""

import json

import pytest
import torch
from huggingface_hub import ModelCard

from .conftest import run_python, set_hf_home, write_wav
from .hub_server import HubServer


def requested(server, method, fragment):
    return [path for m, path, status in server.requests if m == method and fragment in path and status < 400]


def test_server_rejects_other_hosts():
    with pytest.raises(ValueError, match="127.0.0.1"):
        HubServer(("0.0.0.0", 0))


@pytest.mark.integration
def test_bridge_push_to_hub_then_from_pretrained_gives_identical_link(hub, tiny_bridge, tmp_path, monkeypatch):
    local = tmp_path / "bridge"
    tiny_bridge.save_pretrained(local)
    audio_embeds = torch.randn(3, tiny_bridge.config.embedding_dim, generator=torch.Generator().manual_seed(1))
    expected = tiny_bridge.link(audio_embeds, generator=torch.Generator().manual_seed(7))

    run_python(
        "from diffusion_link import DiffusionLinkBridge\n"
        f"DiffusionLinkBridge.from_pretrained({str(local)!r}).push_to_hub('user/bridge')\n"
    )
    repo = hub.repos[("model", "user/bridge")]
    files = repo.commits[repo.refs["main"]]
    assert {"config.json", "model.safetensors"} <= set(files)
    assert files["model.safetensors"].lfs and requested(hub, "PUT", "/__lfs/")  # the weights went through git-LFS

    set_hf_home(monkeypatch, tmp_path / "hf-home-pull")
    out = run_python(
        "import json, torch\n"
        "from diffusion_link import DiffusionLinkBridge\n"
        "bridge = DiffusionLinkBridge.from_pretrained('user/bridge').eval()\n"
        f"x = torch.tensor({audio_embeds.tolist()!r})\n"
        "print(json.dumps(bridge.link(x, generator=torch.Generator().manual_seed(7)).tolist()))\n"
    )
    assert requested(hub, "GET", f"/user/bridge/resolve/{repo.refs['main']}/model.safetensors")
    torch.testing.assert_close(torch.tensor(json.loads(out.splitlines()[-1])), expected, rtol=0, atol=0)


@pytest.mark.integration
def test_captioner_push_to_hub_then_pipeline_by_repo_id_with_remote_code(hub, saved_tiny_captioner, tmp_path, monkeypatch):
    from transformers import pipeline

    import diffusion_link  # noqa: F401  (registers the task for the local reference)

    wav = write_wav(tmp_path / "clip.wav", seconds=2.0, rate=44100)
    local = pipeline("audio-captioning", model=str(saved_tiny_captioner))(wav, max_new_tokens=8)

    run_python(
        "import diffusion_link\n"
        "from transformers import pipeline\n"
        f"pipe = pipeline('audio-captioning', model={str(saved_tiny_captioner)!r})\n"
        "pipe.push_to_hub('user/captioner')\n"
    )
    repo = hub.repos[("model", "user/captioner")]
    pushed = set(repo.commits[repo.refs["main"]])
    saved = {p.relative_to(saved_tiny_captioner).as_posix() for p in saved_tiny_captioner.rglob("*") if p.is_file()}
    assert saved <= pushed and "model.safetensors" in saved and "pipeline_audio_captioning.py" in saved
    # Our captioner card, written for the repo id, not transformers' generic one.
    card = ModelCard(repo.commits[repo.refs["main"]]["README.md"].content.decode())
    assert card.data.library_name == "transformers" and "diffusion-link" in card.data.tags
    assert "user/captioner" in card.text and str(saved_tiny_captioner) not in card.text

    set_hf_home(monkeypatch, tmp_path / "hf-home-pull")
    out = run_python(
        "import sys, json; sys.modules['diffusion_link'] = None  # the code must come from the repo\n"
        "from transformers import pipeline\n"
        "pipe = pipeline('audio-captioning', model='user/captioner', trust_remote_code=True)\n"
        f"print(type(pipe).__module__.startswith('transformers_modules'), json.dumps(pipe({wav!r}, max_new_tokens=8)))\n"
    )
    flag, result = out.splitlines()[-1].split(" ", 1)
    assert flag == "True" and json.loads(result) == local
    assert requested(hub, "GET", f"/user/captioner/resolve/{repo.refs['main']}/model.safetensors")


@pytest.mark.integration
def test_embedding_dataset_push_to_hub_then_load_dataset(hub, tmp_path, monkeypatch):
    rows = {
        "audio_embeds": torch.randn(6, 8, generator=torch.Generator().manual_seed(0)).tolist(),
        "text_embeds": torch.randn(6, 8, generator=torch.Generator().manual_seed(1)).tolist(),
    }
    data_file = tmp_path / "rows.json"
    data_file.write_text(json.dumps(rows))

    run_python(
        "import json\n"
        "from datasets import Dataset, Features, Sequence, Value\n"
        "features = Features({'audio_embeds': Sequence(Value('float32')), 'text_embeds': Sequence(Value('float32'))})\n"
        f"Dataset.from_dict(json.load(open({str(data_file)!r})), features=features).push_to_hub('user/embeddings')\n"
    )
    repo = hub.repos[("dataset", "user/embeddings")]
    pushed = repo.commits[repo.refs["main"]]
    assert any(p.endswith(".parquet") and f.lfs for p, f in pushed.items())

    set_hf_home(monkeypatch, tmp_path / "hf-home-pull")
    out = run_python(
        "import json\n"
        "from datasets import load_dataset\n"
        "ds = load_dataset('user/embeddings', split='train')\n"
        "print(json.dumps({'features': str(ds.features), 'rows': ds.to_dict()}))\n"
    )
    loaded = json.loads(out.splitlines()[-1])
    assert "float32" in loaded["features"]
    for key in ("audio_embeds", "text_embeds"):  # float32 on both sides: equal values, not just close ones
        torch.testing.assert_close(torch.tensor(loaded["rows"][key]), torch.tensor(rows[key]), rtol=0, atol=0)
