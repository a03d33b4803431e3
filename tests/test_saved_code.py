"""The code a saved captioner carries to the Hub: one flat set of modules that imports only torch, transformers,
diffusers (numpy and the standard library aside) and each other, and nothing of the starter model."""

import ast
import os
import sys

import pytest


# The top level of the package is the Hub folder: what `pipe.save_pretrained` copies next to a CLAP/LLaMA captioner
# (`custom_object_save` follows single-dot imports) is exactly the set of top-level modules; the rest is subpackages.
PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "diffusion_link")
CAPTIONER_CODE = sorted(name for name in os.listdir(PACKAGE_DIR) if name.endswith(".py") and name != "__init__.py")
ALLOWED_ROOTS = {"torch", "transformers", "diffusers", "numpy"}


@pytest.fixture(scope="module")
def saved_captioner(tmp_path_factory):
    from diffusion_link.testing import tiny_captioner

    folder = tmp_path_factory.mktemp("captioner")
    tiny_captioner().save_pretrained(folder)
    return folder


def test_a_saved_clap_llama_captioner_holds_exactly_these_files(saved_captioner):
    files = sorted(os.listdir(saved_captioner))
    assert [f for f in files if f.endswith(".py")] == CAPTIONER_CODE
    assert [f for f in files if not f.endswith(".py")] == [
        "README.md", "audio_text_tokenizer", "config.json", "model.safetensors", "preprocessor_config.json",
        "tokenizer.json", "tokenizer_config.json",
    ]  # audio_text_tokenizer/: the CLAP text tokenizer that scores candidate captions


def test_saved_code_carries_nothing_of_the_starter(saved_captioner):
    for name in CAPTIONER_CODE:
        text = open(saved_captioner / name, encoding="utf-8").read().lower()
        for marker in ("aisfx", "gguf", "starter_encoder", "starterencoder", "starteraudiotextencoder"):
            assert marker not in text, f"{name} mentions {marker!r}"


def test_saved_code_imports_only_the_allowed_libraries_at_module_level(saved_captioner):
    for name in CAPTIONER_CODE:
        tree = ast.parse(open(saved_captioner / name, encoding="utf-8").read())
        for node in tree.body:  # module level: what a Hub copy needs just to be imported
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {node.module.split(".")[0]}
            else:
                continue
            foreign = roots - ALLOWED_ROOTS - set(sys.stdlib_module_names) - {"__future__"}
            assert not foreign, f"{name} imports {sorted(foreign)} at module level"
