import os

import pytest

from diffusion_link.apps.reference_captions import read_references_csv, read_sidecar_references

from .conftest import REPO_ROOT, write_csv


DATA = os.environ.get("DIFFUSION_LINK_DATA") or os.path.join(REPO_ROOT, "..", "shared", "data")


def test_audiocaps_rows_are_grouped_by_youtube_id(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "Yabc.wav").write_bytes(b"")  # AudioSet naming
    (audio / "xyz_30.flac").write_bytes(b"")  # <id>_<start_time>
    refs = write_csv(tmp_path / "val.csv", ["audiocap_id", "youtube_id", "start_time", "caption"], [
        [1, "abc", 10, "a dog barks"], [2, "xyz", 30, "rain falls"], [3, "abc", 10, "a dog growls"],
        [4, "nope", 0, "wind blows"],
    ])
    files, references = read_references_csv(refs, audio)
    assert files == [str(audio / "Yabc.wav"), str(audio / "xyz_30.flac"), str(audio / "nope")]
    assert references == [["a dog barks", "a dog growls"], ["rain falls"], ["wind blows"]]


@pytest.mark.skipif(not os.path.isdir(os.path.join(DATA, "captions")), reason=f"no shared caption CSVs at {DATA}")
def test_the_clotho_and_audiocaps_csvs_read():
    files, references = read_references_csv(os.path.join(DATA, "captions", "clotho", "clotho_captions_evaluation.csv"))
    assert len(files) == 1038 and all(len(r) == 5 for r in references) and files[0].endswith("Santa Motor.wav")
    files, references = read_references_csv(os.path.join(DATA, "captions", "audiocaps", "v1", "val.csv"), "/nowhere")
    assert len(files) == 495 and all(len(r) == 5 for r in references)


def test_sidecar_references_need_a_text_file(tmp_path):
    (tmp_path / "a.txt").write_text("a dog\n  \nbarking\n")
    (tmp_path / "b.txt").write_text("\n")
    assert read_sidecar_references([str(tmp_path / "a.wav")]) == [["a dog", "barking"]]
    with pytest.raises(ValueError, match=r"b\.txt.*c\.txt"):
        read_sidecar_references([str(tmp_path / "a.wav"), str(tmp_path / "b.flac"), str(tmp_path / "c.wav")])
