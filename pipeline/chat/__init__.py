"""Chat: a conversation with a chat model (a model trained on dialogue pairs, Vinyals & Le
2015).

- `session`: `ChatSession`, the last turns kept as the context of the next reply.
- `cli`: `nmt chat`, the terminal conversation (readline editing and history).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.lazy import lazy_exports

if TYPE_CHECKING:
    from pipeline.chat.session import ChatSession

__all__ = ["ChatSession"]

__getattr__ = lazy_exports(__name__, {"ChatSession": "pipeline.chat.session"})
