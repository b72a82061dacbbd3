"""Side by side with the reference toolkit (Joey NMT 2.3.0, the same layer sizes), on this machine,
in one run: training target tokens/s, decoding sentences/s (greedy and beam 5, batch 64) at a
known BLEU, and the fraction of this CPU's matmul peak each training run reaches.

    .venv/bin/python benchmarks/bench_reference.py --train-seconds 300
    .venv/bin/python benchmarks/bench_reference.py --train-seconds 60 --only train

The reference is installed into a scratch venv of its own (--cache-dir, reused when present)
from what ../shared/peers/joeynmt/README.md says; its configs and train_spm.py are read from
there at run time. Both toolkits train for the same --train-seconds, one after the other with
the same thread count: Joey NMT (timed from its first epoch to a SIGINT, validation kept out
of the window; target tokens from its checkpoint, its log's `Tokens per Sec` beside them),
then ours as the plain PyTorch loop (models.training.train_step) and as `nmt train` with one
Ray Train worker. The decoding rows use the models those runs just trained (Joey's checkpoint
at the interrupt, ours exported from the Ray Train run), so both produce outputs of a
comparable, short-budget quality; BLEU is sacrebleu 13a against the raw references.
`--only decode` decodes with the models of the last training run in --cache-dir.

The table goes to --out (Markdown) with a JSON beside it; the reference's logs go to the same
folder. Each row records the mean number of runnable threads on the machine while it ran:
on a machine shared with other work, compare rows that ran equally crowded. It is a
benchmark, never a test: the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from joeynmt_reference import JoeyTraining, Reference

if TYPE_CHECKING:  # heavy imports stay inside the functions, so that --help is instant
    from pipeline.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PEER_DIR = SHARED / "peers" / "joeynmt"
MULTI30K = SHARED / "data" / "multi30k"
RECIPE = ROOT / "configs" / "multi30k_de_en.yaml"
TEST = "test_2016_flickr"
DEFAULT_CACHE = Path.home() / ".cache" / "nmt-bench"
DEFAULT_OUT = ROOT / "runs" / "bench_reference" / "results.md"
SEARCHES = {"greedy": 1, "beam5": 5}  # Joey's config name: beam size
DECODE_BATCH = 64
NEVER = 10**9  # a validation interval no run reaches
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@dataclass
class TrainRun:
    name: str
    tokens_per_second: float  # real target tokens (eos included, padding excluded) per second
    steps: int
    seconds: float
    how: str  # where the figure comes from
    flops_per_token: float = 0.0  # forward + backward, per target token, padding not counted
    runnable: float = 0.0  # mean runnable threads on the machine during the run (RunQueue)


@dataclass
class DecodeRun:
    toolkit: str
    search: str
    seconds: float
    sentences: int
    bleu: float
    length_ratio: float  # hypothesis / reference length (sacrebleu's sys_len / ref_len)
    runnable: float = 0.0

    @property
    def sentences_per_second(self) -> float:
        return self.sentences / self.seconds


@dataclass
class Results:
    date: str
    machine: dict
    threads: int
    train_seconds: float
    load_average: dict[str, list[float]] = field(default_factory=dict)  # "start", "end"
    matmul_gflops: dict[str, float] = field(default_factory=dict)  # "start", "end"
    training: list[TrainRun] = field(default_factory=list)
    decoding: list[DecodeRun] = field(default_factory=list)
    shapes: dict[str, dict] = field(default_factory=dict)  # per toolkit: lengths behind FLOPs
    models_trained: dict = field(default_factory=dict)  # the run that trained the decoded models

    @property
    def peak(self) -> float:
        return max(self.matmul_gflops.values()) * 1e9


# ---------------------------------------------------------------- set-up


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--train-seconds", type=float, default=300, help="training time of each run (300)"
    )
    parser.add_argument("--only", choices=("train", "decode"), help="one half (default: both)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"venv, data, models ({DEFAULT_CACHE})",
    )
    parser.add_argument(
        "--skip-install", action="store_true", help="use the reference's venv as it is"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every run (2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the Markdown table")
    return parser.parse_args(argv)


def fail(message: str) -> NoReturn:
    """One line on stderr and exit status 2, as `nmt` does for bad input."""
    print(message, file=sys.stderr)
    sys.exit(2)


def check_shared() -> None:
    needed = [PEER_DIR / "README.md", MULTI30K / "train.de.gz", MULTI30K / f"{TEST}.en.gz"]
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        fail(
            f"bench_reference: {SHARED} does not hold the reference and the data "
            f"(missing {', '.join(missing)}): run it in a checkout beside ../shared"
        )


def prepare_ours(data: Path) -> None:
    """Multi30K de-en, joint 8k, as docs/train.md's recipe; once (stats.json comes last)."""
    if (data / "stats.json").is_file():
        return
    print(f"preparing our data into {data}", flush=True)
    command = [sys.executable, "-m", "pipeline.cli", "prepare", "--src-lang", "de"]
    command += ["--tgt-lang", "en", "--train", str(MULTI30K / "train")]
    command += ["--valid", str(MULTI30K / "val"), "--out", str(data), "--overwrite"]
    subprocess.run(command, check=True, cwd=ROOT)


def machine() -> dict:
    fields = {}
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    flags = set(fields.get("Flags", "").split())
    return {
        "cpu": fields.get("Model name", "?"),
        "cores": os.cpu_count(),
        "flags": {flag: flag in flags for flag in CPU_FLAGS},
    }


def load_now() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


class RunQueue:
    """The mean number of runnable threads on the whole machine while a run lasts, ours
    included (/proc/stat's procs_running, sampled every second by a thread): how crowded the
    cores were for that run. The load average lags by a minute; this does not."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval, self.samples = interval, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> RunQueue:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _sample(self) -> None:
        while not self.stop.wait(self.interval):
            for line in Path("/proc/stat").read_text().splitlines():
                if line.startswith("procs_running"):
                    # minus one: the sampling thread itself is running while it reads
                    self.samples.append(int(line.split()[1]) - 1)

    @property
    def mean(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else float("nan")


def crowded(measure: Callable[[], TrainRun | DecodeRun]) -> TrainRun | DecodeRun:
    """`measure()`'s run, with the mean run queue while it ran."""
    with RunQueue() as queue:
        run = measure()
    run.runnable = queue.mean
    return run


def matmul_gflops(threads: int, size: int = 4096, repeats: int = 3) -> float:
    """The best of `repeats` fp32 products of two size x size matrices: the practical peak
    of this CPU at this thread count (what every dense layer here runs on)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)  # warm-up: allocation, thread pool
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return round(2 * size**3 / best / 1e9, 1)


# ---------------------------------------------------------------- ours


def recipe() -> TrainConfig:
    from pipeline.train.config import TrainConfig

    return TrainConfig.from_yaml(RECIPE)


def train_pairs(data: Path, max_len: int) -> list[tuple[list[int], list[int]]]:
    """The prepared train split, with the worker's length filter."""
    import pyarrow.parquet as pq

    table = pq.read_table(data / "train", columns=["src_ids", "tgt_ids"]).to_pydict()
    return [
        (src, tgt)
        for src, tgt in zip(table["src_ids"], table["tgt_ids"], strict=True)
        if 0 < len(src) <= max_len and 0 < len(tgt) <= max_len
    ]


def plain_loop(data: Path, seconds: float, threads: int) -> TrainRun:
    """models.training.train_step over token batches of the prepared data, as
    benchmarks/bench_train.py runs it, for `seconds` (the recipe's model and schedule)."""
    import torch

    from models.seq2seq import Seq2Seq
    from models.training import train_step
    from pipeline.storage import Location
    from pipeline.train.trainer import build_model_config
    from pipeline.train.worker import LearningRate, sampled_vocabulary

    config = recipe()
    model_config = build_model_config(Location.of(data), config)
    torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    model = Seq2Seq(model_config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
    schedule = LearningRate(optimizer, config)
    generator = torch.Generator().manual_seed(config.seed)
    pairs, tokens, steps = train_pairs(data, config.max_len), 0, 0
    start = time.perf_counter()
    for batch in endless_batches(pairs, config, model_config):
        vocabulary = sampled_vocabulary(batch, model_config, config, generator)
        result = train_step(
            model, batch, optimizer, config.label_smoothing, config.clip_norm, None, vocabulary
        )
        tokens, steps = tokens + result.num_tokens, steps + 1
        schedule.after_step(steps)
        if time.perf_counter() - start >= seconds:
            break
    elapsed = time.perf_counter() - start
    how = f"train_step, max_tokens {config.max_tokens}, {threads} threads"
    return TrainRun("ours: plain PyTorch loop", tokens / elapsed, steps, elapsed, how)


def endless_batches(pairs: list, config: TrainConfig, model_config: Any) -> Iterator:
    """Token batches epoch after epoch, each epoch bucketed with a seed of its own."""
    from models.training import collate, token_batches

    ids = (model_config.pad_id, model_config.bos_id, model_config.eos_id)
    for epoch in range(NEVER):
        for chunk in token_batches(pairs, config.max_tokens, config.bucket_window, seed=epoch):
            yield collate(chunk, *ids)


def fresh_train(data: Path, out: Path, config: TrainConfig) -> Any:
    """`nmt train`'s library entry into an emptied `out` (a fresh run, not a resume), in a
    Ray of its own; returns its TrainSummary."""
    import ray

    from pipeline.train.trainer import train_model

    shutil.rmtree(out, ignore_errors=True)
    # Ray starts its workers at nice 15. Joey NMT and the plain loop run at nice 0, so on a
    # machine shared with other work the Ray Train worker alone would yield to it.
    os.environ["RAY_worker_niceness"] = "0"  # noqa: SIM112 (Ray's spelling of its setting)
    ray.init(num_cpus=os.cpu_count(), logging_level="ERROR")
    try:
        return train_model(data, out, config)
    finally:
        ray.shutdown()


def ray_train(data: Path, out: Path, seconds: float, threads: int) -> TrainRun:
    """`nmt train`'s library entry with one Ray Train worker and a time budget; validation
    only at the end (for the exported checkpoint), outside the figure: the summary's tokens
    and seconds stop where that validation starts."""
    config = recipe().override(
        time_budget_minutes=seconds / 60,
        valid_every=NEVER,
        valid_max_sentences=64,
        early_stopping_patience=None,
        workers=1,
        threads_per_worker=threads,
    )
    summary = fresh_train(data, out, config)
    how = f"its summary (target tokens / training seconds), {threads} threads, nice 0"
    speed = summary.target_tokens / summary.train_seconds
    name = "ours: nmt train, Ray Train 1 worker"
    return TrainRun(name, speed, summary.steps, summary.train_seconds, how)


def ours_translate(
    model_dir: Path,
    search: str,
    sources: list[str],
    batch_size: int = DECODE_BATCH,
    precision: str = "fp32",
) -> tuple[list[str], float]:
    """The Translator as `nmt evaluate` runs it (its defaults but the beam, the batch size
    and the precision): the hypotheses and the seconds they took, model loading excluded."""
    from pipeline.translate.settings import DecodeSettings
    from pipeline.translate.translator import Translator

    settings = DecodeSettings(
        beam_size=SEARCHES[search], batch_size=batch_size, precision=precision
    )
    translator = Translator(model_dir, settings=settings)
    start = time.perf_counter()
    hypotheses = [t.text for t in translator.translate(sources)]
    return hypotheses, time.perf_counter() - start


def ours_decode(model_dir: Path, search: str, sources: list[str], refs: list[str]) -> DecodeRun:
    hypotheses, seconds = ours_translate(model_dir, search, sources)
    return scored("ours", search, seconds, hypotheses, refs)


def scored(
    toolkit: str, search: str, seconds: float, hyps: list[str], refs: list[str]
) -> DecodeRun:
    import sacrebleu

    bleu = sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a")
    ratio = bleu.sys_len / bleu.ref_len
    return DecodeRun(toolkit, search, seconds, len(hyps), round(bleu.score, 2), ratio)


# ---------------------------------------------------------------- FLOPs per target token


def shape(src_lens: list[int], tgt_lens: list[int]) -> dict:
    """What turns per-position costs into per-target-token ones: source positions encoded
    per target token, source positions each target token attends over, sentences per
    target token (for the once-per-sentence initial state). Real positions only."""
    targets = sum(tgt_lens)
    return {
        "src_per_tgt": sum(src_lens) / targets,
        "attended": sum(s * t for s, t in zip(src_lens, tgt_lens, strict=True)) / targets,
        "sentences_per_tgt": len(tgt_lens) / targets,
    }


def our_shape(data: Path) -> dict:
    """Our positions: the source without eos, the target with it (len + 1)."""
    pairs = train_pairs(data, recipe().max_len)
    return shape([len(s) for s, _ in pairs], [len(t) + 1 for _, t in pairs])


def joey_lengths(reference: Reference) -> tuple[list[int], list[int]]:
    """Joey's positions: eos appended to the source, and the target's (len + 1)."""
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=str(reference.data / "spm8k.model"))
    sides = []
    for lang in ("de", "en"):
        lines = (reference.data / f"train.{lang}").read_text().splitlines()
        sides.append([len(ids) + 1 for ids in processor.encode(lines)])
    return sides[0], sides[1]


def joey_shape(reference: Reference) -> dict:
    """As `shape`, plus the share of Joey's decoder positions that are padding: it runs the
    decoder and the output layer over every position of a batch of 64 random sentences."""
    src, tgt = joey_lengths(reference)
    result = shape(src, tgt)
    order = list(range(len(tgt)))
    random.Random(0).shuffle(order)
    batch = reference.train_config()["training"]["batch_size"]
    padded = sum(
        len(order[i : i + batch]) * max(tgt[j] for j in order[i : i + batch])
        for i in range(0, len(order), batch)
    )
    return result | {"decoder_padding": 1 - sum(tgt) / padded}


def gru(inputs: int, hidden: int) -> int:
    """Multiply-adds x 2 of one GRU step: three gates over the input and the hidden state."""
    return 2 * 3 * hidden * (inputs + hidden)


def our_flops(model: dict, vocab: int, lengths: dict) -> float:
    """Forward FLOPs per target token of models/ (docs/train.md, "The model"): matmuls only
    (elementwise ops and the softmax are a few percent)."""
    emb, enc, hid = model["emb_size"], model["enc_hidden_size"], model["dec_hidden_size"]
    att, deep, ann = model["attention_size"], model["deep_output_size"], 2 * enc
    per_source = 2 * gru(emb, enc) + 2 * ann * att  # bi-GRU, attention keys
    conditional = model.get("conditional_gru", False)
    per_target = (
        2 * emb * 3 * hid  # the embedding's share of the gates
        + 2 * hid * (3 * hid + att)  # hidden gates and attention query, one matmul
        + conditional * 2 * hid * 3 * hid  # the conditional GRU's second hidden gates
        + 2 * ann * 3 * hid  # the context's share of the gates
        + 2 * lengths["attended"] * (att + ann)  # energies (v . x) and the weighted sum
        + 2 * (hid + emb + ann) * 2 * deep  # deep output before the maxout
        + 2 * deep * vocab  # output layer
    )
    per_sentence = 2 * ann * hid  # s_0
    return _per_target(per_source, per_target, per_sentence, lengths)


def joey_flops(config: dict, lengths: dict) -> float:
    """Forward FLOPs per target token of Joey's recurrent model (bi-GRU encoder, GRU decoder
    with input feeding, Bahdanau attention, tanh attentional layer, output layer), real
    positions only; its padding is not counted, as it does no useful work."""
    encoder, decoder = config["model"]["encoder"], config["model"]["decoder"]
    expected = (encoder["rnn_type"], decoder["rnn_type"], decoder["attention"])
    if expected != ("gru", "gru", "bahdanau") or not decoder["input_feeding"]:
        raise ValueError(f"joey_flops covers GRUs, Bahdanau attention, input feeding: {expected}")
    emb, enc = encoder["embeddings"]["embedding_dim"], encoder["hidden_size"]
    hid, vocab, ann = decoder["hidden_size"], config["data"]["trg"]["voc_limit"], 2 * enc
    per_source = 2 * gru(emb, enc) + 2 * ann * hid  # bi-GRU, attention keys
    per_target = (
        gru(decoder["embeddings"]["embedding_dim"] + hid, hid)  # input: [embedding; att vector]
        + 2 * hid * hid  # attention query
        + 2 * lengths["attended"] * (hid + ann)  # energies and the weighted sum
        + 2 * (hid + ann) * hid  # attentional vector tanh(W [s; c])
        + 2 * hid * vocab  # output layer
    )
    per_sentence = 2 * ann * hid  # the bridge
    return _per_target(per_source, per_target, per_sentence, lengths)


def _per_target(per_source: float, per_target: float, per_sentence: float, lengths: dict) -> float:
    return (
        per_target
        + per_source * lengths["src_per_tgt"]
        + per_sentence * lengths["sentences_per_tgt"]
    )


def add_flops(results: Results, data: Path, reference: Reference) -> None:
    """Forward + backward (3x forward: the backward pass is two matmuls per forward one)."""
    from pipeline.corpus.tokenizer import TGT_SPM, Tokenizer

    ours, joey = our_shape(data), joey_shape(reference)
    results.shapes = {"ours": ours, "joey": joey}
    vocab = Tokenizer(data / TGT_SPM).vocab_size
    if recipe().output == "sampled":  # the output layer multiplies V' only
        vocab = min(vocab, recipe().sampled_softmax_size)
    flops = {
        "joey": 3 * joey_flops(reference.train_config(), joey),
        "ours": 3 * our_flops(recipe().model, vocab, ours),
    }
    for run in results.training:
        run.flops_per_token = flops["joey" if run.name.startswith("Joey") else "ours"]


# ---------------------------------------------------------------- the two halves


def train_half(args: argparse.Namespace, reference: Reference, results: Results) -> None:
    """Joey, then our plain loop, then Ray Train: the same seconds each, one after the other."""
    seconds, data, threads = args.train_seconds, our_data(args), args.threads
    log = args.out.parent / "joey-train.log"
    runs = {
        "Joey NMT": lambda: joey_run(reference.train(seconds, log)),
        "ours: plain PyTorch loop": lambda: plain_loop(data, seconds, threads),
        "ours: nmt train (Ray Train, 1 worker)": lambda: ray_train(
            data, our_run_dir(args), seconds, threads
        ),
    }
    for name, measure in runs.items():
        print(f"\n== {name}: training for {seconds:.0f} s", flush=True)
        results.training.append(crowded(measure))
    joey, ray = results.training[0], results.training[-1]
    results.models_trained = {"date": results.date, "seconds": seconds}
    results.models_trained |= {"joey_steps": joey.steps, "ours_steps": ray.steps}
    (args.cache_dir / "models_trained.json").write_text(json.dumps(results.models_trained))
    add_flops(results, data, reference)


def joey_run(joey: JoeyTraining) -> TrainRun:
    windows = joey.windows_tokens_per_second
    log = f"{windows:,.0f} over its log's {len(joey.windows)} full windows" if windows else "n/a"
    how = f"its checkpoint's token count / training time (its log: {log}); 64 sentences/batch"
    return TrainRun("Joey NMT 2.3.0", joey.tokens_per_second, joey.steps, joey.seconds, how)


def decode_half(args: argparse.Namespace, reference: Reference, results: Results) -> None:
    """test_2016_flickr, batch 64, greedy then beam 5, Joey then ours each time."""
    from pipeline.corpus.textfile import read_lines

    model_dir = our_run_dir(args)
    if not reference.has_model() or not (model_dir / "model").is_dir():
        fail("bench_reference: no trained models in --cache-dir: run without --only first")
    trained = args.cache_dir / "models_trained.json"
    results.models_trained = results.models_trained or json.loads(trained.read_text())
    sources, refs = (read_lines(MULTI30K / f"{TEST}.{lang}.gz") for lang in ("de", "en"))
    source_file = reference.data / f"{TEST}.de"
    for search in SEARCHES:
        print(f"\n== decoding {TEST}, {search}: Joey NMT, then ours", flush=True)
        log = args.out.parent / f"joey-{search}.log"
        joey = functools.partial(joey_decode, reference, search, source_file, log, refs)
        ours = functools.partial(ours_decode, model_dir, search, sources, refs)
        results.decoding += [crowded(joey), crowded(ours)]


def joey_decode(
    reference: Reference, search: str, source: Path, log: Path, refs: list[str]
) -> DecodeRun:
    joey = reference.translate(search, source, log)
    return scored("Joey NMT 2.3.0", search, joey.seconds, joey.hypotheses, refs)


def our_data(args: argparse.Namespace) -> Path:
    return args.cache_dir / "ours-data"


def our_run_dir(args: argparse.Namespace) -> Path:
    return args.cache_dir / "ours-run"


# ---------------------------------------------------------------- the report


def render(results: Results) -> str:
    machine_line = ", ".join(
        f"{flag} {'yes' if on else 'no'}" for flag, on in results.machine["flags"].items()
    )
    lines = [
        "# Against the reference toolkit (Joey NMT 2.3.0), same machine, one run",
        "",
        f"- date: {results.date}",
        f"- machine: {results.machine['cpu']}, {results.machine['cores']} cores; {machine_line}",
        f"- threads: {results.threads} for every run (OMP/MKL_NUM_THREADS for Joey NMT, "
        "torch.set_num_threads for ours)",
        f"- load average (1, 5, 15 min): {_load(results, 'start')} at the start, "
        f"{_load(results, 'end')} at the end, on {results.machine['cores']} cores: "
        + _crowding(results),
        f"- matmul peak (fp32, 4096 x 4096, {results.threads} threads, best of 3): "
        + ", ".join(f"{v:,.1f} GFLOP/s ({k})" for k, v in results.matmul_gflops.items()),
    ]
    if results.training:
        lines += ["", *render_training(results)]
    if results.decoding:
        lines += ["", *render_decoding(results)]
    return "\n".join(lines) + "\n"


def _crowding(results: Results) -> str:
    """Whether others competed for the cores: this benchmark's own runs keep about as many
    threads runnable as it has threads."""
    highest = max(values[0] for values in results.load_average.values())
    if highest > results.threads + 1:
        return (
            "other processes were running, so the figures are noisy; the `runnable threads` "
            f"columns (the machine's mean run queue while each row ran, its own {results.threads}"
            " threads included) say how crowded each row was"
        )
    return "nothing else of note was running"


def _load(results: Results, when: str) -> str:
    return " / ".join(f"{value:.2f}" for value in results.load_average.get(when, []))


def render_training(results: Results) -> list[str]:
    joey = results.training[0].tokens_per_second
    lines = [
        f"## Training, {results.train_seconds:.0f} s each (target tokens/s, validation excluded)",
        "",
        "| run | target tokens/s | vs Joey NMT | steps | MFLOP per target token (fwd+bwd) "
        "| GFLOP/s | of peak | runnable threads | measured by |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for run in results.training:
        gflops = run.tokens_per_second * run.flops_per_token / 1e9
        lines.append(
            f"| {run.name} | {run.tokens_per_second:,.0f} | {run.tokens_per_second / joey:.2f}x "
            f"| {run.steps:,} | {run.flops_per_token / 1e6:.1f} | {gflops:.1f} "
            f"| {gflops * 1e9 / results.peak:.1%} | {run.runnable:.1f} | {run.how} |"
        )
    padding = results.shapes.get("joey", {}).get("decoder_padding", 0.0)
    return lines + [
        "",
        "FLOPs count matmuls over real positions only, from each model's config (embeddings, "
        "bi-GRU encoder, attention, decoder GRU, deep output / attentional layer, output over "
        "the 8k vocabulary, or over V' with a sampled softmax); backward = 2x forward. "
        "Joey NMT batches 64 random sentences without length bucketing: "
        f"{padding:.0%} of its decoder positions are padding, which "
        "it computes and this count leaves out.",
    ]


def render_decoding(results: Results) -> list[str]:
    trained = results.models_trained
    runs = {(run.toolkit.split()[0], run.search): run for run in results.decoding}
    lines = [
        f"## Decoding {TEST} (1,000 sentences), batch {DECODE_BATCH}",
        "",
        f"Both models were trained for the same short budget ({trained.get('seconds', 0):.0f} s "
        f"each, in the run of {trained.get('date', '?')}: Joey NMT {trained.get('joey_steps')} "
        f"steps, ours {trained.get('ours_steps')} steps), so that their outputs have comparable "
        "lengths (the length ratio column says whether they do: decoding time grows with "
        "them); speed is read at the BLEU beside it (sacrebleu 13a, raw references).",
        "",
        "| search | Joey NMT sent/s | ours sent/s | ours / Joey NMT | Joey NMT BLEU "
        "| ours BLEU | length ratio Joey / ours | runnable threads Joey / ours |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for search in SEARCHES:
        joey, ours = runs["Joey", search], runs["ours", search]
        lines.append(
            f"| {search} | {joey.sentences_per_second:.1f} | {ours.sentences_per_second:.1f} "
            f"| {ours.sentences_per_second / joey.sentences_per_second:.2f}x | {joey.bleu:.2f} "
            f"| {ours.bleu:.2f} | {joey.length_ratio:.2f} / {ours.length_ratio:.2f} "
            f"| {joey.runnable:.1f} / {ours.runnable:.1f} |"
        )
    return lines + ["", *_length_warning(runs), DECODE_NOTE]


DECODE_NOTE = (
    "Joey NMT: its own `Generation took` (batching and search; beam alpha 1.0, at most 60 "
    "tokens). Ours: `Translator.translate` of the 1,000 sentences (tokenizing, search and "
    "detokenizing; the Translator's defaults: length penalty 0.6, beam pruning 2.0, at most "
    "1.5 x source + 10 tokens). Model loading excluded on both sides."
)


def _length_warning(runs: dict[tuple[str, str], DecodeRun]) -> list[str]:
    """A line when the two models' outputs differ in length by more than a quarter: then
    the sentences/s compare different amounts of work."""
    for search in SEARCHES:
        joey, ours = runs["Joey", search].length_ratio, runs["ours", search].length_ratio
        if max(joey, ours) > 1.25 * min(joey, ours):
            return [
                f"**The outputs' lengths differ ({search}: {joey:.2f} against {ours:.2f} of the "
                "references'), so the decoding ratios compare different work: train longer.**",
                "",
            ]
    return []


def write(results: Results, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render(results)
    out.write_text(text)
    decoding = [
        asdict(r) | {"sentences_per_second": r.sentences_per_second} for r in results.decoding
    ]
    record = asdict(results) | {"decoding": decoding}
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")


# ---------------------------------------------------------------- main


def measured(results: Results, when: str, threads: int) -> None:
    results.load_average[when] = load_now()
    results.matmul_gflops[when] = matmul_gflops(threads)


def setup(args: argparse.Namespace) -> Reference:
    reference = Reference(
        PEER_DIR, args.cache_dir / "joeynmt-venv", args.cache_dir / "joeynmt", args.threads
    )
    if args.skip_install and not reference.installed():
        fail(f"bench_reference: --skip-install, but {reference.venv} lacks Joey NMT 2.3.0")
    reference.install()
    reference.prepare_data(MULTI30K)
    reference.write_configs()
    prepare_ours(our_data(args))
    return reference


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Started in the background (`&`, nohup), this process and so its children ignore
    # SIGINT, and Joey NMT would never see the SIGINT that ends its training. A Python
    # handler here is reset to the default in every child it starts (exec keeps only "ignore").
    signal.signal(signal.SIGINT, signal.default_int_handler)
    check_shared()
    args.cache_dir, args.out = args.cache_dir.expanduser().resolve(), args.out.resolve()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    date = datetime.datetime.now().astimezone().isoformat(timespec="minutes")
    results = Results(date, machine(), args.threads, args.train_seconds)
    measured(results, "start", args.threads)
    reference = setup(args)
    halves: dict[str, Callable] = {"train": train_half, "decode": decode_half}
    for name, half in halves.items():
        if args.only in (None, name):
            half(args, reference, results)
            write(results, args.out)  # should the next half fail, this one's table is kept
    measured(results, "end", args.threads)
    write(results, args.out)
    print(f"\n{render(results)}\nwritten to {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
