"""Candidate lists against the full output layer, side by side in one run on one model:
sentences/s and BLEU on test_2016_flickr at batch 64, greedy and beam 5 (the Translator's
default pruning), for a few list sizes. The model dir needs a candidates.npz
(`nmt candidates`). Variants are interleaved round by round and the best round counts.

    .venv/bin/python benchmarks/bench_candidates.py --model runs/exp/de-en [--rounds 2]
        [--lists 50,5 200,10 500,20]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from benchmarks.bench_controls import MULTI30K, bleu, interleaved  # noqa: E402
from pipeline.corpus.textfile import read_lines  # noqa: E402
from pipeline.translate.settings import DecodeSettings  # noqa: E402
from pipeline.translate.translator import Translator  # noqa: E402


def list_size(text: str) -> tuple[int, int]:
    frequent, per_source = text.split(",")
    return int(frequent), int(per_source)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=1000, help="of the test set")
    parser.add_argument(
        "--lists",
        nargs="+",
        type=list_size,
        default=[(50, 5), (200, 10), (500, 20)],
        help="candidate list sizes, K,K' each",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sources = read_lines(MULTI30K / "test_2016_flickr.de.gz")[: args.sentences]
    references = read_lines(MULTI30K / "test_2016_flickr.en.gz")[: args.sentences]
    translator = Translator(args.model)
    vocab = translator.model.config.tgt_vocab_size
    print(f"model {args.model}: target vocabulary {vocab}; {len(sources)} sentences, batch 64")
    print("\n| search | output layer | mean list size | sentences/s | speed-up | BLEU |")
    print("|---|---|---:|---:|---:|---:|")
    for beam in (1, 5):
        base = DecodeSettings(beam_size=beam, batch_size=64)
        settings = {"full": base} | {
            f"{k},{k2}": replace(base, candidates_frequent=k, candidates_per_source=k2)
            for k, k2 in args.lists
        }
        best = interleaved(
            {name: (lambda s=s: translator.translate(sources, s)) for name, s in settings.items()},
            args.rounds,
        )
        full_seconds = best["full"][1]
        for name, (translations, seconds) in best.items():
            size = mean_list_size(translator, sources, settings[name]) if name != "full" else vocab
            print(
                f"| {'greedy' if beam == 1 else 'beam 5'} | {name} | {size:.0f} | "
                f"{len(sources) / seconds:.1f} | {full_seconds / seconds:.2f}x | "
                f"{bleu([t.text for t in translations], references):.2f} |"
            )
    return 0


def mean_list_size(translator: Translator, sources: list[str], settings: DecodeSettings) -> float:
    """The mean candidate list size over the batches of 64 the Translator decodes."""
    ids = translator.src_tokenizer.encode(sources)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    sizes = []
    for start in range(0, len(order), settings.batch_size):
        batch = [ids[i] for i in order[start : start + settings.batch_size]]
        src, _ = translator._batch(batch)
        sizes.append(len(translator._candidates(src, settings)))
    return sum(sizes) / len(sizes)


if __name__ == "__main__":
    sys.exit(main())
