"""Decoding controls (issue 22), measured side by side in one run on one model:

1. int8 against fp32: greedy and beam 5 (pruned, the Translator's default), at batch 1 and
   64; sentences/s, BLEU on the test set, and the size of each model's saved weights.
2. Lexical constraints: each test sentence gets one or two words of its own reference as
   its glossary's targets; the share of outputs holding every constraint, BLEU against
   unconstrained beam 5, and the speed cost.
3. Scoring: `Translator.score` on the (source, reference) pairs against greedy decoding of
   the same sources, pairs (sentences)/s.
4. Quality signals: the test set's translations ranked by attention coverage, the lowest
   against the rest (output length over reference length, chrF), and examples.

Variants are interleaved round by round (so background load hits them alike) and the best
round counts.

    .venv/bin/python benchmarks/bench_controls.py --model runs/exp/de-en [--rounds 2]
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from models.search import beam_search  # noqa: E402
from pipeline.corpus.textfile import read_lines  # noqa: E402
from pipeline.translate.settings import DecodeSettings  # noqa: E402
from pipeline.translate.translator import Translator  # noqa: E402

MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"
# Words of more than 3 letters that make poor glossary terms.
STOPWORDS = {"with", "from", "were", "been", "their", "while", "into", "onto", "over", "under"}


def timed(call) -> tuple[object, float]:
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def interleaved(variants: dict, rounds: int) -> dict[str, tuple[object, float]]:
    """name -> (result, best seconds) with every variant run once per round, in turn."""
    best: dict[str, tuple[object, float]] = {}
    for _ in range(rounds):
        for name, call in variants.items():
            result, seconds = timed(call)
            if name not in best or seconds < best[name][1]:
                best[name] = (result, seconds)
    return best


def bleu(hypotheses: list[str], references: list[str]) -> float:
    from sacrebleu.metrics import BLEU

    return BLEU().corpus_score(hypotheses, [references]).score


def weights_mib(model: torch.nn.Module) -> float:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 2**20


def glossary_targets(reference: str, rng: random.Random) -> list[str]:
    """One or two content words of the reference, as they are written there."""
    words = [w.strip(".,!?\"'") for w in reference.split()]
    content = [w for w in dict.fromkeys(words) if len(w) > 3 and w.lower() not in STOPWORDS]
    rng.shuffle(content)
    return content[: rng.choice((1, 2))]


def has_all(translation: str, constraints: list[str]) -> bool:
    return all(c in translation for c in constraints)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch1-sentences", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=1000, help="of the test set")
    parser.add_argument(
        "--parts", nargs="+", type=int, default=[1, 2, 3, 4], help="which sections to run"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sources = read_lines(MULTI30K / "test_2016_flickr.de.gz")[: args.sentences]
    references = read_lines(MULTI30K / "test_2016_flickr.en.gz")[: args.sentences]

    translators = {
        p: Translator(args.model, settings=DecodeSettings(precision=p)) for p in ("fp32", "int8")
    }
    if 1 in args.parts:
        int8_against_fp32(translators, sources, references, args)
    translator = translators["fp32"]
    if 2 in args.parts:
        constrained(translator, sources, references, args)
    if 3 in args.parts:
        scoring(translator, sources, references, args)
    if 4 in args.parts:
        signals(translator, sources, references, args)
    return 0


def int8_against_fp32(translators: dict, sources: list, references: list, args) -> None:
    print("## 1. int8 against fp32\n")
    for precision, translator in translators.items():
        print(f"{precision} weights: {weights_mib(translator.model):.1f} MiB")
    print(
        "\n| search | batch | sentences | fp32 sent/s | int8 sent/s | int8/fp32 | fp32 BLEU "
        "| int8 BLEU | same output |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for batch in (64, 1):
        texts = sources if batch == 64 else sources[: args.batch1_sentences]
        for search, beam in (("greedy", 1), ("beam 5", 5)):
            variants = {}
            for precision, translator in translators.items():
                settings = DecodeSettings(beam_size=beam, batch_size=batch, precision=precision)
                variants[precision] = lambda t=translator, s=settings, x=texts: [
                    r.text for r in t.translate(x, s)
                ]
            best = interleaved(variants, args.rounds)
            (fp32, fp32_s), (int8, int8_s) = best["fp32"], best["int8"]
            same = sum(a == b for a, b in zip(fp32, int8, strict=True))
            refs = references[: len(texts)]
            print(
                f"| {search} | {batch} | {len(texts)} | {len(texts) / fp32_s:.1f} | "
                f"{len(texts) / int8_s:.1f} | {fp32_s / int8_s:.2f}x | {bleu(fp32, refs):.2f} | "
                f"{bleu(int8, refs):.2f} | {same} of {len(texts)} |"
            )


def constrained(translator: Translator, sources: list, references: list, args) -> None:
    print("\n## 2. Lexical constraints from the references\n")
    rng = random.Random(0)
    unk = translator.model.config.unk_id
    constraints = [  # words the target vocabulary can spell
        [
            w
            for w in glossary_targets(reference, rng)
            if unk not in translator.tgt_tokenizer.encode([w])[0]
        ]
        for reference in references
    ]
    variants = {
        "beam 5": lambda: [r.text for r in translator.translate(sources)],
        "beam 5, constrained": lambda: [
            r.text for r in translator.translate(sources, constraints=constraints)
        ],
        "greedy, constrained": lambda: [
            r.text
            for r in translator.translate(
                sources, DecodeSettings(beam_size=1), constraints=constraints
            )
        ],
    }
    best = interleaved(variants, args.rounds)
    print(f"{sum(map(len, constraints))} constraints over {len(sources)} sentences")
    print("\n| search | BLEU | outputs with every constraint | sent/s |")
    print("| --- | ---: | ---: | ---: |")
    for name, (hypotheses, seconds) in best.items():
        met = sum(has_all(h, c) for h, c in zip(hypotheses, constraints, strict=True))
        print(
            f"| {name} | {bleu(hypotheses, references):.2f} | {met} of {len(sources)} "
            f"({100 * met / len(sources):.1f}%) | {len(sources) / seconds:.1f} |"
        )


def scoring(translator: Translator, sources: list, references: list, args) -> None:
    print("\n## 3. Scoring against greedy decoding\n")
    greedy = DecodeSettings(beam_size=1)
    best = interleaved(
        {
            "score (source, reference)": lambda: translator.score(sources, references),
            "greedy decoding": lambda: translator.translate(sources, greedy),
        },
        args.rounds,
    )
    print("| what | pairs or sentences/s |")
    print("| --- | ---: |")
    for name, (_, seconds) in best.items():
        print(f"| {name} | {len(sources) / seconds:.1f} |")


def signals(translator: Translator, sources: list, references: list, args) -> None:
    print("\n## 4. Quality signals on beam 5 output\n")
    # Their cost: the attention weights the search keeps for them (the rest is arithmetic).
    ids = translator.src_tokenizer.encode(sources)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    batches = [
        translator._batch([ids[i] for i in order[start : start + 64]])
        for start in range(0, len(order), 64)
    ]

    def search(keep: bool) -> None:
        for src, src_len in batches:
            beam_search(translator.model, src, src_len, 5, prune=2.0, return_attention=keep)

    best = interleaved(
        {"without attention": lambda: search(False), "with attention": lambda: search(True)},
        args.rounds,
    )
    without, with_ = best["without attention"][1], best["with attention"][1]
    print(
        f"beam 5 search over the test set: {len(ids) / without:.1f} sentences/s without the "
        f"attention weights, {len(ids) / with_:.1f} with them ({with_ / without:.2f}x the time)\n"
    )
    from sacrebleu.metrics import CHRF

    results = translator.translate(sources)
    ranked = sorted(range(len(sources)), key=lambda i: results[i].signals.coverage)
    low, rest = ranked[: len(ranked) // 20], ranked[len(ranked) // 20 :]
    chrf = CHRF()
    print("| outputs | mean coverage | output words / reference words | chrF2 | repetition |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, rows in (("lowest-coverage 5%", low), ("the other 95%", rest)):
        coverage = sum(results[i].signals.coverage for i in rows) / len(rows)
        ratio = sum(len(results[i].text.split()) for i in rows) / sum(
            len(references[i].split()) for i in rows
        )
        score = chrf.corpus_score([results[i].text for i in rows], [[references[i] for i in rows]])
        repeats = sum(results[i].signals.repetition for i in rows)
        print(f"| {name} | {coverage:.2f} | {ratio:.2f} | {score.score:.1f} | {repeats} |")
    print("\nlowest coverage:")
    for i in ranked[:5]:
        s = results[i].signals
        print(
            f"- coverage {s.coverage:.2f}, mean log-prob {s.mean_log_prob:.2f}, "
            f"ratio {s.length_ratio:.2f}\n  source:    {sources[i]}\n  output:    "
            f"{results[i].text}\n  reference: {references[i]}"
        )
    flagged = [i for i in range(len(sources)) if results[i].signals.repetition]
    print(f"\nrepetition flagged: {len(flagged)}")
    for i in flagged[:3]:
        print(f"- source: {sources[i]}\n  output: {results[i].text}")


if __name__ == "__main__":
    sys.exit(main())
