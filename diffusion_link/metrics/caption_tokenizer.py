"""Caption tokenisation for the COCO caption metrics (BLEU, METEOR, ROUGE-L, CIDEr-D).

The COCO evaluation code (`pycocoevalcap`) runs Stanford's Java PTBTokenizer (CoreNLP 3.4.1, `-preserveLines
-lowerCase`) over every caption and then drops the tokens in `COCO_PUNCTUATION`. Scores depend on this step, so
three tokenizers are offered, named by a string:

- `"coco"` (default): a pure-Python re-implementation of that pipeline (`coco_tokenize`). No Java. On the 57,188
  AudioCaps captions it gives the Java pipeline's tokens for every caption; on unusual text (rare abbreviations,
  words glued by punctuation) it can differ.
- `"ptb_java"`: the Java PTBTokenizer itself, from the jar that `pycocoevalcap` ships (`ptb_java_tokenize`), for exact
  parity with published COCO-style numbers. Needs `java` and `pip install pycocoevalcap`.
- `"words"`: lower-cased runs of letters and digits (`simple_tokenize`), no punctuation at all.

Quirks of the COCO pipeline that `"coco"` keeps on purpose, so that scores stay comparable:

- brackets become `-lrb-`, `-rrb-`, `-lsb-`, ... and are *not* removed (COCO's list spells them in upper case, but
  the tokenizer lower-cases first);
- runs such as `!!` or `?!`, and symbols such as `&`, `/`, `%`, `#`, `*`, stay as tokens;
- clitics are split off (`man's` -> `man 's`, `don't` -> `do n't`), hyphenated words and numbers stay whole
  (`high-pitched`, `3.5`, `1,000`), and known abbreviations keep their period (`p.m.`, `mr.`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Sequence


TOKENIZERS = ("coco", "ptb_java", "words")

# pycocoevalcap/tokenizer/ptbtokenizer.py: the PTB tokens that COCO drops after tokenising.
COCO_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

# What each tokenizer is, in the words recorded with every score.
TOKENIZER_DESCRIPTIONS = {
    "coco": "coco: pure-Python PTBTokenizer mimic (lower-case, COCO punctuation removed)",
    "ptb_java": "ptb_java: Stanford PTBTokenizer 3.4.1 from pycocoevalcap (lower-case, COCO punctuation removed)",
    "words": "words: lower-cased [a-z0-9]+ runs, punctuation dropped",
}

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def simple_tokenize(text: str) -> list[str]:
    """Lower-cased words without punctuation (the `"words"` tokenizer)."""
    return _WORD.findall(text.lower())


# ---------------------------------------------------------------------------------------------- the Python mimic
# Characters PTBTokenizer rewrites before splitting (CoreNLP's PTBLexer normalisations).
_NORMALISE = [
    ("&amp;", "&"),
    ("\u2018", "'"), ("\u2019", "'"), ("\u201c", '"'), ("\u201d", '"'),  # curly quotes
    ("\u2013", " -- "), ("\u2014", " -- "), ("\u2026", " ... "),  # en/em dash, ellipsis
    ("\u00a3", " # "),  # PTB writes the pound sign as '#'
    ("\u00a0", " "),
]
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}

# Abbreviations whose period PTBTokenizer keeps (a subset of PTBLexer's lists: titles, companies, months, Latin).
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof jr sr st mt ft gen col lt sgt capt rev hon gov sen rep pres messrs inc co corp ltd bros "
    "jan feb mar apr jun jul aug sep sept oct nov dec ave blvd rd etc vs esp".split()
)
# Words that PTBTokenizer splits in two.
_SPLIT_WORDS = {
    "cannot": ["can", "not"], "gonna": ["gon", "na"], "gotta": ["got", "ta"], "wanna": ["wan", "na"],
    "lemme": ["lem", "me"], "gimme": ["gim", "me"], "'tis": ["'t", "is"], "'twas": ["'t", "was"],
}
_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
# Words that keep an inner apostrophe (PTBLexer: one letter other than i/y, then two or more letters).
_APOSTROPHE_WORD = re.compile(r"^(?:[a-hj-xz]'[^\W\d_]{2,}|ma'am)$")

_ALNUM = r"[^\W_]"
_TOKEN = re.compile(
    rf"""
    (?P<number>[-+]?\.?\d+(?:[.,:/-]\d+)*)(?!{_ALNUM}|'{_ALNUM})          # 3.5  1,000  10:30  9/11  -5  .5
    | (?P<acronym>(?:{_ALNUM}\.){{2,}})(?!{_ALNUM})                        # p.m.  u.s.  e.g.
    | (?P<abbreviation>(?<!{_ALNUM})(?:{"|".join(sorted(_ABBREVIATIONS))}|{_ALNUM})\.)(?!{_ALNUM}|\.)  # mr.  etc.  b.
    | (?P<apostrophe>'(?:\d+s?|n'|tis|twas|s|re|ve|ll|d|m)(?!{_ALNUM}))     # '90s  'n'  's (line-initial)
    | (?P<word>{_ALNUM}+(?:(?:[-./']|(?<=\d),(?=\d)){_ALNUM}+)*)            # high-pitched  o'clock  speed.and
    | (?P<dots>\.+)
    | (?P<marks>[!?]+)
    | (?P<dashes>-+)
    | (?P<quote>"|``|''|[`'])
    | (?P<other>\S)
    """,
    re.VERBOSE,
)


def ptb_tokenize(text: str) -> list[str]:
    """`text` -> lower-cased PTB-style tokens, punctuation included (before COCO's punctuation removal).

    A pure-Python approximation of CoreNLP's PTBTokenizer with `-lowerCase`; see the module docstring.
    """
    text = text.lower()
    for old, new in _NORMALISE:
        text = text.replace(old, new)
    tokens: list[str] = []
    for match in _TOKEN.finditer(text):
        kind, token = match.lastgroup, match.group()
        if kind == "word":
            tokens += _split_word(token)
        elif kind == "apostrophe":
            tokens += _SPLIT_WORDS.get(token, [token])
        elif kind == "dots":
            tokens += ["..."] if len(token) >= 3 else ["."] * len(token)  # PTB: '...' for any longer run
        elif kind == "dashes":
            tokens.append("-" if len(token) == 1 else "--")
        elif kind == "quote":
            tokens.append(_quote(text, match.start()))
        else:
            tokens.append(_BRACKETS.get(token, token))
    return tokens


def _split_word(word: str) -> list[str]:
    """Split clitics (`do n't`, `man 's`) and the PTB's two-part words (`can not`, `gon na`) off a word."""
    if word in _SPLIT_WORDS:
        return list(_SPLIT_WORDS[word])
    match = _CLITIC.match(word)
    if match:
        return _split_word(match.group(1)) + [match.group(2)]
    if "'" in word and not _APOSTROPHE_WORD.match(word):
        return [piece for piece in re.split(r"('n'|')", word) if piece]  # rock'n'roll -> rock 'n' roll
    return [word]


def _quote(text: str, index: int) -> str:
    """PTB's quote tokens: a double quote opens (``) at the start or after a space or bracket, else closes ('')."""
    if text[index] != '"':
        return text[index : index + 2] if text[index : index + 2] in ("``", "''") else text[index]
    return "``" if index == 0 or text[index - 1].isspace() or text[index - 1] in "([{" else "''"


def coco_tokenize(text: str) -> list[str]:
    """`text` -> the tokens the COCO caption metrics score, without Java: `ptb_tokenize` minus `COCO_PUNCTUATION`."""
    return [t for t in ptb_tokenize(text) if t not in COCO_PUNCTUATION]


# ---------------------------------------------------------------------------------------------- the Java reference
def ptb_jar_path() -> str | None:
    """The Stanford CoreNLP jar shipped by `pycocoevalcap`, or None when the package is not installed."""
    from diffusion_link.hub.references import package_path

    try:
        path = package_path("pycocoevalcap", os.path.join("tokenizer", "stanford-corenlp-3.4.1.jar"))
    except ValueError:
        return None
    return path if os.path.isfile(path) else None


def ptb_java_tokenize(texts: Sequence[str], timeout: float = 600.0) -> list[list[str]]:
    """Captions -> COCO tokens from the Java PTBTokenizer, exactly as `pycocoevalcap`'s `PTBTokenizer` makes them.

    Runs `java -cp stanford-corenlp-3.4.1.jar edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase` once
    over all captions (one per line, read from stdin instead of a temporary file in site-packages). Raises
    `RuntimeError` when `java` or `pycocoevalcap` is missing.
    """
    jar, java = ptb_jar_path(), shutil.which("java")
    if jar is None or java is None:
        raise RuntimeError(
            "The 'ptb_java' tokenizer needs `java` on PATH and `pip install pycocoevalcap`; "
            f"found java={java!r}, pycocoevalcap jar={jar!r}. Use tokenizer='coco' (pure Python) instead."
        )
    lines = [t.replace("\r", " ").replace("\n", " ") for t in texts]
    proc = subprocess.run(
        [java, "-cp", jar, "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase"],
        input="\n".join(lines) + "\n", capture_output=True, text=True, encoding="utf-8", timeout=timeout,
    )
    out = proc.stdout.split("\n")
    if proc.returncode != 0 or len(out) < len(lines):
        raise RuntimeError(f"PTBTokenizer failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return [[w for w in line.split() if w not in COCO_PUNCTUATION] for line in out[: len(lines)]]


def tokenize_captions(texts: Sequence[str], tokenizer: str = "coco") -> list[list[str]]:
    """Captions -> token lists with the named tokenizer (`"coco"`, `"ptb_java"` or `"words"`)."""
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"`tokenizer` must be one of {TOKENIZERS}, got {tokenizer!r}.")
    if tokenizer == "ptb_java":
        return ptb_java_tokenize(texts)
    tokenize = coco_tokenize if tokenizer == "coco" else simple_tokenize
    return [tokenize(t) for t in texts]
