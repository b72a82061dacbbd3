"""Decoding speed: greedy and beam 5, at batch 1 and 64, measured side by side in one run.

Two models:
- a trained de->en model (`--model`, or the tiny test model trained on the fly), which
  stops at eos, with the Translator's default length limit (`DecodeSettings`' max_len_a *
  source length + max_len_b);
- the default-size `ModelConfig(8000, 8000)`, randomly initialised, on Multi30K test
  sentences encoded by sentencepiece models trained here on Multi30K train. Speed depends on
  the model's size, not its training; but a random model never emits eos, so each output is
  capped at its reference's length in target pieces (the per-sentence limit is passed to the
  search as `max_len_a=0, max_len_b=<reference lengths>`), which makes every setting decode
  exactly the number of tokens a real translation would have.

Beam 5 runs twice: exact, and pruned as the Translator does by default (extensions more
than `DecodeSettings().beam_prune` behind the step's best are dropped). Greedy and the
pruned beam run again with `--precision bf16` (matmuls in bfloat16 under autocast, as the
Translator does).
Goals (issue 6): beam 5 costs at most 2.5x greedy at batch 64; batch 64 is at least 10x
faster than batch 1.

    .venv/bin/python benchmarks/bench_decode.py [--model runs/exp/de-en] [--sentences 256]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from models.config import ModelConfig  # noqa: E402
from models.search import beam_search, greedy_search, max_output_lengths  # noqa: E402
from models.seq2seq import Seq2Seq  # noqa: E402
from pipeline.corpus.textfile import iter_lines, read_lines  # noqa: E402
from pipeline.corpus.tokenizer import Tokenizer, train_sentencepiece  # noqa: E402
from pipeline.translate.settings import DecodeSettings  # noqa: E402
from pipeline.translate.translator import Translator  # noqa: E402

MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"
DEFAULTS = DecodeSettings()  # the Translator's defaults
PRUNE = DEFAULTS.beam_prune
SEARCHES = {  # name: (beam size, pruning, precision)
    "greedy": (1, 0.0, "fp32"),
    "beam 5, exact": (5, 0.0, "fp32"),
    f"beam 5, pruned {PRUNE}": (5, PRUNE, "fp32"),
    "greedy, bf16": (1, 0.0, "bf16"),
    f"beam 5, pruned {PRUNE}, bf16": (5, PRUNE, "bf16"),
}
SETTINGS = [(search, batch) for batch in (1, 64) for search in SEARCHES]


def decode(
    models: dict[str, Seq2Seq], ids: list[list[int]], limits: list[int], search: str, batch: int
) -> int:
    """Decode all sentences (length-sorted batches, as the Translator does); returns the
    number of target tokens produced. limits: each sentence's maximum output length."""
    beam, prune, precision = SEARCHES[search]
    model = models[precision]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    produced = 0
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        src_len = torch.tensor([len(ids[i]) for i in chunk])
        src = torch.zeros(len(chunk), int(src_len.max()), dtype=torch.long)
        for row, i in enumerate(chunk):
            src[row, : len(ids[i])] = torch.tensor(ids[i])
        # max_len_a=0 with per-sentence max_len_b makes the limit exactly `limits` (broadcast).
        options = {"max_len_a": 0.0, "max_len_b": torch.tensor([limits[i] for i in chunk])}
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            if beam == 1:
                hypotheses = greedy_search(model, src, src_len, **options)
            else:
                nbest = beam_search(model, src, src_len, beam, prune=prune, **options)
                hypotheses = [n[0] for n in nbest]
        produced += sum(len(h.tokens) for h in hypotheses)
    return produced


def measure(model: Seq2Seq, ids: list[list[int]], limits: list[int], repeats: int) -> dict:
    """sentences/s (the best of `repeats` runs, settings interleaved, so that load from other
    processes on a shared machine hits every setting alike) and tokens produced."""
    # bf16 as the Translator runs it: Linear weights stored in bfloat16, under autocast.
    models = {"fp32": model, "bf16": copy.deepcopy(model).store_linear_weights_in(torch.bfloat16)}
    for search in ("beam 5, exact", f"beam 5, pruned {PRUNE}, bf16"):  # warm-up: allocator
        decode(models, ids[:8], limits[:8], search, batch=8)
    results = {}
    for _ in range(repeats):
        for search, batch in SETTINGS:
            start = time.perf_counter()
            tokens = decode(models, ids, limits, search, batch)
            speed = len(ids) / (time.perf_counter() - start)
            best = max(speed, results.get((search, batch), (0.0,))[0])
            results[search, batch] = (best, tokens)
    return results


def report(title: str, results: dict) -> None:
    print(f"\n{title}")
    print("| search | batch 1 (sent/s) | batch 64 (sent/s) | batch 64 / batch 1 |")
    print("| --- | --- | --- | --- |")
    for search in SEARCHES:
        one, many = results[search, 1][0], results[search, 64][0]
        print(f"| {search} | {one:.1f} | {many:.1f} | {many / one:.1f}x |")
    for search, (beam, _, precision) in SEARCHES.items():
        greedy = "greedy" if precision == "fp32" else f"greedy, {precision}"
        if beam > 1:
            ratio = results[greedy, 64][0] / results[search, 64][0]
            print(f"{search} cost / {greedy} cost at batch 64: {ratio:.2f}x (goal <= 2.5x)")
    for search in ("greedy", f"beam 5, pruned {PRUNE}"):
        ratio = results[f"{search}, bf16", 64][0] / results[search, 64][0]
        print(f"{search}, bf16 / fp32 speed at batch 64: {ratio:.2f}x")
    tokens = {f"{search}, batch {n}": t for (search, n), (_, t) in results.items()}
    print(f"target tokens produced: {tokens}")


def trained_model(model_path: str | None, workdir: Path, count: int, threads: int):
    """(model, source ids, limits): a trained model (`model_path`) on Multi30K test sentences,
    or the tiny test model trained here on generated sentences of its own domain."""
    from conftest import build_tiny_model_dir

    from pipeline.corpus.synthetic import parallel_corpus

    if model_path is None:
        torch.set_num_threads(1)  # see conftest: tiny ops, no gain from threads
        model_path = build_tiny_model_dir(workdir / "tiny")
        torch.set_num_threads(threads)
        sentences = [de for de, _ in parallel_corpus(count, seed=5)]  # the tiny model's domain
    else:
        sentences = read_lines(MULTI30K / "test_2016_flickr.de.gz")[:count]
    translator = Translator(model_path)
    ids = translator.src_tokenizer.encode(sentences)
    lengths = torch.tensor([len(s) for s in ids])
    limits = max_output_lengths(lengths, DEFAULTS.max_len_a, DEFAULTS.max_len_b).tolist()
    return translator.model, ids, limits


def random_default_model(workdir: Path, count: int):
    """(model, source ids, reference lengths) for ModelConfig(8000, 8000) on Multi30K test."""
    tokenizers = []
    for lang in ("de", "en"):
        model_bytes = train_sentencepiece(iter_lines(MULTI30K / f"train.{lang}.gz"), 8000)
        (workdir / f"spm.{lang}.model").write_bytes(model_bytes)
        tokenizers.append(Tokenizer(workdir / f"spm.{lang}.model"))
    test = [read_lines(MULTI30K / f"test_2016_flickr.{lang}.gz")[:count] for lang in ("de", "en")]
    ids = tokenizers[0].encode(test[0])
    limits = [len(r) for r in tokenizers[1].encode(test[1])]
    torch.manual_seed(0)
    config = ModelConfig(tokenizers[0].vocab_size, tokenizers[1].vocab_size)
    return Seq2Seq(config).eval(), ids, limits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a trained model dir (default: train the tiny one)")
    parser.add_argument("--sentences", type=int, default=256, help="sentences per setting")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting; best counts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, {args.sentences} sentences per setting"
    )
    with tempfile.TemporaryDirectory() as workdir:
        model, ids, limits = trained_model(args.model, Path(workdir), args.sentences, args.threads)
        report(
            f"trained model ({model.num_parameters():,} parameters)",
            measure(model, ids, limits, args.repeats),
        )
        if MULTI30K.is_dir():
            model, ids, limits = random_default_model(Path(workdir), args.sentences)
            title = f"ModelConfig(8000, 8000), random ({model.num_parameters():,} parameters)"
            report(
                title + ", output capped at reference length",
                measure(model, ids, limits, args.repeats),
            )
        else:
            print(f"\n{MULTI30K} not found: skipped the default-size model")


if __name__ == "__main__":
    main()
