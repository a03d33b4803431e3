"""METEOR 1.5 (Denkowski & Lavie, 2014) through the Java jar that `pycocoevalcap` ships, driven as COCO drives it.

METEOR aligns candidate and references through exact, stem, synonym and paraphrase matches and scores

    METEOR = (1 - Pen) * F_mean,    F_mean = P R / (alpha P + (1 - alpha) R),    Pen = gamma (chunks / matches)^beta,

with the English parameters of `-l en -norm`. The jar runs as `java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en
-norm` (pycocoevalcap's command): one `SCORE` line per caption returns its sufficient statistics, and one `EVAL`
line over all of them returns the per-caption scores and the corpus score, which aggregates the statistics (it is
not the mean of the per-caption scores). Needs `java` on PATH and `pip install pycocoevalcap`; see
`meteor_unavailable_reason`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from typing import Sequence


METEOR_JAR = os.path.join("meteor", "meteor-1.5.jar")


def meteor_jar_path() -> str | None:
    """The METEOR jar inside the installed `pycocoevalcap`, or None when the package is not installed."""
    from diffusion_link.hub.references import package_path

    try:
        path = package_path("pycocoevalcap", METEOR_JAR)
    except ValueError:
        return None
    return path if os.path.isfile(path) else None


def meteor_unavailable_reason() -> str | None:
    """None when METEOR can run here, else why not (no `java` on PATH, or no `pycocoevalcap`)."""
    missing = []
    if shutil.which("java") is None:
        missing.append("`java` on PATH (Java 8 or later)")
    if meteor_jar_path() is None:
        missing.append("the jar of `pip install pycocoevalcap==1.2`")
    return f"METEOR needs {' and '.join(missing)}." if missing else None


def corpus_meteor(
    candidates: Sequence[str], references: Sequence[Sequence[str]], timeout: float = 600.0
) -> tuple[float, list[float]]:
    """(corpus METEOR, the N per-caption scores) of tokenised candidates (space-joined strings) against theirs.

    Args:
        candidates: N candidate strings, already tokenised and space-joined (COCO feeds PTB-tokenised text).
        references: N lists of reference strings, tokenised the same way (at least one each).
        timeout: seconds allowed for the whole run; the jar is killed after that.

    Raises `RuntimeError` when METEOR is unavailable or the jar fails.
    """
    if len(candidates) != len(references):
        raise ValueError(f"Got {len(candidates)} candidates but {len(references)} reference lists.")
    if not candidates or any(not refs for refs in references):
        raise ValueError("METEOR needs at least one candidate, and at least one reference for each.")
    reason = meteor_unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    jar = meteor_jar_path()
    command = [shutil.which("java"), "-jar", "-Xmx2G", os.path.basename(jar), "-", "-", "-stdio", "-l", "en", "-norm"]
    with tempfile.TemporaryFile() as stderr:
        # The jar finds its paraphrase tables relative to its folder, so it runs there.
        process = subprocess.Popen(
            command, cwd=os.path.dirname(jar), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
            text=True, encoding="utf-8", bufsize=1,
        )
        watchdog = threading.Timer(timeout, process.kill)  # a killed jar ends the reads below with an error
        watchdog.start()
        try:
            # One request, one reply line at a time: nothing piles up in the pipes.
            stats = [_ask(process, stderr, _score_line(c, refs)) for c, refs in zip(candidates, references)]
            process.stdin.write("EVAL ||| " + " ||| ".join(stats) + "\n")
            process.stdin.flush()
            per_caption = [float(_read(process, stderr)) for _ in candidates]
            corpus = float(_read(process, stderr))
        finally:
            watchdog.cancel()
            process.stdin.close()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()
    return corpus, per_caption


def _score_line(candidate: str, references: Sequence[str]) -> str:
    # '|||' separates fields in the jar's protocol, so it cannot appear inside one.
    fields = [*references, candidate]
    return "SCORE ||| " + " ||| ".join(" ".join(f.replace("|||", "").split()) for f in fields)


def _ask(process: subprocess.Popen, stderr, line: str) -> str:
    process.stdin.write(line + "\n")
    process.stdin.flush()
    return _read(process, stderr)


def _read(process: subprocess.Popen, stderr) -> str:
    reply = process.stdout.readline()
    if not reply:
        stderr.seek(0)
        message = stderr.read().decode(errors="replace")[-2000:]
        raise RuntimeError(f"The METEOR jar stopped (exit {process.poll()}): {message}")
    return reply.strip()
