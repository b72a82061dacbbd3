"""A conversation with a chat model: each reply is the model's output for the last turns
joined with the separator, as `nmt prepare` built the training pairs (`pipeline.corpus.
dialogue`); the model's meta.json says how many turns and which separator."""

from __future__ import annotations

from pipeline.corpus.dialogue import SEPARATOR
from pipeline.translate.settings import DecodeSettings
from pipeline.translate.translator import Translator


class ChatSession:
    """The turns so far (the user's and the model's) and how to reply to the next one."""

    def __init__(
        self,
        translator: Translator,
        settings: DecodeSettings | None = None,
        context_turns: int | None = None,
    ) -> None:
        dialogue = translator.meta.get("dialogue") or {}
        self.translator = translator
        self.settings = settings or translator.settings
        # a model trained on N turns of context is asked with N turns (1 for a plain model)
        self.context_turns = context_turns or dialogue.get("context_turns", 1)
        self.separator = dialogue.get("separator", SEPARATOR)
        self.turns: list[str] = []

    def source(self, text: str) -> str:
        """What the model reads to answer `text`: it and the turns before it, joined."""
        context = [*self.turns, " ".join(text.split())][-self.context_turns :]
        return f" {self.separator} ".join(context)

    def reply(self, text: str) -> str:
        """The model's reply to `text`, which both join the conversation."""
        (translation,) = self.translator.translate([self.source(text)], self.settings)
        self.turns += [" ".join(text.split()), translation.text]
        return translation.text

    def reset(self) -> None:
        self.turns = []
