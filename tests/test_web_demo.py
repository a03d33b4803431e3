"""The web page (`diffusion-link serve`) and its Hub Space (`diffusion-link space`).

The page's logic is checked in-process on the tiny captioner. The page itself is checked in a real browser: headless
Chromium from Debian's packages (`/usr/bin/chromium`), driven by Playwright, against `diffusion-link serve` of the
starter on 127.0.0.1. `.ci/run` (through `make test`) installs Chromium, Gradio and Playwright, so CI runs these; a
machine without them skips them and says why. The browser run saves a screenshot of the page to
`$DIFFUSION_LINK_TEST_ARTIFACTS` (default `test-artifacts/`, not committed).
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import REPO_ROOT, run_python, write_wav


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before Gradio is imported, as the page's own import does
gradio = pytest.importorskip("gradio", reason="the web page needs the [app] extra (Gradio); `make test` installs it")

from diffusion_link.apps.space import space_requirements, write_space  # noqa: E402
from diffusion_link.apps.web_demo import Limits, WebDemo, build_app  # noqa: E402


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = os.environ.get("DIFFUSION_LINK_TEST_ARTIFACTS") or os.path.join(REPO_ROOT, "test-artifacts")


@pytest.fixture(scope="module")
def tiny_demo():
    from diffusion_link.testing import tiny_captioner

    return WebDemo(tiny_captioner(seed=0), "tiny")


def test_the_page_logic_captions_like_the_pipeline_and_shows_where_the_clip_lands(tiny_demo, tmp_path):
    clip = write_wav(tmp_path / "a.wav", seed=3)
    out = tiny_demo.caption(clip)
    assert out["message"] == "" and out["caption"] == tiny_demo.pipe(clip)["generated_text"]
    ax = out["figure"].axes[0]
    offsets = [c.get_offsets() for c in ax.collections]
    assert [len(o) for o in offsets] == [250, 1, 1]  # the caption gallery, the raw clip, the bridged clip
    assert ax.get_legend().get_texts()[1].get_text() == "this clip, raw audio"


def test_long_audio_shows_each_window_with_its_timestamps(tiny_demo, tmp_path):
    clip = write_wav(tmp_path / "long.wav", seconds=24.0, seed=4)
    out = tiny_demo.caption(clip)
    assert [row[:2] for row in out["chunks"]] == [[0.0, 10.0], [10.0, 20.0], [20.0, 24.0]]
    expected = tiny_demo.pipe(clip, chunk_length_s=10)["chunks"]
    assert [row[2] for row in out["chunks"]] == [c["generated_text"] for c in expected]


@pytest.mark.parametrize("case, expected", [
    ("none", "Upload or record a sound first."),
    ("corrupt", "is not audio this page can read"),
    ("silent", "The recording is silent"),
    ("short", "at least 0.1 s is needed"),
    ("too long", "this page takes up to 3 s"),
    ("too large", "this page takes files up to 0.01 MB"),
])
def test_bad_input_gets_a_readable_message_and_no_caption(tiny_demo, tmp_path, case, expected):
    demo = WebDemo(tiny_demo.pipe, "tiny", Limits(max_duration_s=3, max_file_mb=0.01 if case == "too large" else 50))
    path = {
        "none": lambda: None,
        "corrupt": lambda: (tmp_path / "x.wav").write_bytes(b"RIFF garbage") and str(tmp_path / "x.wav"),
        "silent": lambda: write_wav(tmp_path / "s.wav", amplitude=0.0),
        "short": lambda: write_wav(tmp_path / "t.wav", seconds=0.01),
        "too long": lambda: write_wav(tmp_path / "l.wav", seconds=4.0),
        "too large": lambda: write_wav(tmp_path / "b.wav", seconds=1.0),
    }[case]()
    out = demo.caption(path)
    assert expected in out["message"] and out["caption"] == "" and out["figure"] is None
    assert "Traceback" not in out["message"]
    assert str(tmp_path) not in out["message"]  # the server's folders are never shown, only a file's base name


def test_messages_name_the_file_but_never_the_servers_folder(tiny_demo, tmp_path):
    upload = tmp_path / "gradio" / "0a1b2c"
    upload.mkdir(parents=True)
    short = write_wav(upload / "my clip.wav", seconds=0.01)
    out = tiny_demo.caption(short)
    assert out["message"].startswith("This audio cannot be captioned: my clip.wav: audio is 441 samples")
    assert "gradio" not in out["message"] and str(tmp_path) not in out["message"]
    link = tmp_path / "link.wav"
    link.symlink_to(short)  # a path that resolves elsewhere: neither spelling is shown
    message = tiny_demo.caption(str(link))["message"]
    assert "link.wav" in message and str(tmp_path) not in message


@pytest.mark.parametrize("limits, error", [
    ({"max_file_mb": 0}, "`max_file_mb` must be a finite number > 0, got 0"),
    ({"max_file_mb": -1.0}, "`max_file_mb` must be a finite number > 0, got -1.0"),
    ({"max_file_mb": float("nan")}, "`max_file_mb` must be a finite number > 0, got nan"),
    ({"max_file_mb": float("inf")}, "`max_file_mb` must be a finite number > 0, got inf"),
    ({"max_file_mb": True}, "`max_file_mb` must be a finite number > 0, got True"),
    ({"max_file_mb": 1e-9}, "`max_file_mb` must allow at least one byte, got 1e-09"),
    ({"max_duration_s": 0}, "`max_duration_s` must be a finite number > 0, got 0"),
    ({"max_duration_s": float("nan")}, "`max_duration_s` must be a finite number > 0, got nan"),
])
def test_limits_refuse_what_would_reject_every_upload(limits, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        Limits(**limits)


@pytest.mark.parametrize("max_file_mb, max_file_bytes", [(0.5, 524288), (50, 52428800), (0.001, 1048), (1, 2**20)])
def test_the_upload_limit_reaches_gradio_to_the_byte(max_file_mb, max_file_bytes):
    assert Limits(max_file_mb=max_file_mb).max_file_bytes == max_file_bytes


@pytest.mark.parametrize("stop", ["returns", "ctrl-c"])
def test_serve_keeps_its_files_in_one_folder_deleted_when_it_stops(tiny_demo, tmp_path, monkeypatch, stop):
    from diffusion_link.apps import web_demo

    monkeypatch.setattr(web_demo, "load_demo", lambda model, limits, trust: WebDemo(tiny_demo.pipe, "tiny", limits))
    monkeypatch.setattr(web_demo.tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    seen = {}

    def launch(app, **kwargs):
        seen.update(kwargs, cache=os.environ["GRADIO_TEMP_DIR"], blocks_cache=app.GRADIO_CACHE,
                    examples=list(tmp_path.rglob("*.wav")))
        os.makedirs(seen["cache"], exist_ok=True)
        write_wav(os.path.join(seen["cache"], "upload.wav"))  # what an upload leaves
        if stop == "ctrl-c":
            raise KeyboardInterrupt

    monkeypatch.setattr(gradio.Blocks, "launch", launch)
    if stop == "ctrl-c":
        with pytest.raises(KeyboardInterrupt):
            web_demo.serve(limits=Limits(max_file_mb=0.5))
    else:
        web_demo.serve(limits=Limits(max_file_mb=0.5))
    assert seen["max_file_size"] == 524288
    (folder,) = {os.path.relpath(p, tmp_path).split(os.sep)[0] for p in seen["examples"]}
    assert folder.startswith("diffusion-link-serve-") and seen["cache"] == seen["blocks_cache"]
    assert seen["cache"] == os.path.join(tmp_path, folder, "uploads")
    assert os.listdir(tmp_path) == [] and "GRADIO_TEMP_DIR" not in os.environ


def test_the_app_is_offline_bound_to_localhost_and_queued(tiny_demo):
    app = build_app(tiny_demo, concurrency_limit=3)
    assert app.analytics_enabled is False and os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert app.delete_cache == (3600, 3600)  # uploads older than an hour are deleted while the page runs
    assert app.theme._stylesheets == []  # system fonts only (gradio's default theme links a web font stylesheet)
    assert gradio.themes.Default()._stylesheets  # ... which this check would catch
    caption_fn = [fn for fn in app.fns.values() if fn.api_name == "caption"]
    assert len(caption_fn) == 1 and caption_fn[0].concurrency_limit == 3
    from diffusion_link.apps.cli import build_parser

    serve = build_parser().parse_args(["serve"])
    assert serve.host == "127.0.0.1" and serve.port == 7860


@pytest.mark.integration
def test_space_folder_runs_the_page_and_is_pushed_to_the_hub(saved_tiny_captioner, tmp_path, hub):
    out = tmp_path / "space"
    files = write_space(str(out), str(saved_tiny_captioner), Limits(120, 20))
    assert {"app.py", "requirements.txt", "README.md", "diffusion_link/apps/web_demo.py", "model/config.json"} <= set(files)
    readme = (out / "README.md").read_text()
    assert readme.startswith("---\n") and "sdk: gradio" in readme and "app_file: app.py" in readme
    assert (out / "requirements.txt").read_text().split() == space_requirements()  # a model of its own: no starter pins
    starter = out / "diffusion_link" / "starter"  # a model of its own: the starter's code, not its weights or data
    assert sorted(p.name for p in starter.iterdir()) == sorted(
        name for name in os.listdir(os.path.join(REPO_ROOT, "diffusion_link", "starter")) if name.endswith(".py"))
    # The Space's app builds the page from the copied model in a fresh process, without launching it.
    code = ("import runpy, sys; sys.argv = ['app.py']; ns = runpy.run_path('app.py', run_name='space');"
            "print(type(ns['app']).__name__, ns['demo'].pipe.model.config.model_type)")
    assert run_python(code, cwd=str(out)).split() == ["Blocks", "diffusion_link_captioner"]
    with pytest.raises(FileExistsError):
        write_space(str(out), str(saved_tiny_captioner))
    run_python("import sys; from diffusion_link.apps.cli import main; "
               f"sys.exit(main(['space', {str(tmp_path / 'space2')!r}, '--model', {str(saved_tiny_captioner)!r}, "
               "'--push', 'user/captioner-space']))")
    repo = hub.repos[("space", "user/captioner-space")]
    pushed = set(repo.commits[repo.refs["main"]])
    assert {"app.py", "requirements.txt", "README.md", "model/model.safetensors"} <= pushed


def test_space_requirements_are_setup_pys_and_the_starter_pins_live_once():
    """The Space installs what `setup.py` asks for (its install_requires and the page's extras), read from the
    package metadata, so the two cannot drift; the starter's base wheels come from their one home."""
    import ast

    from packaging.requirements import Requirement

    from diffusion_link.starter import STARTER_BASE_PACKAGES

    tree = ast.parse(open(os.path.join(REPO_ROOT, "setup.py"), encoding="utf-8").read())
    assigned = {node.targets[0].id: node.value for node in tree.body
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
    extras = {key.value: ast.literal_eval(value) for key, value in zip(assigned["extras"].keys, assigned["extras"].values)}
    wanted = [*ast.literal_eval(assigned["install_requires"]), *extras["plot"], *extras["starter"], *extras["app"]]

    def normal(lines):
        return {(Requirement(line).name.replace("_", "-").lower(), str(Requirement(line).specifier)) for line in lines}

    assert normal(space_requirements()) == normal(wanted)
    assert space_requirements(starter=True)[-len(STARTER_BASE_PACKAGES):] == list(STARTER_BASE_PACKAGES)
    makefile = open(os.path.join(REPO_ROOT, "Makefile"), encoding="utf-8").read()
    assert not any(pin in makefile for pin in STARTER_BASE_PACKAGES)  # `make` reads them from the package


# ---------------------------------------------------------------------------------------------------- the browser
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*serve_args: str, **env) -> tuple[subprocess.Popen, str]:
    """`diffusion-link serve` in a fresh process on a free port, once it answers: (the process, its URL)."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, **env)
    proc = subprocess.Popen([sys.executable, "-m", "diffusion_link.apps.cli", "serve", "--port", str(port),
                             *serve_args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"the server stopped:\n{proc.stdout.read()}")
            time.sleep(1)
    proc.kill()
    raise AssertionError("the server did not answer within 240 s")


@pytest.fixture(scope="module")
def starter_server():
    from diffusion_link.starter import default_captioner

    if default_captioner() is None:
        pytest.skip("this checkout has no starter captioner")
    if CHROMIUM is None:
        pytest.skip("no system Chromium (Debian package `chromium`); `make test` installs it as root")
    pytest.importorskip("playwright", reason="needs Playwright (the [browser-test] extra); `make test` installs it")
    proc, url = start_server()
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.integration
def test_serve_takes_uploads_to_the_byte_of_a_fractional_limit_and_leaves_no_file_behind(saved_tiny_captioner,
                                                                                          tmp_path):
    """`--max-file-mb 0.5` reached Gradio as `int(0.5)` = 0 MB, refusing every upload; and the uploads and the demo
    sounds outlived the server in the shared temporary folder. Now the limit is 524288 bytes and, after SIGTERM,
    the server's temporary folder (here the whole of $TMPDIR) is empty."""
    from gradio_client import Client, handle_file

    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    # Matplotlib's and torch's own caches would otherwise be made in $TMPDIR too; they are not the server's files.
    env = {"TMPDIR": str(scratch), "MPLCONFIGDIR": str(tmp_path / "mpl"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "ti")}
    env["GRADIO_TEMP_DIR"] = str(scratch)  # a user's own upload folder: the server's folder is made inside it
    proc, url = start_server("--model", str(saved_tiny_captioner), "--max-file-mb", "0.5", **env)
    try:
        small = write_wav(tmp_path / "small.wav", seconds=2.5)  # 441 KB of float32: under 0.5 MB
        large = write_wav(tmp_path / "large.wav", seconds=3.5)  # 617 KB: over
        assert os.path.getsize(small) < 2**19 < os.path.getsize(large)
        client = Client(url, verbose=False)
        message, caption, *_ = client.predict(handle_file(small), api_name="/caption")
        assert message == "" and caption
        assert [p.name for p in scratch.rglob("small.wav")] == ["small.wav"]  # the upload, in the server's folder
        with pytest.raises(Exception, match="exceeds the maximum file size of 524288 bytes"):  # the client reads it
            client.predict(handle_file(large), api_name="/caption")
        import httpx

        for path, status in ((small, 200), (large, 413)):  # and the server enforces it
            with open(path, "rb") as f:
                assert httpx.post(f"{url}gradio_api/upload", files={"files": f}).status_code == status, path
    finally:
        proc.terminate()
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    assert list(scratch.iterdir()) == []


@pytest.fixture(scope="module")
def starter_pipe():
    from transformers import pipeline

    import diffusion_link  # noqa: F401

    return pipeline("audio-captioning")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


def caption_in_page(browser, url: str, path: str, wait_for: str = "#caption textarea") -> tuple:
    """Upload `path` in a fresh page, press Caption, wait for the result; returns (page, seconds from upload)."""
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.goto(url)
    page.wait_for_selector("#caption-button")
    start = time.perf_counter()
    page.set_input_files("#audio input[type=file]", path)
    page.wait_for_selector("#audio audio, #audio .waveform-container, #audio button[aria-label='Clear']",
                           state="attached", timeout=60_000)
    page.click("#caption-button")
    return page, start


@pytest.mark.integration
def test_the_page_captions_an_upload_as_the_pipeline_does(starter_server, starter_pipe, browser, tmp_path):
    from diffusion_link.apps.demo import synthetic_sounds

    siren = synthetic_sounds(str(tmp_path))[0]
    page, start = caption_in_page(browser, starter_server, siren)
    page.wait_for_function("document.querySelector('#caption textarea').value.length > 0", timeout=120_000)
    seconds = time.perf_counter() - start
    caption = page.input_value("#caption textarea")
    piped_start = time.perf_counter()
    expected = starter_pipe(siren)
    piped = time.perf_counter() - piped_start
    assert caption == expected["generated_text"]
    page.wait_for_selector("#plot .js-plotly-plot, #plot img, #plot canvas, #plot svg", timeout=60_000)
    assert page.locator("#candidates").inner_text().count(expected["candidates"][0]["text"]) >= 1
    assert page.input_value("#confidence textarea").endswith("%")
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, "web_demo.png"), full_page=True)
    print(json.dumps({"page_upload_to_caption_s": round(seconds, 2), "pipeline_s": round(piped, 2)}))
    page.close()


@pytest.mark.integration
@pytest.mark.parametrize("kind, message", [("corrupt", "is not audio this page can read"),
                                           ("silent", "The recording is silent")])
def test_the_page_shows_a_message_for_bad_audio(starter_server, browser, tmp_path, kind, message):
    path = tmp_path / f"{kind}.wav"
    if kind == "corrupt":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 8)
    else:
        write_wav(path, amplitude=0.0)
    page = browser.new_page()
    page.goto(starter_server)
    page.wait_for_selector("#caption-button")
    page.set_input_files("#audio input[type=file]", str(path))
    page.wait_for_timeout(1500)  # let the upload land (a corrupt file may not render a waveform)
    page.click("#caption-button")
    page.wait_for_function(f"document.querySelector('#message').innerText.includes({message!r})", timeout=120_000)
    assert "Traceback" not in page.locator("#message").inner_text()
    assert page.input_value("#caption textarea") == ""
    page.close()


@pytest.mark.integration
def test_eight_concurrent_requests_are_all_answered_as_in_sequence(starter_server, tmp_path):
    from gradio_client import Client, handle_file

    clips = [write_wav(tmp_path / f"c{i}.wav", seconds=1.5, seed=10 + i) for i in range(8)]
    client = Client(starter_server, verbose=False)
    sequential = [client.predict(handle_file(c), api_name="/caption")[1] for c in clips]
    with ThreadPoolExecutor(8) as pool:
        jobs = [pool.submit(lambda c: Client(starter_server, verbose=False).predict(handle_file(c), api_name="/caption"), c)
                for c in clips]
        concurrent = [job.result(timeout=600)[1] for job in jobs]
    assert all(sequential) and concurrent == sequential
