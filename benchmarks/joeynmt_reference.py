"""The reference toolkit (Joey NMT 2.3.0) for `bench_reference.py`.

Everything about running it lives here: its scratch venv, its data dir (gunzipped Multi30K and
the vocabulary of `train_spm.py`), its configs with `@PEER_DIR@` filled in, a training run
stopped by SIGINT after a fixed time, and decoding timed by its own "Generation took" line.
Its configs and `train_spm.py` are read from `../shared/peers/joeynmt` at run time and never
copied into the repository; what they produce goes to the cache dir.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

CONFIGS = {  # name used here: file in the peer dir
    "train": "rnn_multi30k_deen.yaml",
    "greedy": "rnn_multi30k_deen.greedy.yaml",
    "beam5": "rnn_multi30k_deen.beam5.yaml",
}
PLACEHOLDER = "@PEER_DIR@"
SPLITS = ("train", "val", "test_2016_flickr")
LANGS = ("de", "en")
# As the peer README says: torch first (pip's config finds the local CPU wheel), then the
# toolkit and what 2.3.0 imports without declaring it / needs in an older release.
INSTALL_STEPS = (
    ("torch==2.13.0",),
    ("joeynmt==2.3.0", "sacrebleu", "importlib_metadata", "sentencepiece==0.2.0"),
)
VERSIONS = {"joeynmt": "2.3.0", "torch": "2.13.0", "sentencepiece": "0.2.0"}
NEVER = 10**9  # a validation frequency that never comes within the timed window
START_MARKER = "EPOCH 1"  # Joey logs it just before the first batch
TOKENS_PER_SEC = re.compile(r"Tokens per Sec:\s+([\d.]+)")
GENERATION = re.compile(r"Generation took ([\d.]+)\[sec\]")


@dataclass
class JoeyTraining:
    tokens: int  # target tokens trained on (its checkpoint's count: non-pad, eos included)
    steps: int
    seconds: float  # from its first epoch to the SIGINT
    windows: list[float]  # `Tokens per Sec` of each full log window (20 steps)
    log: Path

    @property
    def tokens_per_second(self) -> float:
        """Over the whole run, as ours are counted: the last, partial log window included."""
        return self.tokens / self.seconds

    @property
    def windows_tokens_per_second(self) -> float | None:
        """Its log's figure over the full windows: they hold the same number of steps of 64
        sentences (nearly the same tokens each), so tokens / time is their harmonic mean."""
        return len(self.windows) / sum(1 / w for w in self.windows) if self.windows else None


@dataclass
class JoeyDecode:
    hypotheses: list[str]
    seconds: float  # its own "Generation took": batching and search, model load excluded


class Reference:
    """One install of the reference and its work dir (what `@PEER_DIR@` becomes)."""

    def __init__(self, peer_dir: Path, venv: Path, work: Path, threads: int) -> None:
        self.peer_dir, self.venv, self.work, self.threads = peer_dir, venv, work, threads
        self.python = venv / "bin" / "python"
        self.data = work / "data"
        self.model_dir = work / "models" / "rnn_multi30k_deen"
        self.configs = {name: work / "configs" / f"{name}.yaml" for name in CONFIGS}

    def env(self) -> dict[str, str]:
        threads = str(self.threads)
        return os.environ | {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}

    # -- install and data -----------------------------------------------------------------
    def installed(self) -> bool:
        """Whether the venv holds the pinned versions (an interrupted install does not)."""
        if not self.python.is_file():
            return False
        check = (
            "import importlib.metadata as m, importlib_metadata, sacrebleu; "
            f"v = {VERSIONS!r}; "
            "assert all(m.version(p).split('+')[0] == v[p] for p in v)"
        )
        return subprocess.run([self.python, "-c", check], capture_output=True).returncode == 0

    def install(self) -> None:
        if self.installed():
            return
        print(f"installing Joey NMT {VERSIONS['joeynmt']} into {self.venv} (minutes)", flush=True)
        shutil.rmtree(self.venv, ignore_errors=True)
        _run(["python3.11", "-m", "venv", str(self.venv)])
        for packages in INSTALL_STEPS:
            _run([str(self.python), "-m", "pip", "install", "-q", *packages])
        if not self.installed():
            raise RuntimeError(f"{self.venv}: the install finished without the pinned versions")

    def prepare_data(self, multi30k: Path) -> None:
        """data/{train,val,test_2016_flickr}.{de,en} and data/spm8k.{model,vocab}, once.
        Built in a staging dir and renamed, so a half-built one is never taken as done."""
        if (self.data / "spm8k.model").is_file():
            return
        staging = self.work / "data.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for split in SPLITS:
            for lang in LANGS:
                with gzip.open(multi30k / f"{split}.{lang}.gz", "rb") as packed:
                    (staging / f"{split}.{lang}").write_bytes(packed.read())
        script = self.peer_dir / "train_spm.py"
        _run(
            [str(self.python), str(script), str(staging), str(staging / "spm8k"), "8000", "unigram"]
        )
        shutil.rmtree(self.data, ignore_errors=True)
        staging.rename(self.data)

    def write_configs(self, validate: bool = False, decode_batch: int | None = None) -> None:
        """The peer configs with `@PEER_DIR@` filled in. For a speed figure (`validate`
        False) validation is moved out of reach: it would otherwise run inside the timed
        window, and without it the decoding configs load latest.ckpt (saved at the SIGINT)
        since there is no best.ckpt. For a quality figure it stays as the peer configured
        it, and decoding loads best.ckpt, picked by validation BLEU, as a user's run would.
        `decode_batch` replaces the decoding configs' sentences per batch."""
        for name, file in CONFIGS.items():
            text = (self.peer_dir / file).read_text().replace(PLACEHOLDER, str(self.work))
            config = yaml.safe_load(text)
            if not validate:
                config["training"]["validation_freq"] = NEVER
            if decode_batch is not None:  # sentences a batch (the peer configs: 64)
                config["testing"]["batch_size"] = decode_batch
            self.configs[name].parent.mkdir(parents=True, exist_ok=True)
            self.configs[name].write_text(yaml.safe_dump(config, sort_keys=False))

    def train_config(self) -> dict:
        return yaml.safe_load(self.configs["train"].read_text())

    # -- training and decoding ------------------------------------------------------------
    def train(self, seconds: float, log: Path) -> JoeyTraining:
        """`joeynmt train` for `seconds` of training, then SIGINT (as `timeout -s INT`
        would send, but timed from its first epoch: loading data and building the model
        are not training time, and ours does not count its start-up either)."""
        command = [str(self.python), "-m", "joeynmt", "train", str(self.configs["train"])]
        with log.open("w") as sink:
            process = subprocess.Popen(
                [*command, "--skip-test"], stdout=sink, stderr=subprocess.STDOUT, env=self.env()
            )
            try:
                started = _wait_for_line(log, START_MARKER, process, timeout=900)
                _run_for(process, seconds, log)
                process.send_signal(signal.SIGINT)
                elapsed = time.perf_counter() - started
                process.wait(timeout=600)  # it saves latest.ckpt on the way out
            finally:
                if process.poll() is None:
                    process.kill()
        stats = self.checkpoint_stats()
        windows = [float(rate) for rate in TOKENS_PER_SEC.findall(log.read_text())]
        return JoeyTraining(stats["total_tokens"], stats["steps"], elapsed, windows, log)

    def checkpoint_stats(self) -> dict:
        """Steps and target tokens of latest.ckpt (the weights saved at the SIGINT)."""
        script = (
            "import json, sys, torch; "
            "s = torch.load(sys.argv[1], map_location='cpu', weights_only=False)['stats_state']; "
            "print(json.dumps(s))"
        )
        checkpoint = str(self.model_dir / "latest.ckpt")
        done = subprocess.run(
            [str(self.python), "-c", script, checkpoint], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"cannot read {checkpoint}\n{_tail(done.stderr)}")
        return json.loads(done.stdout)

    def has_model(self) -> bool:
        return (self.model_dir / "latest.ckpt").exists()

    def translate(self, search: str, source: Path, log: Path) -> JoeyDecode:
        """`joeynmt translate CFG < source`: hypotheses from stdout. It crashes after
        decoding, so its exit status is ignored; the count of lines is checked instead."""
        command = [str(self.python), "-m", "joeynmt", "translate", str(self.configs[search])]
        with source.open() as stdin:
            done = subprocess.run(
                command, stdin=stdin, capture_output=True, text=True, env=self.env()
            )
        log.write_text(done.stderr)
        match = GENERATION.search(done.stderr)
        hypotheses = done.stdout.splitlines()
        expected = len(source.read_text().splitlines())
        if match is None or len(hypotheses) != expected:
            raise RuntimeError(
                f"joeynmt translate ({search}) gave {len(hypotheses)} of {expected} lines "
                f"and {'a' if match else 'no'} timing; its log: {log}\n{_tail(done.stderr)}"
            )
        return JoeyDecode(hypotheses, float(match.group(1)))


def _wait_for_line(log: Path, marker: str, process: subprocess.Popen, timeout: float) -> float:
    """The perf_counter time at which `marker` appeared in the log."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if marker in log.read_text(errors="replace"):
            return time.perf_counter()
        if process.poll() is not None:
            raise RuntimeError(
                f"joeynmt exited ({process.returncode}) before training\n{_tail(log)}"
            )
        time.sleep(0.2)
    raise RuntimeError(f"joeynmt did not start training within {timeout:.0f} s: see {log}")


def _run_for(process: subprocess.Popen, seconds: float, log: Path) -> None:
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return  # still training, as it should be
    raise RuntimeError(f"joeynmt train exited early ({process.returncode})\n{_tail(log)}")


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode})\n{_tail(done.stderr)}")


def _tail(text_or_file: str | Path, lines: int = 15) -> str:
    text = (
        text_or_file.read_text(errors="replace") if isinstance(text_or_file, Path) else text_or_file
    )
    return "\n".join(text.splitlines()[-lines:])
