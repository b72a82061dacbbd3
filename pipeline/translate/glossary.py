"""Glossaries: source terms and the target terms they must be translated as.

A glossary is a TSV file (`source<TAB>target`, one term a line; blank lines and lines
starting with `#` are skipped) or, in the API and bulk rows, a mapping. For each text, the
target terms of the source terms it contains become lexical constraints
(`models.constraints`); source terms it does not contain are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pipeline.errors import UserError

Glossary = dict[str, str]


def read_glossary(path: str) -> Glossary:
    """The glossary in TSV file `path` (plain or .gz); a UserError names the file and line
    of the first bad entry."""
    from pipeline.corpus.textfile import iter_lines

    glossary: Glossary = {}
    for number, line in enumerate(iter_lines(path), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        source, tab, target = line.partition("\t")
        if not tab or not source.strip() or not target.strip():
            raise UserError(
                f"{path}:{number}: a glossary line is source<TAB>target with both terms, "
                f"not {line[:60]!r}"
            )
        glossary[source.strip()] = target.strip()
    return glossary


def check_glossary(glossary: Mapping[str, str], where: str = "glossary") -> Glossary:
    """A glossary given as a mapping (an API request, a bulk row), checked: ValueError
    naming the first empty term."""
    checked: Glossary = {}
    for source, target in glossary.items():
        if not isinstance(source, str) or not isinstance(target, str):
            raise ValueError(f"{where}: terms must be strings, not {source!r}: {target!r}")
        if not source.strip() or not target.strip():
            raise ValueError(f"{where}: empty term in {source!r}: {target!r}")
        checked[source.strip()] = target.strip()
    return checked


def constraints_for(text: str, glossary: Mapping[str, str]) -> list[str]:
    """The target terms of the glossary's source terms that occur in `text` as whole words
    (case-insensitive), each once, in glossary order."""
    found = []
    for source, target in glossary.items():
        pattern = rf"(?<!\w){re.escape(source)}(?!\w)"
        if target not in found and re.search(pattern, text, re.IGNORECASE):
            found.append(target)
    return found
