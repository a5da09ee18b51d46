"""How well the selector's instruction normalizer fixes typos, and how often it breaks real words.

Measured on words, not on the held-out instructions: synthetic one- and two-slip typos of the
domain words of the training instructions (each should normalise as the word itself would) and
real words the sentence model's vocabulary lacks (the whole words of SD's CLIP vocabulary,
e.g. ComfyUI's comfy/sd1_tokenizer/vocab.json; each should survive). For each word length from
which two slips are allowed (the library's default: 8).

    python -m benchmarks.bench_normalizer --clip-vocab /path/to/ComfyUI/comfy/sd1_tokenizer/vocab.json
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path

from plugin_core.selector import instruction_sets, load_corpus, sentence_encoder
from plugin_core.selector.normalizer import WORD, Normalizer
from plugin_core.selector.text import clip_words

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def slip(word: str, rng: random.Random) -> str:
    """One typing slip: swap, drop, insert or replace a letter."""
    i, kind = rng.randrange(len(word) - 1), rng.random()
    if kind < 0.3:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind < 0.55:
        return word[:i] + word[i + 1 :]
    if kind < 0.8:
        return word[:i] + rng.choice(LETTERS) + word[i:]
    return word[:i] + rng.choice(LETTERS) + word[i + 1 :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip-vocab", type=Path, required=True, help="a CLIP BPE vocab.json (SD 1.x tokenizer)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[8, 7, 6])
    args = parser.parse_args()

    vocabulary = sentence_encoder().vocabulary()
    corpus = load_corpus()
    train = instruction_sets(corpus, corpus["tasks"], "train")
    texts = [i.text for name in ("single", "multi", "unrelated") for i in train[name]]
    lexicon = Normalizer.from_texts(texts, vocabulary).lexicon
    uses = Counter(w.lower() for i in train["single"] for w in WORD.findall(i.text))
    domain = sorted(w for w, n in uses.items() if n >= 3 and len(w) >= 4 and w in lexicon)
    real = sorted(w for w in clip_words(json.loads(args.clip_vocab.read_text()))
                  if len(w) >= 3 and w not in vocabulary and w not in lexicon)
    print(f"{len(domain)} domain words (5 typos each per slip count), {len(real)} real words the sentence model lacks\n")
    print("| two slips from | one-slip typos fixed | two-slip typos fixed | real words changed | e.g. |")
    print("|---:|---:|---:|---:|---|")
    for length in args.lengths:
        normalizer = Normalizer(lexicon, vocabulary, two_edits_from=length)
        rng = random.Random(0)
        fixed = []
        for slips in (1, 2):
            good = total = 0
            for word in domain:
                for _ in range(5):
                    typo = word
                    for _ in range(slips):
                        typo = slip(typo, rng)
                    if len(typo) < 3 or typo in vocabulary or typo in lexicon:
                        continue
                    total += 1
                    good += normalizer.word(typo) == normalizer.word(word)
            fixed.append(good / total)
        changed = [(w, normalizer.word(w)) for w in real if normalizer.word(w) != w]
        default = Normalizer(lexicon, vocabulary)
        new = [f"{w} → {c}" for w, c in changed if default.word(w) == w][:4] if length != 8 else []
        print(f"| {length} | {fixed[0]:.3f} | {fixed[1]:.3f} | {len(changed) / len(real):.3f} | {', '.join(new)} |")


if __name__ == "__main__":
    main()
