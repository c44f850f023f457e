"""Tokens and their hashed features: what the PHI tagger sees, computed on the box.

The tagger needs no vocabulary file: every feature is a string (the word in lower case, its shape,
its prefix and suffix, the same for its neighbours, the key of a ``Key: value`` line) hashed with
CRC-32 into one of :data:`BUCKETS` rows of the model's embedding table. CRC-32 is fixed by the zlib
standard, so the vendor's training run and the box compute the same ids on any machine and Python
(Python's own ``hash`` is salted per process and would not do).

Tokens are runs of letters (of any script: "José" is one token, so an accent never splits a name
and leaks a letter), runs of digits, or single other characters, with character offsets
into the note: an e-mail or a phone number becomes several tokens, which the recognizers and the
tagger label one by one and the merge joins back into one span.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

BUCKETS = 1 << 16  # rows of the embedding table; a power of two so the id is a mask
WINDOW = 3  # neighbours on each side whose word and shape are features
_TOKEN = re.compile(r"[^\W\d_]+|\d+|\S")  # letters (any script), digits, one other mark
_MAX_WORD = 24
_EDGE = "<edge>"
_RUN = 4


@dataclass(frozen=True)
class Token:
    """One token: ``text`` is ``note[start:end]``; ``line_key`` is the key of its ``Key:`` line."""

    text: str
    start: int
    end: int
    line_key: str
    after_colon: bool


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens with offsets; a line's key is the text before its first colon."""
    tokens: list[Token] = []
    line_start, key, colon, previous_end = 0, "", False, 0
    for m in _TOKEN.finditer(text):
        start = m.start()
        newline = text.rfind("\n", previous_end, start)  # only the gap: linear in the note
        if newline != -1:  # a new line: no key until its colon
            line_start, key, colon = newline + 1, "", False
        word = m.group()
        tokens.append(Token(word, start, m.end(), key, colon))
        previous_end = m.end()
        if word == ":" and not colon:
            key, colon = text[line_start:start].strip().lower()[-_MAX_WORD:], True
    return tokens


@functools.lru_cache(maxsize=1 << 16)
def shape(word: str) -> str:
    """The word's shape: X for capitals, x for small letters, d for digits (runs cut at four)."""
    out: list[str] = []
    for ch in word[:_MAX_WORD]:
        c = "X" if ch.isupper() else "x" if ch.islower() else "d" if ch.isdigit() else ch
        if out[-_RUN:] != [c] * _RUN:
            out.append(c)
    return "".join(out)


@functools.lru_cache(maxsize=1 << 16)
def short_shape(word: str) -> str:
    """The shape with every run collapsed to one letter (``Xx``, ``d``, ``X``)."""
    s = shape(word)
    return "".join(c for i, c in enumerate(s) if i == 0 or s[i - 1] != c)


@functools.lru_cache(maxsize=1 << 18)
def feature_id(name: str) -> int:
    """The embedding row of the feature ``name`` (CRC-32, masked to :data:`BUCKETS`)."""
    return zlib.crc32(name.encode("utf-8")) & (BUCKETS - 1)


def _atoms(word: str) -> tuple[str, str]:
    # A number is known by its shape only: its digits would each make a feature seen once.
    low = shape(word) if word[:1].isdigit() else word.lower()[:_MAX_WORD]
    return low, short_shape(word)


def token_features(tokens: Sequence[Token], i: int) -> list[str]:
    """The feature strings of token ``i`` (always :data:`FEATURES` of them, in a fixed order)."""
    tok = tokens[i]
    low, sshape = _atoms(tok.text)
    n = len(tokens)
    out = [
        "bias",
        f"w={low}",
        f"s={shape(tok.text)}",
        f"ss={sshape}",
        f"p2={low[:2]}",
        f"p3={low[:3]}",
        f"x2={low[-2:]}",
        f"x3={low[-3:]}",
        f"len={min(len(tok.text), 12)}",
        f"key={tok.line_key}",
        f"colon={tok.after_colon}|{sshape}",
    ]
    words = []
    for d in (*range(-WINDOW, 0), *range(1, WINDOW + 1)):
        j = i + d
        w, s = _atoms(tokens[j].text) if 0 <= j < n else (_EDGE, _EDGE)
        out += [f"w{d}={w}", f"s{d}={s}"]
        words.append(w)
    # Pairs: "Dr ." before a name, "( ddd )" around an area code, a title-case word after another.
    out += [
        f"w-2w-1={words[WINDOW - 2]}|{words[WINDOW - 1]}",
        f"w+1w+2={words[WINDOW]}|{words[WINDOW + 1]}",
        f"w-1w0={words[WINDOW - 1]}|{low}",
        f"s-1s0s+1={_atoms(tokens[i - 1].text)[1] if i else _EDGE}|{sshape}|"
        f"{_atoms(tokens[i + 1].text)[1] if i + 1 < n else _EDGE}",
    ]
    return out


FEATURES = 11 + 4 * WINDOW + 4  # the width of the model's input, one id per feature


def features(tokens: Sequence[Token]) -> npt.NDArray[np.int64]:
    """The model input for ``tokens``: ``(len(tokens), FEATURES)`` embedding row ids."""
    out = np.zeros((len(tokens), FEATURES), dtype=np.int64)
    for i in range(len(tokens)):
        names = token_features(tokens, i)
        out[i] = [feature_id(f"{k}:{name}") for k, name in enumerate(names)]
    return out
