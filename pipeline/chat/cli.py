"""`nmt chat`: a conversation with a chat model in the terminal."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import UserError
from pipeline.translate.settings import DecodeSettings

EXAMPLES = """examples:
  nmt chat --model runs/chat/en
  nmt chat --model runs/chat/en --temperature 1.0 --top-k 20 --seed 1
  nmt chat --model runs/chat/en --no-sample --beam-size 5 --no-repeat-ngram 3
  nmt chat --model runs/chat/zh --context-turns 1
  nmt chat --model runs/chat/en --evaluate runs/data/chat-en/test/english-test

In the conversation: /reset forgets the turns so far, /quit (or Ctrl-D) ends it. The line is
edited with readline (arrows, Ctrl-R) and kept in --history across sessions. Chat samples by
default (temperature 0.7, top-p 0.9, no repeated trigram): the most probable reply is the
dull one. The last turns are the context of the next reply: as many as the model was
trained with (its meta.json), or --context-turns.
"""

PROMPT = "you> "
REPLY = "bot> "
# Chat's own defaults for the shared decoding flags (DecodeSettings keeps translation's).
CHAT_DEFAULTS = {
    "sample": True,
    "temperature": 0.7,
    "top_p": 0.9,
    "no_repeat_ngram": 3,
    "batch_size": 1,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a chat model dir or training run dir")
    parser.add_argument(
        "--context-turns",
        type=int,
        metavar="N",
        help="turns the model reads before replying (default: as the model was trained)",
    )
    parser.add_argument(
        "--history",
        default=str(Path.home() / ".nmt_chat_history"),
        help="readline history file; '' keeps none (default: %(default)s)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument(
        "--evaluate",
        metavar="SPLIT",
        help="instead of chatting: perplexity and distinct-1/2 of beam search against sampling "
        "on a prepared split (e.g. runs/data/chat-en/valid)",
    )
    DecodeSettings.add_arguments(parser, omit=("batch_size", "precision", "n_best"))
    parser.set_defaults(**CHAT_DEFAULTS)


def run(args: argparse.Namespace) -> int:
    if args.context_turns is not None and args.context_turns < 1:
        raise UserError(f"--context-turns must be at least 1, not {args.context_turns}")
    settings = DecodeSettings.from_args(args)
    from pipeline.chat.session import ChatSession
    from pipeline.translate.translator import Translator

    translator = Translator(args.model, device=args.device, settings=settings)
    if args.evaluate:
        from pipeline.chat.evaluate import evaluate_chat, markdown

        print(markdown(evaluate_chat(translator, args.evaluate, seed=args.seed or 1)))
        return 0
    session = ChatSession(translator, context_turns=args.context_turns)
    mode = "sampling" if settings.sample else f"beam {settings.beam_size}"
    print(
        f"chatting with {session.translator.name} ({mode}, {session.context_turns} turn(s) of "
        "context); /reset starts over, /quit ends",
        flush=True,
    )
    with _line_history(args.history):
        while (line := _read(PROMPT)) is not None:
            command = line.strip()
            if command in ("/quit", "/exit"):
                break
            if command == "/reset":
                session.reset()
                print("(conversation reset)", flush=True)
            elif command.startswith("/"):
                print(f"(unknown command {command}: /reset or /quit)", flush=True)
            elif command:
                print(REPLY + session.reply(command), flush=True)
    return 0


def _read(prompt: str) -> str | None:
    """A line from the user, None at end of input (Ctrl-D)."""
    try:
        return input(prompt)
    except EOFError:
        print()
        return None


@contextlib.contextmanager
def _line_history(path: str) -> Iterator[None]:
    """readline editing while the conversation lasts, its history loaded and saved."""
    try:
        import readline  # line editing for input(), where the platform has it
    except ImportError:
        yield
        return
    if path and os.path.exists(path):
        readline.read_history_file(path)
    try:
        yield
    finally:
        if path:
            try:
                readline.write_history_file(path)
            except OSError as error:
                print(f"could not save the history to {path}: {error}", file=sys.stderr)
