"""Training throughput: the plain PyTorch loop (models.training.train_step) vs the same step
under Ray Train with 1 and 2 workers, same model, data and number of steps, in one run.

    .venv/bin/python benchmarks/bench_train.py --data runs/data/multi30k-de-en --steps 200

Target tokens/s counts real target tokens (bos/eos included, padding excluded). Ray Train's
figure covers the whole worker loop (Ray Data streaming, bucketing, DDP), validation excluded.
Each setup runs `--rounds` times (order rotated each round); the best run counts.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import ray
import torch

from models.config import ModelConfig
from models.seq2seq import Seq2Seq
from models.training import collate, token_batches, train_step
from pipeline.train.config import TrainConfig
from pipeline.train.trainer import train_model
from pipeline.train.worker import sampled_vocabulary

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "multi30k_de_en.yaml"


def plain_loop(data: Path, config: TrainConfig, steps: int) -> float:
    """Target tokens/s of the foundation's train_step over the same data."""
    table = pq.read_table(data / "train", columns=["src_ids", "tgt_ids"]).to_pydict()
    pairs = list(zip(table["src_ids"], table["tgt_ids"], strict=True))
    torch.manual_seed(config.seed)
    model_config = ModelConfig(8000, 8000, **config.model)
    model = Seq2Seq(model_config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
    generator = torch.Generator().manual_seed(config.seed)
    tokens, done, start = 0, 0, time.perf_counter()
    while done < steps:
        for chunk in token_batches(pairs, config.max_tokens, config.bucket_window, seed=done):
            batch = collate(chunk, 0, 2, 3)
            vocabulary = sampled_vocabulary(batch, model_config, config, generator)
            result = train_step(
                model, batch, optimizer, config.label_smoothing, config.clip_norm, None, vocabulary
            )
            tokens, done = tokens + result.num_tokens, done + 1
            if done == steps:
                break
    return tokens / (time.perf_counter() - start)


def ray_train(data: Path, config: TrainConfig, workers: int, steps: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        summary = train_model(data, out, config.override(workers=workers, max_steps=steps))
    return summary.target_tokens / summary.train_seconds


def measure_rounds(setups: dict, rounds: int) -> dict[str, list[float]]:
    """Each setup `rounds` times, the order rotated every round, so that whatever drifts on a
    shared machine (other load, clocks, Ray's processes left from the last run) does not fall
    on one setup only. Returns every run's tokens/s per setup."""
    names = list(setups)
    runs: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            runs[name].append(setups[name]())
            print(f"round {round_index + 1}: {name}: {runs[name][-1]:,.0f} tokens/s", flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("runs/data/multi30k-de-en"))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument(
        "--rounds", type=int, default=2, help="runs per setup, order rotated; best counts"
    )
    args = parser.parse_args()
    config = TrainConfig.from_yaml(RECIPE).override(
        valid_every=10**9,
        valid_max_sentences=32,
        time_budget_minutes=None,
        early_stopping_patience=None,
        log_every=10**9,
    )
    torch.set_num_threads(2)
    # With the dashboard: Ray Train's placement-group cleaner polls its state API and
    # otherwise logs a warning every second.
    ray.init(num_cpus=2, logging_level="ERROR")
    setups = {
        "plain PyTorch loop (2 threads)": lambda: plain_loop(args.data, config, args.steps),
        "Ray Train, 1 worker": lambda: ray_train(args.data, config, 1, args.steps),
        "Ray Train, 2 workers (DDP)": lambda: ray_train(args.data, config, 2, args.steps),
    }
    runs = measure_rounds(setups, args.rounds)
    results = {name: max(speeds) for name, speeds in runs.items()}
    plain = results["plain PyTorch loop (2 threads)"]
    print(
        f"\n{args.steps} steps, max_tokens {config.max_tokens}, "
        f"{Seq2Seq(ModelConfig(8000, 8000, **config.model)).num_parameters():,} parameters"
    )
    print("| setup | target tokens/s (best) | each run | vs plain loop | vs Joey NMT (365 tok/s) |")
    print("| --- | ---: | --- | ---: | ---: |")
    for name, speed in results.items():
        each = ", ".join(f"{s:,.0f}" for s in runs[name])
        print(f"| {name} | {speed:,.0f} | {each} | {speed / plain:.2f}x | {speed / 365:.1f}x |")


if __name__ == "__main__":
    main()
