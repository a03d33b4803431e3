"""Bad call arguments, systematically: every numeric (and flag) argument of the audio-captioning pipeline, refused
at the call with a message that names it, says what was expected and what was received, before any input is read
(whatever `on_error` says: a bad argument is not a failure of one input), and the shared checks of
`diffusion_link.validation` that the CLI and the training scripts call too. Bad *inputs* (files, arrays) are in
`test_bad_inputs.py`."""

import math
import re

import numpy as np
import pytest

from diffusion_link.audio_io import window_bounds
from diffusion_link.validation import (
    check_finite_float,
    check_non_negative_int,
    check_positive_float,
    check_positive_int,
    check_probability,
    check_strength,
)

NAN, INF = math.nan, math.inf

# call arguments -> (exception, message). Each once ended in a silent loss (empty captions reported as success, a
# chunking dropped, NaN comparing false), a ZeroDivisionError that `on_error="report"` did not catch, or an error
# raised only after the audio was embedded.
PIPELINE_CASES = {
    "batch_size=-1": ({"batch_size": -1}, ValueError, "`batch_size` must be a positive int, got -1."),
    "batch_size=0": ({"batch_size": 0}, ValueError, "`batch_size` must be a positive int, got 0."),
    "batch_size=2.5": ({"batch_size": 2.5}, ValueError, "`batch_size` must be a positive int, got 2.5."),
    "num_workers=2": ({"num_workers": 2}, ValueError, "`num_workers=2` is not supported"),
    "num_beams=0": ({"num_beams": 0}, ValueError, "`num_beams` must be a positive int, got 0."),
    "num_beams in generate_kwargs": ({"generate_kwargs": {"num_beams": 0}}, ValueError,
                                     "`num_beams` must be a positive int, got 0."),
    "max_new_tokens=0": ({"max_new_tokens": 0}, ValueError, "`max_new_tokens` must be a positive int, got 0."),
    "max_new_tokens=-1": ({"max_new_tokens": -1}, ValueError, "`max_new_tokens` must be a positive int, got -1."),
    "max_new_tokens=True": ({"max_new_tokens": True}, ValueError, "`max_new_tokens` must be a positive int, got True."),
    "chunk_length_s=0": ({"chunk_length_s": 0}, ValueError, "`chunk_length_s` must be a finite number > 0, got 0."),
    "chunk_length_s=-1": ({"chunk_length_s": -1.0}, ValueError, "`chunk_length_s` must be a finite number > 0, got -1.0."),
    "chunk_length_s=nan": ({"chunk_length_s": NAN}, ValueError, "`chunk_length_s` must be a finite number > 0, got nan."),
    "chunk_length_s=inf": ({"chunk_length_s": INF}, ValueError, "`chunk_length_s` must be a finite number > 0, got inf."),
    "chunk_length_s=0.05": ({"chunk_length_s": 0.05}, ValueError, "`chunk_length_s` must be at least 0.1 s"),
    "stride_s alone": ({"stride_s": 1.0}, ValueError, "`stride_s` needs `chunk_length_s` (the window length)"),
    "stride_s=0": ({"chunk_length_s": 1.0, "stride_s": 0}, ValueError, "`stride_s` must be a finite number > 0, got 0."),
    "stride_s=nan": ({"chunk_length_s": 1.0, "stride_s": NAN}, ValueError, "`stride_s` must be a finite number > 0"),
    "stride_s > chunk": ({"chunk_length_s": 1.0, "stride_s": 2.0}, ValueError, "a stride longer than the window"),
    "stride_s < 1 sample": ({"chunk_length_s": 1.0, "stride_s": 1e-9}, ValueError, "shorter than one sample"),
    "num_candidates=0": ({"num_candidates": 0}, ValueError, "`num_candidates` must be a positive int, got 0."),
    "strength=0": ({"strength": 0}, ValueError, "`strength` must be a float in (0, 1], got 0."),
    "strength=1.5": ({"strength": 1.5}, ValueError, "`strength` must be a float in (0, 1], got 1.5."),
    "strength=nan": ({"strength": NAN}, ValueError, "`strength` must be a float in (0, 1], got nan."),
    "num_inference_steps=0": ({"num_inference_steps": 0}, ValueError,
                              "`num_inference_steps` must be a positive int, got 0."),
    "silence_threshold_db=nan": ({"silence_threshold_db": NAN}, ValueError,
                                 "`silence_threshold_db` must be a finite number, got nan."),
    "sampling_rate=0": ({"sampling_rate": 0}, ValueError, "`sampling_rate` must be a positive int (Hz), got 0."),
    "sampling_rate=16000.0": ({"sampling_rate": 16000.0}, ValueError, "`sampling_rate` must be a positive int (Hz)"),
    "rerank=best": ({"rerank": "best"}, ValueError, "`rerank` must be one of ('lm', 'similarity', 'combined')"),
    "on_error=skip": ({"on_error": "skip"}, ValueError, "`on_error` must be one of ('raise', 'report'), got 'skip'."),
    "return_embeddings='no'": ({"return_embeddings": "no"}, TypeError, "`return_embeddings` must be True or False"),
    "generate_kwargs=list": ({"generate_kwargs": [("num_beams", 2)]}, TypeError, "`generate_kwargs` must be a dict"),
    # Set by the pipeline itself: several sequences per clip gave the second input the first one's second caption.
    "num_return_sequences": ({"generate_kwargs": {"num_return_sequences": 2}}, ValueError,
                             "cannot set `num_return_sequences`: the pipeline sets it; use `num_candidates`"),
    "return_dict_in_generate": ({"generate_kwargs": {"return_dict_in_generate": True}}, ValueError,
                                "cannot set `return_dict_in_generate`"),
    "strength in generate_kwargs": ({"generate_kwargs": {"strength": 0.5}}, ValueError,
                                    "use the call argument `strength`"),
    "unknown": ({"chunk_length": 10}, TypeError, "Unknown argument(s) for the audio-captioning pipeline: ['chunk_length']"),
}


@pytest.mark.parametrize("name", list(PIPELINE_CASES))
@pytest.mark.parametrize("inputs", ["list", "one", "generator", "empty list"])
def test_each_bad_argument_is_refused_at_the_call_before_any_input_is_read(tiny_pipeline, tmp_path, name, inputs):
    kwargs, error, message = PIPELINE_CASES[name]
    missing = str(tmp_path / "never-read.wav")  # read first, it would raise FileNotFoundError (or be reported)
    given = {"list": [missing, missing], "one": missing, "generator": (m for m in [missing]), "empty list": []}[inputs]
    with pytest.raises(error, match=re.escape(message)) as err:
        tiny_pipeline(given, **{"on_error": "report", **kwargs})
    assert type(err.value) is error


def test_a_bad_batch_size_given_at_construction_is_refused_at_the_call(tiny_pipeline):
    tiny_pipeline._batch_size = 0  # what `pipeline("audio-captioning", batch_size=0)` stores
    try:
        with pytest.raises(ValueError, match=re.escape("`batch_size` must be a positive int, got 0.")):
            tiny_pipeline(np.zeros(16000, np.float32), sampling_rate=16000)
    finally:
        tiny_pipeline._batch_size = None


def test_good_edge_values_are_taken(tiny_pipeline):
    x = (0.1 * np.random.default_rng(0).standard_normal(48000)).astype(np.float32)
    out = tiny_pipeline(x, sampling_rate=np.int64(48000), chunk_length_s=0.1, stride_s=0.1, strength=1.0,
                        max_new_tokens=1, num_inference_steps=1, silence_threshold_db=-200, batch_size=1)
    assert len(out["chunks"]) == 10 and out["chunks"][0]["timestamp"] == (0.0, 0.1)
    assert tiny_pipeline([], batch_size=3) == []


# ---------------------------------------------------------------------------------------------- the shared checks
CHECKS = {
    check_positive_int: ([1, 7, 10**12], [0, -1, True, False, 1.0, 2.5, "3", None, np.int64(3)]),
    check_non_negative_int: ([0, 1, 7], [-1, True, 0.0, 1.5, "0", None]),
    check_positive_float: ([1e-9, 0.5, 3, 1e300, np.float32(2.0)], [0, 0.0, -0.5, NAN, INF, -INF, True, "1", None]),
    check_finite_float: ([-200, 0, 0.0, 3.5, -1e300], [NAN, INF, -INF, True, "0", None]),
    check_probability: ([0, 0.0, 0.5, 1, 1.0], [-0.01, 1.01, NAN, INF, True, False, "0.5", None]),
}


@pytest.mark.parametrize("check", list(CHECKS), ids=lambda c: c.__name__)
def test_number_checks_take_good_values_and_name_the_argument_for_bad_ones(check):
    good, bad = CHECKS[check]
    for value in good:
        assert check("size", value) == value
    for value in bad:
        with pytest.raises(ValueError, match=rf"^`size` must be .*, got {re.escape(repr(value))}\.$"):
            check("size", value)


def test_float_checks_return_python_floats():
    # argparse types and configs store what the checks return: a float, never a numpy scalar or an int
    assert type(check_positive_float("x", np.float32(2.0))) is float and type(check_probability("x", 1)) is float


@pytest.mark.parametrize("strength", [0, -0.1, 1.01, NAN, INF, True, "0.5", None])
def test_strength_outside_its_range_is_refused(strength):
    with pytest.raises(ValueError, match=re.escape(f"`strength` must be a float in (0, 1], got {strength!r}.")):
        check_strength(strength)


@pytest.mark.parametrize("chunk, stride, message", [
    (0, None, "`chunk_length_s` must be a finite number > 0, got 0."),
    (NAN, None, "`chunk_length_s` must be a finite number > 0, got nan."),
    (INF, None, "`chunk_length_s` must be a finite number > 0, got inf."),
    (0.05, None, "`chunk_length_s` must be at least 0.1 s (the shortest audio that gets a caption), got 0.05."),
    (1.0, -1.0, "`stride_s` must be a finite number > 0, got -1.0."),
    (1.0, INF, "`stride_s` must be a finite number > 0, got inf."),
    (1.0, 1.5, "`stride_s` must lie in (0, chunk_length_s=1.0], got 1.5"),
])
def test_window_bounds_refuse_windows_that_would_lose_or_merge_audio(chunk, stride, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        window_bounds(16000, 16000, chunk, stride)
