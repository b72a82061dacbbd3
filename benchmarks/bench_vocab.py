"""Training throughput against the target vocabulary's size: the full softmax against the
sampled one (Jean et al. 2014; `output: sampled` in a training config), at the reference
model size, side by side in one run, with each setup's peak memory.

    .venv/bin/python benchmarks/bench_vocab.py [--vocabs 8000 32000 100000 200000]
        [--sample 8192] [--steps 12] [--rounds 2]

The corpus is synthetic: word ids drawn from a Zipf law over the whole vocabulary (as word
types are in a real corpus), sentence lengths as in Multi30K (8-20 tokens), batches of
--max-tokens padded tokens. Source vocabulary 8,000 in every setup, so only the target side
grows. Each setup runs in a process of its own, so that its peak resident memory
(ru_maxrss) is its own; the first --warmup steps are not timed. Setups are interleaved
round by round and the best round counts. A benchmark, never a test.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from models.config import ModelConfig  # noqa: E402
from models.sampled_softmax import sample_vocabulary  # noqa: E402
from models.seq2seq import Seq2Seq  # noqa: E402
from models.training import Batch, collate, train_step  # noqa: E402
from pipeline.train.config import TrainConfig  # noqa: E402

RECIPE = ROOT / "configs" / "multi30k_de_en.yaml"
SRC_VOCAB = 8000
SPECIALS = 4  # pad, unk, bos, eos


def zipf_ids(rng: np.random.Generator, vocab_size: int, n: int) -> list[int]:
    """n word ids in [SPECIALS, vocab_size), rank r drawn with probability ~ 1/r."""
    ranks = np.arange(1, vocab_size - SPECIALS + 1)
    weights = 1.0 / ranks
    return (rng.choice(len(ranks), size=n, p=weights / weights.sum()) + SPECIALS).tolist()


def synthetic_batches(vocab_size: int, max_tokens: int, count: int, seed: int) -> list[Batch]:
    """`count` batches of about max_tokens padded source+target tokens."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        length = int(rng.integers(8, 21))
        rows = max(1, max_tokens // (2 * length + 1))
        pairs = [
            (zipf_ids(rng, SRC_VOCAB, length), zipf_ids(rng, vocab_size, length))
            for _ in range(rows)
        ]
        batches.append(collate(pairs, 0, 2, 3))
    return batches


def one_setup(vocab_size: int, output: str, args: argparse.Namespace) -> dict:
    """Target tokens/s of `steps` timed steps, and this process's peak memory."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = TrainConfig.from_yaml(RECIPE)
    model = Seq2Seq(ModelConfig(SRC_VOCAB, vocab_size, **config.model))
    # fused, as nmt train's worker builds it, so the figures are the training run's
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
    batches = synthetic_batches(vocab_size, config.max_tokens, args.warmup + args.steps, seed=1)
    generator = torch.Generator().manual_seed(0)
    tokens, sizes, start = 0, [], 0.0
    for index, batch in enumerate(batches):
        if index == args.warmup:
            tokens, start = 0, time.perf_counter()
        vocabulary = None
        if output == "sampled":
            gold = batch.tgt_out[batch.tgt_out != 0]
            vocabulary = sample_vocabulary(gold, vocab_size, args.sample, (1, 3), generator)
            sizes.append(len(vocabulary))
        result = train_step(
            model, batch, optimizer, config.label_smoothing, config.clip_norm, None, vocabulary
        )
        tokens += result.num_tokens
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mean_size = sum(sizes) / len(sizes) if sizes else vocab_size
    return {"tokens_per_s": tokens / seconds, "peak_mib": peak_mib, "softmax_ids": mean_size}


def run_in_process(vocab_size: int, output: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--one", str(vocab_size), output]
    command += ["--sample", str(args.sample), "--steps", str(args.steps)]
    command += ["--warmup", str(args.warmup), "--threads", str(args.threads)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])


def table(results: dict[tuple[int, str], dict], sample: int) -> str:
    base = results[(min(v for v, _ in results), "full")]["tokens_per_s"]
    lines = [
        f"| target vocabulary | softmax | ids per softmax (mean) | target tokens/s | "
        f"vs full, same vocabulary | vs full at {min(v for v, _ in results):,} | peak MiB |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (vocab_size, output), row in sorted(results.items()):
        full = results[(vocab_size, "full")]["tokens_per_s"]
        name = "full" if output == "full" else f"sampled ({sample:,})"
        lines.append(
            f"| {vocab_size:,} | {name} | {row['softmax_ids']:,.0f} | {row['tokens_per_s']:,.0f} "
            f"| {row['tokens_per_s'] / full:.2f}x | {row['tokens_per_s'] / base:.2f}x "
            f"| {row['peak_mib']:,.0f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vocabs", type=int, nargs="+", default=[8000, 32000, 100000, 200000])
    parser.add_argument("--sample", type=int, default=8192, help="sampled softmax size")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per setup")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", nargs=2, metavar=("VOCAB", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_setup(int(args.one[0]), args.one[1], args)))
        return 0
    # A sample as large as the vocabulary is the full softmax.
    setups = [(v, "full") for v in args.vocabs]
    setups += [(v, "sampled") for v in args.vocabs if v > args.sample]
    best: dict[tuple[int, str], dict] = {}
    for round_index in range(args.rounds):
        shift = round_index % len(setups)
        for setup in setups[shift:] + setups[:shift]:
            row = run_in_process(*setup, args)
            print(f"round {round_index + 1}: {setup[0]:,} {setup[1]}: {row}", flush=True)
            if setup not in best or row["tokens_per_s"] > best[setup]["tokens_per_s"]:
                best[setup] = row
    print(table(best, args.sample))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
