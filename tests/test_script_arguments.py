import json
from dataclasses import dataclass, field

import pytest
import torch
from safetensors.torch import save_file
from transformers import TrainingArguments

from diffusion_link.experiments.script_arguments import last_complete_checkpoint, parse_script_args, resume_checkpoint


@dataclass
class DataArgs:
    train_file: str = field(metadata={"help": "required"})
    max_rows: int = 10
    names: list[str] = field(default_factory=lambda: ["a"])


def test_json_then_flags_that_override_it(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"train_file": "from_json", "max_rows": 3, "names": ["x", "y"], "output_dir": "o"}))
    data, training = parse_script_args((DataArgs, TrainingArguments), [str(config), "--max_rows", "5"])
    assert (data.train_file, data.max_rows, data.names) == ("from_json", 5, ["x", "y"])
    assert training.output_dir == "o" and training.report_to in ([], ["none"], "none")
    (data,) = parse_script_args((DataArgs,), ["--train_file", "flag"])
    assert (data.train_file, data.max_rows) == ("flag", 10)


def test_bad_configs_are_named(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"train_file": "x", "no_such_field": 1}))
    with pytest.raises(ValueError, match="no_such_field"):
        parse_script_args((DataArgs,), [str(config)])
    config.write_text("[1, 2]")
    with pytest.raises(ValueError, match="c.json must hold a JSON object"):
        parse_script_args((DataArgs,), [str(config)])
    config.write_text("{oops")
    with pytest.raises(ValueError, match="c.json is not valid JSON"):
        parse_script_args((DataArgs,), [str(config)])


def write_checkpoint(folder, step, complete=True):
    """A checkpoint folder as the Trainer writes it: weights, optimizer, and `trainer_state.json` last."""
    folder.mkdir()
    save_file({"w": torch.zeros(2)}, folder / "model.safetensors")
    torch.save({"state": {}}, folder / "optimizer.pt")
    if complete:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))


def test_resume_picks_the_newest_complete_checkpoint(tmp_path):
    for step, complete in ((10, True), (20, True), (30, False)):
        write_checkpoint(tmp_path / f"checkpoint-{step}", step, complete)
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-20")
    assert resume_checkpoint(TrainingArguments(output_dir=str(tmp_path))) == str(tmp_path / "checkpoint-20")
    given = TrainingArguments(output_dir=str(tmp_path), resume_from_checkpoint=str(tmp_path / "checkpoint-10"))
    assert resume_checkpoint(given) == str(tmp_path / "checkpoint-10")
    assert resume_checkpoint(TrainingArguments(output_dir=str(tmp_path / "new"))) is None


def test_a_run_killed_while_saving_its_first_checkpoint_starts_over(tmp_path, caplog):
    write_checkpoint(tmp_path / "checkpoint-5", 5, complete=False)
    with caplog.at_level("WARNING"):
        assert last_complete_checkpoint(str(tmp_path)) is None
    assert "checkpoint-5" in caplog.text and "no trainer_state.json" in caplog.text


def test_config_fields_take_their_defaults_from_the_config_class():
    import dataclasses

    from diffusion_link import DiffusionLinkCaptionerConfig, DiffusionLinkConfig
    from diffusion_link.experiments.script_arguments import config_default, config_field

    @dataclass
    class Args:
        num_blocks: int = config_field(DiffusionLinkConfig, "num_blocks", help="blocks")
        modules: str = config_field(DiffusionLinkCaptionerConfig, "lora_target_modules", help="m", convert=",".join)

    assert (Args().num_blocks, Args().modules) == (3, "q_proj,v_proj")
    assert dataclasses.fields(Args)[0].metadata["help"] == "blocks"
    (parsed,) = parse_script_args((Args,), ["--num_blocks", "5"])
    assert parsed.num_blocks == 5
    with pytest.raises(ValueError, match="no argument 'no_such_field'"):
        config_default(DiffusionLinkConfig, "no_such_field")


class _Exited(Exception):
    pass


def _fake_group(monkeypatch, destroy):
    import torch.distributed as dist

    calls = []
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: (calls.append("destroy"), destroy()))

    def fake_exit(code):
        raise _Exited(code)

    from diffusion_link.experiments import distributed

    monkeypatch.setattr(distributed.os, "_exit", fake_exit)
    monkeypatch.setattr(distributed.logging, "shutdown", lambda: None)  # keep pytest's log handlers open
    return calls


def test_finish_distributed_waits_for_everyone_then_tears_the_group_down(monkeypatch):
    from diffusion_link.experiments.distributed import finish_distributed

    calls = _fake_group(monkeypatch, destroy=lambda: None)
    finish_distributed(teardown_timeout=5)
    assert calls == ["barrier", "destroy"]


def test_a_teardown_that_never_returns_ends_the_process_with_success(monkeypatch, caplog):
    import threading

    from diffusion_link.experiments.distributed import finish_distributed

    never = threading.Event()
    calls = _fake_group(monkeypatch, destroy=never.wait)  # the pytorch#75097 hang
    with pytest.raises(_Exited) as exited, caplog.at_level("WARNING"):
        finish_distributed(teardown_timeout=0.2)
    assert exited.value.args == (0,) and calls == ["barrier", "destroy"]
    assert "did not return within" in caplog.text
    never.set()
