import os
import sys

import pytest
import torch


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)  # makes `training/` and `benchmarks/` importable as namespace packages

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long or real-weight checks; run with `make test-slow`.")


@pytest.fixture
def tiny_bridge_config():
    from diffusion_link import DiffusionLinkConfig

    # Odd sizes make shape bugs surface.
    return DiffusionLinkConfig(embedding_dim=12, hidden_size=37, num_blocks=2, timestep_embedding_dim=16)


@pytest.fixture
def tiny_bridge(tiny_bridge_config):
    from diffusion_link import DiffusionLinkBridge

    torch.manual_seed(0)
    bridge = DiffusionLinkBridge(tiny_bridge_config).eval()
    # Non-trivial weights everywhere (the residual branches start at zero) and distinct EMA weights.
    with torch.no_grad():
        for p in bridge.denoiser.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for p in bridge.ema_denoiser.parameters():
            p.copy_(p + 0.05 * torch.randn_like(p))
    return bridge


def run_python(code: str, cwd: str | None = None, timeout: int = 300) -> str:
    """Run `code` in a fresh Python process with this interpreter; return stdout, raise with stderr on failure."""
    import subprocess

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout
