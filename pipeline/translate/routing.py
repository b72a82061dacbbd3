"""Which configured model translates a request: by model id, by language pair, or by the
detected language of the text (`source="auto"`). The Serve ingress and bulk translation share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.translate.catalog import ModelCatalog, ModelEntry, RouteError
from pipeline.translate.language_id import Detection, LanguageDetector

AUTO = "auto"  # LibreTranslate's source code for "detect it"


@dataclass(frozen=True)
class Route:
    model: ModelEntry
    detected: Detection | None = None  # when the source was detected


class Router:
    """A catalog plus a language detector over its source languages (loaded on first use)."""

    def __init__(self, catalog: ModelCatalog) -> None:
        self.catalog = catalog
        self._detector: LanguageDetector | None = None

    @property
    def detector(self) -> LanguageDetector:
        if self._detector is None:
            self._detector = LanguageDetector(self.catalog.sources())
        return self._detector

    def route(
        self,
        texts: Sequence[str],
        model: str | None = None,
        source: str | None = None,
        target: str | None = None,
    ) -> Route:
        """The model for `texts`; with source "auto", the texts' language (taken together)
        chooses it. Raises RouteError naming what is served."""
        detected = None
        if source == AUTO:
            if not any(text.strip() for text in texts):
                raise RouteError("cannot detect the language of an empty text")
            detected = self.detector.detect("\n".join(texts))
            source = detected.language
        return Route(self.catalog.route(model, source, target), detected)
