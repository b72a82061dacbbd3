"""Which language a text is in, among the languages some model translates from.

`py3langid` (a pure-Python port of langid.py that ships its model) ranks the text twice: once
restricted to the served languages (`set_languages`), which chooses among them, and once over
all of its languages, which tells a text in none of them (French sent to a de/en/zh service)
from one that merely looks close to several.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.translate.catalog import RouteError

# Short texts spread the full model's probability over related languages (de/lb, zh/wuu):
# a served language this close behind the best counts as the text's language.
MIN_SHARE_OF_BEST = 0.5

# English names for /languages; a code not listed is shown as itself.
LANGUAGE_NAMES = {
    "af": "Afrikaans", "ar": "Arabic", "az": "Azerbaijani", "be": "Belarusian",
    "bg": "Bulgarian", "bn": "Bengali", "ca": "Catalan", "cs": "Czech", "cy": "Welsh",
    "da": "Danish", "de": "German", "el": "Greek", "en": "English", "eo": "Esperanto",
    "es": "Spanish", "et": "Estonian", "eu": "Basque", "fa": "Persian", "fi": "Finnish",
    "fr": "French", "ga": "Irish", "gl": "Galician", "he": "Hebrew", "hi": "Hindi",
    "hr": "Croatian", "hu": "Hungarian", "hy": "Armenian", "id": "Indonesian",
    "is": "Icelandic", "it": "Italian", "ja": "Japanese", "ka": "Georgian", "kk": "Kazakh",
    "ko": "Korean", "lt": "Lithuanian", "lv": "Latvian", "mk": "Macedonian", "ms": "Malay",
    "mt": "Maltese", "nb": "Norwegian Bokmål", "nl": "Dutch", "no": "Norwegian",
    "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sk": "Slovak",
    "sl": "Slovenian", "sq": "Albanian", "sr": "Serbian", "sv": "Swedish", "sw": "Swahili",
    "ta": "Tamil", "th": "Thai", "tl": "Tagalog", "tr": "Turkish", "uk": "Ukrainian",
    "ur": "Urdu", "vi": "Vietnamese", "zh": "Chinese", "zxx": "no language",
}  # fmt: skip


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


@dataclass(frozen=True)
class Detection:
    language: str
    confidence: float  # 0 to 100, as LibreTranslate reports it


class LanguageDetector:
    """Detects which of `languages` a text is in; those py3langid does not know are left out
    (a model for them is reached by naming its source)."""

    def __init__(self, languages: Iterable[str]) -> None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self.full = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        wanted = set(languages)
        self.languages = sorted(wanted & set(self.full.labels))
        self.unknown = sorted(wanted - set(self.languages))
        self.restricted = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        if self.languages:
            self.restricted.set_languages(self.languages)

    def rank(self, text: str) -> list[Detection]:
        """The served languages, most likely first; RouteError when the text is in none."""
        if not self.languages:
            raise RouteError(
                "cannot detect the language: the identifier knows none of the served source "
                f"languages ({', '.join(self.unknown)}); give the source language"
            )
        self._check_served(text)
        return [Detection(code, round(100 * p, 2)) for code, p in self.restricted.rank(text)]

    def detect(self, text: str) -> Detection:
        return self.rank(text)[0]

    def _check_served(self, text: str) -> None:
        ranking = self.full.rank(text)
        best, best_p = ranking[0]
        served_p = max(p for code, p in ranking if code in self.languages)
        if best not in self.languages and served_p < MIN_SHARE_OF_BEST * best_p:
            raise RouteError(
                f"the text looks like {language_name(best)} ({best}), which no model translates "
                f"from; served: {', '.join(self.languages)}"
            )
