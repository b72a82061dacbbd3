"""`nmt demo`: the quickest look at the model working."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  nmt demo
  nmt demo --seconds 30 --attention none   # the fixed-context baseline, for comparison
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--attention", default="bahdanau", choices=["bahdanau", "luong", "none"])
    parser.add_argument("--seconds", type=float, default=60.0, help="training time budget")
    parser.add_argument("--steps", type=int, default=600, help="training step budget")


def run(args: argparse.Namespace) -> int:
    import torch

    from models.search import beam_search
    from models.toy import decode_symbols, encode_symbols, make_pairs, train_toy, translate_symbols
    from models.training import collate

    torch.set_num_threads(2)
    print(f"Training a {args.attention} toy model: reverse the input and shift each letter by 3")
    result = train_toy(
        args.attention, max_seconds=args.seconds, max_steps=args.steps, log_every=100
    )
    config = result.model.config
    print(
        f"{result.steps} steps in {result.seconds:.0f}s, "
        f"{result.model.num_parameters():,} parameters; "
        f"held-out exact match {result.exact_match:.1%}\n"
    )
    texts = ["hello", "attention", "neuralmachinetranslation", "abcdefghijklmnopqrstu"]
    texts += [decode_symbols(s) for s, _ in make_pairs(2, 3, 24, seed=99)]
    batch = collate(
        [(encode_symbols(t), []) for t in texts], config.pad_id, config.bos_id, config.eos_id
    )
    for text, (best,) in zip(
        texts, beam_search(result.model, batch.src, batch.src_len), strict=True
    ):
        output = decode_symbols(best.tokens)
        mark = "ok " if output == translate_symbols(text) else "ERR"
        print(f"{mark} {text:>26} -> {output}")
    return 0
