"""`diffusion-link space` (`diffusion_link.apps.space`): what a Space folder may hold, checked before anything is
written.

A Space is published as it is written (`--push`), so the exporter refuses, by name and before writing anything, a
Space folder inside a folder it copies (the copy once went on until `RecursionError`, 497 levels deep in the user's
model folder), every entry of a copied folder that is not a regular file of it (a link to `/etc/passwd` was once
copied and would have been pushed), a model that is neither a captioner folder nor a Hub id, and a Space folder that
is not new or empty. The page itself and the push to a stand-in Hub are in `tests/test_web_demo.py`.
"""

import os
import shutil

import pytest

from .conftest import write_wav


pytest.importorskip("gradio", reason="`diffusion-link space` needs the [app] extra (Gradio); `make test` installs it")

from diffusion_link.apps import space  # noqa: E402
from diffusion_link.apps.cli import main  # noqa: E402
from diffusion_link.apps.space import push_space, write_space  # noqa: E402


@pytest.fixture
def fake_package(tmp_path_factory, monkeypatch):
    """A two-file stand-in for the package's own code (outside `tmp_path`), so that each Space written here copies
    kilobytes."""
    package = tmp_path_factory.mktemp("pkg") / "diffusion_link"
    (package / "apps" / "__pycache__").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "apps" / "web_demo.py").write_text("# the page\n")
    (package / "apps" / "__pycache__" / "web_demo.cpython-311.pyc").write_bytes(b"\0")
    monkeypatch.setattr(space, "PACKAGE_DIR", str(package))
    return package


@pytest.fixture
def model_dir(saved_tiny_captioner, tmp_path):
    """A copy of the saved tiny captioner that a case may change."""
    folder = tmp_path / "captioner"
    shutil.copytree(saved_tiny_captioner, folder)
    return folder


def listing(folder):
    return sorted(os.path.relpath(os.path.join(root, name), folder) for root, dirs, names in os.walk(folder)
                  for name in dirs + names)


# ---------------------------------------------------------------------------------------------- nested folders
# where the Space folder is (from the model folder M, the package P and the test's folder T) -> the error's words
NESTED = {
    "M": (lambda m, p, t: m, "is the model folder"),
    "M/space": (lambda m, p, t: m / "space", "is inside the model folder"),
    "M/a/b/space": (lambda m, p, t: m / "a" / "b" / "space", "is inside the model folder"),
    "link-to-M/space": (lambda m, p, t: t / "link-to-M" / "space", "is inside the model folder"),  # where it points
    "P/space": (lambda m, p, t: p / "space", "is inside the package folder"),
    "T, around M": (lambda m, p, t: t, "is inside the Space folder"),  # M would be copied into a copy of itself
}


@pytest.mark.parametrize("case", list(NESTED))
def test_a_space_folder_in_or_around_a_folder_it_copies_is_refused_before_writing(case, fake_package, model_dir,
                                                                                   tmp_path):
    where, words = NESTED[case]
    os.symlink(model_dir, tmp_path / "link-to-M")
    out = str(where(model_dir, fake_package, tmp_path))
    before = listing(tmp_path), listing(fake_package)
    with pytest.raises(ValueError, match=words) as err:
        write_space(out, str(model_dir))
    assert out in str(err.value) and str(fake_package if case == "P/space" else model_dir) in str(err.value)
    assert (listing(tmp_path), listing(fake_package)) == before  # nothing written anywhere


def test_the_cli_refuses_a_space_inside_the_model_folder_without_a_traceback(fake_package, model_dir, capsys):
    assert main(["space", str(model_dir / "space"), "--model", str(model_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "inside the model folder" in err and "Traceback" not in err
    assert not (model_dir / "space").exists()


# ---------------------------------------------------------------------------------------------- entries of a model
def outside_link(model_dir, tmp_path):
    (tmp_path / "secret").write_text("root:x:0:0")
    os.symlink(tmp_path / "secret", model_dir / "passwd")
    return "passwd", "outside"


def broken_link(model_dir, tmp_path):
    os.symlink(model_dir / "gone.bin", model_dir / "weights.bin")
    return "weights.bin", "broken link"


def folder_link(model_dir, tmp_path):
    os.symlink("..", model_dir / "loop")  # inside the folder's parent: copied, it would never end
    return "loop", "a link to the folder"


def fifo(model_dir, tmp_path):
    os.mkfifo(model_dir / "pipe")
    return "pipe", "named pipe"


def in_a_subfolder(model_dir, tmp_path):
    os.symlink("/etc/hostname", model_dir / "audio_text_tokenizer" / "extra.txt")
    return os.path.join("audio_text_tokenizer", "extra.txt"), "outside"


BAD_ENTRIES = [outside_link, broken_link, folder_link, fifo, in_a_subfolder]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="links and FIFOs as POSIX makes them")
@pytest.mark.parametrize("make", BAD_ENTRIES, ids=[make.__name__ for make in BAD_ENTRIES])
def test_an_entry_that_is_not_a_regular_file_of_the_model_folder_is_refused_by_name(make, fake_package, model_dir,
                                                                                    tmp_path):
    name, words = make(model_dir, tmp_path)
    out = tmp_path / "space"
    with pytest.raises(ValueError, match=words) as err:
        write_space(str(out), str(model_dir))
    assert str(model_dir / name) in str(err.value) and "nothing was copied" in str(err.value)
    assert not out.exists()


def test_a_link_to_a_file_of_the_folder_is_copied_as_that_file(fake_package, model_dir, tmp_path):
    os.symlink("config.json", model_dir / "config-link.json")
    (model_dir / "checkpoint-5").mkdir()  # a training checkpoint: not part of the Space
    (model_dir / "checkpoint-5" / "optimizer.pt").write_bytes(b"\0" * 10)
    files = write_space(str(tmp_path / "space"), str(model_dir))
    copied = tmp_path / "space" / "model" / "config-link.json"
    assert not copied.is_symlink() and copied.read_bytes() == (model_dir / "config.json").read_bytes()
    assert "model/model.safetensors" in files and not any("checkpoint-5" in f for f in files)
    assert "diffusion_link/apps/web_demo.py" in files and not any(f.endswith(".pyc") for f in files)
    readme = (tmp_path / "space" / "README.md").read_text()
    assert "Model: `captioner`" in readme and str(tmp_path) not in readme  # no local path is published
    assert not any(os.path.islink(os.path.join(root, n)) for root, _, names in os.walk(tmp_path / "space")
                   for n in names)


def test_a_snapshot_of_the_hub_cache_is_copied_through_its_blob_links(fake_package, saved_tiny_captioner, tmp_path):
    repo = tmp_path / "hub" / "models--user--captioner"
    snapshot = repo / "snapshots" / "0123abc"
    (repo / "blobs").mkdir(parents=True)
    for root, _, names in os.walk(saved_tiny_captioner):
        for name in names:
            relative = os.path.relpath(os.path.join(root, name), saved_tiny_captioner)
            blob = repo / "blobs" / relative.replace(os.sep, "-")
            shutil.copy(os.path.join(root, name), blob)
            (snapshot / relative).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(blob, (snapshot / relative).parent), snapshot / relative)
    files = write_space(str(tmp_path / "space"), str(snapshot))
    assert {"model/config.json", "model/audio_text_tokenizer/tokenizer.json"} <= set(files)
    assert (tmp_path / "space" / "model" / "model.safetensors").stat().st_size == (
        saved_tiny_captioner / "model.safetensors").stat().st_size


# ---------------------------------------------------------------------------------------------- the Space folder
def not_empty(out):
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    return FileExistsError, "not empty"


def a_file(out):
    out.write_text("mine")
    return FileExistsError, "not a folder"


def a_broken_link(out):
    os.symlink(out.parent / "gone", out)
    return FileExistsError, "not a folder"


@pytest.mark.parametrize("make", [not_empty, a_file, a_broken_link], ids=["not_empty", "a_file", "a_broken_link"])
def test_a_space_folder_that_is_not_new_or_empty_is_left_as_it_was(make, fake_package, model_dir, tmp_path):
    out = tmp_path / "space"
    error, words = make(out)
    before = listing(tmp_path)
    with pytest.raises(error, match=words):
        write_space(str(out), str(model_dir))
    assert listing(tmp_path) == before


def test_an_empty_space_folder_is_used_and_a_copy_that_fails_part_way_is_removed(fake_package, model_dir, tmp_path,
                                                                                monkeypatch):
    out = tmp_path / "space"
    out.mkdir()
    copies = []

    def disk_full_at_the_third(source, destination):
        copies.append(source)
        if len(copies) == 3:
            raise OSError(28, "No space left on device", destination)
        return shutil.copy2(source, destination)

    monkeypatch.setattr(space.shutil, "copy2", disk_full_at_the_third)
    with pytest.raises(OSError, match="No space left"):
        write_space(str(out), str(model_dir))
    assert out.is_dir() and os.listdir(out) == []  # as it was: the same command can be run again
    monkeypatch.undo()
    monkeypatch.setattr(space, "PACKAGE_DIR", str(fake_package))
    assert "app.py" in write_space(str(out), str(model_dir))


# ---------------------------------------------------------------------------------------------- the model argument
def test_the_model_is_a_captioner_folder_or_a_hub_id(fake_package, model_dir, tmp_path):
    write_wav(tmp_path / "clip.wav", seconds=0.1)
    cases = [
        (str(model_dir / "config.json"), "is a file"),
        (str(tmp_path), "expected a 'diffusion_link_captioner' checkpoint"),  # a folder of something else
        ("./no/such/folder", "not a folder here, nor a Hub id"),
        ("", "not a folder here, nor a Hub id"),
    ]
    for model, words in cases:
        with pytest.raises(ValueError, match=words):
            write_space(str(tmp_path / "space"), model)
        assert not (tmp_path / "space").exists()
    write_space(str(tmp_path / "space"), "user/captioner")  # a Hub id: loaded by name when the Space starts
    app = (tmp_path / "space" / "app.py").read_text()
    assert "MODEL = 'user/captioner'" in app and not (tmp_path / "space" / "model").exists()


# ---------------------------------------------------------------------------------------------- what --push uploads
def test_push_refuses_a_folder_changed_since_it_was_written_before_any_upload(fake_package, model_dir, tmp_path,
                                                                            monkeypatch):
    import huggingface_hub

    def no_hub(*args, **kwargs):
        raise AssertionError("nothing may reach the Hub")

    monkeypatch.setattr(huggingface_hub, "HfApi", no_hub)
    out = tmp_path / "space"
    write_space(str(out), str(model_dir))
    (tmp_path / "secret").write_text("key")
    os.symlink(tmp_path / "secret", out / "model" / "token")
    with pytest.raises(ValueError, match="token.*a link to"):
        push_space(str(out), "user/space")
    with pytest.raises(ValueError, match="no app.py"):
        push_space(str(model_dir), "user/space")
