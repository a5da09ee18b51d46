"""Typo correction for instructions, learnt from a selector's training instructions.

A selector file keeps the normaliser's word list (its lexicon); the selector builds the
`Normalizer` against the vocabulary of the text encoder at hand and passes it to that encoder
on every call, so an encoder shared by several selectors never carries one's state.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

WORD = re.compile(r"[A-Za-z]+")  # what counts as a word


def _distance(a: str, b: str, limit: int) -> int:
    """Damerau-Levenshtein distance (adjacent swaps count 1), or limit + 1 once it exceeds limit."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2, previous = None, list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if previous2 is not None and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return previous[-1]


class Normalizer:
    """Makes a typed instruction legible to the text encoder, the same way in training and use.

    * typos: a word that is neither in the encoder's vocabulary nor frequent in the training
      instructions (`lexicon`: the training words the encoder knows, or that occur at least
      `min_count` times, like "moire" or "derain") becomes the most frequent lexicon word
      within edit distance 1 (2 for 8+ letters): "remvoe the fgo" -> "remove the fog";
    * "de-"/"un-" verbs of a frequent training word that the encoder cannot read as a word
      ("desnow", "unfog", "dehazing", even "derain" when the training instructions use it
      often) become "remove snow", "remove fog", "remove haze", "remove rain" (words the
      encoder knows, like "unclear" or "detail", are never split);
    * a noun the encoder cannot read made of an adjective it can becomes the adjective
      ("haziness" -> "hazy");
    * other inflections of known words ("grainy", "smeary") are left alone.
    """

    PREFIXES = ("de", "un")
    SUFFIXES = ("iness", "ness", "ing", "ed", "er", "es", "ly", "y", "s")

    def __init__(self, lexicon: dict[str, int], vocabulary: Iterable[str] = (), min_count: int = 8, two_edits_from: int = 8):
        """two_edits_from: the word length from which a typo may be two slips away (shorter:
        one); 8 keeps more real words ("animate", "anemone") intact (benchmarks/bench_normalizer.py)."""
        self.two_edits_from = two_edits_from
        self.lexicon = dict(lexicon)
        self.vocabulary = set(vocabulary)
        self.known = self.vocabulary | set(self.lexicon)
        self.frequent = {w for w, c in self.lexicon.items() if c >= min_count}

    @classmethod
    def from_texts(cls, texts: Iterable[str], vocabulary: Iterable[str], min_count: int = 8) -> "Normalizer":
        vocabulary = set(vocabulary)
        counts = Counter(w.lower() for text in texts for w in WORD.findall(text))
        known = {w: c for w, c in counts.items() if w in vocabulary}

        def is_typo(word: str, count: int) -> bool:
            """A misspelling the corpus repeats on purpose ("remvoe"): one slip from a word the
            encoder knows that the corpus uses ten times as often."""
            return any(c >= 10 * count and _distance(word, w, 1) <= 1 for w, c in known.items())

        frequent = {w: c for w, c in counts.items() if w not in vocabulary and c >= min_count and not is_typo(w, c)}
        return cls({**known, **frequent}, vocabulary, min_count)

    def _is_word(self, word: str, words: set[str] | None = None) -> bool:
        words = self.known if words is None else words
        if word in words:
            return True
        return any(word.endswith(s) and word[: -len(s)] in words and len(word) - len(s) >= 3 for s in self.SUFFIXES)

    def _removal(self, word: str) -> str | None:
        """"remove X" for a de-/un- verb of a frequent training word X (or of an inflection of it)."""
        for prefix in self.PREFIXES:
            rest = word[len(prefix) :]
            if not word.startswith(prefix) or len(rest) < 3:
                continue
            fixed = rest if rest in self.lexicon else self._nearest(rest)
            if fixed in self.frequent:
                return f"remove {fixed}"
            for suffix in ("ing", "ed", "er", "s"):
                stem = rest[: -len(suffix)]
                if rest.endswith(suffix) and len(stem) >= 3:
                    for base in (stem, stem + "e", stem[:-1] if stem[-1] == stem[-2] else stem):
                        if base in self.frequent:
                            return f"remove {base}"
        return None

    def _adjective(self, word: str) -> str | None:
        """"haziness" -> "hazy": the adjective of a noun the encoder cannot read, when it is a word."""
        for suffix, ending in (("iness", "y"), ("ness", "")):
            stem = word[: -len(suffix)] + ending
            if word.endswith(suffix) and len(stem) >= 3 and self._is_word(stem):
                return stem
        return None

    def _nearest(self, word: str) -> str | None:
        """The most frequent lexicon word one typing slip away (two for 8+ letters). Real words
        the encoder's vocabulary happens to lack ("flakes", "lol", "invert") must survive, so
        the first letter is kept (unless the slip swaps the first two) and a three-letter word
        is only ever un-swapped ("teh", "fgo")."""
        limit = 1 if len(word) < self.two_edits_from else 2
        best = None
        for candidate, count in self.lexicon.items():
            if candidate[0] != word[0] and candidate[:2] != word[1::-1]:
                continue
            if len(word) <= 3 and (len(candidate) != len(word) or sorted(candidate) != sorted(word)):
                continue
            distance = _distance(word, candidate, limit)
            if distance <= limit:
                key = (distance, -count, candidate)
                best = key if best is None or key < best else best
        return best[2] if best else None

    def word(self, word: str) -> str:
        lower = word.lower()
        if len(lower) < 3:
            return word
        if not self._is_word(lower, self.vocabulary):  # the encoder would read it in pieces
            removal = self._removal(lower) or self._adjective(lower)
            if removal:
                return removal
        if self._is_word(lower):
            return word
        fixed = self._nearest(lower)
        if fixed is None:
            return word
        # the corrected word is normalised as if it had been typed right ("dsenow" -> "desnow" -> "remove snow")
        return (self._removal(fixed) if not self._is_word(fixed, self.vocabulary) else None) or fixed

    def __call__(self, text: str) -> str:
        return WORD.sub(lambda m: self.word(m.group(0)), text)
