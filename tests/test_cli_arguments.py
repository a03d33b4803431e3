"""The command line's arguments, checked when they are parsed (no model loads): every number of every subcommand,
the window options together, and the paths `expand_paths` takes literally or as patterns."""

import argparse
import os

import pytest

from diffusion_link.apps.cli import build_parser, expand_paths, main


# (command line, the option named, what it expects) -> exit code 2 and one `error:` line naming them and the value
BAD_NUMBERS = [
    (["caption", "a.wav", "--batch-size", "-1"], "--batch-size", "a positive integer"),
    (["caption", "a.wav", "--batch-size", "0"], "--batch-size", "a positive integer"),
    (["caption", "a.wav", "--batch-size", "2.5"], "--batch-size", "a positive integer"),
    (["caption", "a.wav", "--num-beams", "0"], "--num-beams", "a positive integer"),
    (["caption", "a.wav", "--max-new-tokens", "0"], "--max-new-tokens", "a positive integer"),
    (["caption", "a.wav", "--num-candidates", "0"], "--num-candidates", "a positive integer"),
    (["caption", "a.wav", "--min-confidence", "1.5"], "--min-confidence", "a number in [0, 1]"),
    (["caption", "a.wav", "--min-confidence", "nan"], "--min-confidence", "a number in [0, 1]"),
    (["caption", "a.wav", "--chunk-length-s", "0"], "--chunk-length-s", "a finite number > 0"),
    (["caption", "a.wav", "--chunk-length-s", "inf"], "--chunk-length-s", "a finite number > 0"),
    (["caption", "a.wav", "--chunk-length-s", "10", "--stride-s", "-1"], "--stride-s", "a finite number > 0"),
    (["gap", "e.safetensors", "--strength", "0"], "--strength", "a number in (0, 1]"),
    (["gap", "e.safetensors", "--strength", "1.5"], "--strength", "a number in (0, 1]"),
    (["gap", "e.safetensors", "--steps", "0"], "--steps", "a positive integer"),
    (["evaluate", "a.wav", "--output-dir", "o", "--batch-size", "0"], "--batch-size", "a positive integer"),
    (["evaluate", "a.wav", "--output-dir", "o", "--max-new-tokens", "-3"], "--max-new-tokens", "a positive integer"),
    (["evaluate", "a.wav", "--output-dir", "o", "--num-beams", "0"], "--num-beams", "a positive integer"),
    (["evaluate", "a.wav", "--output-dir", "o", "--strength", "nan"], "--strength", "a number in (0, 1]"),
    (["evaluate", "a.wav", "--output-dir", "o", "--num-inference-steps", "0"], "--num-inference-steps",
     "a positive integer"),
    (["evaluate", "a.wav", "--output-dir", "o", "--limit", "0"], "--limit", "a positive integer"),
    (["search", "rain", "a.wav", "--top-k", "0"], "--top-k", "a positive integer"),
    (["search", "rain", "a.wav", "--batch-size", "x"], "--batch-size", "a positive integer"),
    (["serve", "--port", "70000"], "--port", "a port number in 1..65535"),
    (["serve", "--port", "0"], "--port", "a port number in 1..65535"),
    (["serve", "--concurrency", "0"], "--concurrency", "a positive integer"),
    (["serve", "--max-duration-s", "0"], "--max-duration-s", "a finite number > 0"),
    (["serve", "--max-file-mb", "-0.5"], "--max-file-mb", "a finite number > 0"),
    (["space", "out", "--max-duration-s", "inf"], "--max-duration-s", "a finite number > 0"),
    (["space", "out", "--max-file-mb", "0"], "--max-file-mb", "a finite number > 0"),
]
BAD_NUMBER_IDS = [" ".join(argv[:1] + argv[-2:]) for argv, _, _ in BAD_NUMBERS]


@pytest.mark.parametrize("argv, option, expected", BAD_NUMBERS, ids=BAD_NUMBER_IDS)
def test_a_bad_number_is_a_usage_error_naming_option_expectation_and_value(argv, option, expected, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "error:" in line]
    assert f"argument {option}: expected {expected}, got {argv[-1]!r}" in line
    assert "Traceback" not in err


# (command line, what the error line says): the window options only make sense together
BAD_WINDOWS = [
    (["caption", "a.wav", "--stride-s", "1"], "--stride-s: needs --chunk-length-s"),
    (["caption", "a.wav", "--chunk-length-s", "1", "--stride-s", "2"],
     "expected at most --chunk-length-s (1.0), got 2.0"),
]


@pytest.mark.parametrize("argv, message", BAD_WINDOWS)
def test_stride_without_or_longer_than_the_window_is_a_usage_error(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_good_numbers_parse_as_their_type():
    parse = build_parser().parse_args
    assert parse(["serve", "--max-file-mb", "0.5", "--port", "65535", "--concurrency", "1"]).max_file_mb == 0.5
    args = parse(["caption", "a.wav", "--chunk-length-s", "10", "--stride-s", "10", "--min-confidence", "0"])
    assert (args.chunk_length_s, args.stride_s, args.min_confidence) == (10.0, 10.0, 0.0)
    assert parse(["gap", "e.safetensors", "--strength", "1"]).strength == 1.0


def test_every_number_of_every_subcommand_is_checked():
    """A new numeric option with a bare `type=int` or `type=float` would take 0, -1, nan or inf unchecked."""
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == {"caption", "gap", "evaluate", "search", "serve", "space", "setup-starter"}
    for name, command in commands.items():
        for action in command._actions:
            assert action.type not in (int, float), f"{name} {action.option_strings} is not checked"


def test_an_existing_path_is_literal_and_one_file_is_one_entry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("dir")
    for name in ("take[1].wav", "take1.wav", "dir/x.wav", "dir/notes.txt"):
        open(name, "wb").close()
    assert expand_paths(["take[1].wav"]) == ["take[1].wav"]  # a file name, not the class [1]
    assert expand_paths(["take[0-9].wav"]) == ["take1.wav"]  # no such file: a pattern
    assert expand_paths(["./dir/x.wav", "dir/x.wav", "dir", str(tmp_path / "dir" / "x.wav")]) == ["./dir/x.wav"]
    with pytest.raises(FileNotFoundError, match="No file matches 'none\\*.wav'"):
        expand_paths(["none*.wav"])
