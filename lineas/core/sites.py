"""Sites: the module outputs that carry a map, chosen by regex over ``named_modules()``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from torch import nn

from lineas.core.errors import SiteError


@dataclass(frozen=True, order=True)
class Site:
    """A module's output, or item ``index`` of its tuple output (written ``name:index``)."""

    module: str
    index: int | None = None

    @classmethod
    def parse(cls, text: str | Site) -> Site:
        if isinstance(text, Site):
            return text
        name, sep, idx = text.rpartition(":")
        if sep and idx.isdigit():
            return cls(name, int(idx))
        return cls(text)

    def __str__(self) -> str:
        return self.module if self.index is None else f"{self.module}:{self.index}"


def match_sites(model: nn.Module, patterns: Sequence[str]) -> list[Site]:
    """Sites matched by regex ``patterns`` (full match over ``named_modules()``, optional ``:k``).

    Sites come back in module-definition order, without duplicates. Presets (names for pattern lists)
    are the model families' business: :func:`lineas.models.families.resolve_sites`.
    """
    names = [n for n, _ in model.named_modules() if n]
    order = {n: i for i, n in enumerate(names)}
    found: set[Site] = set()
    for pattern in patterns:
        site = Site.parse(pattern)
        try:
            regex = re.compile(site.module)
        except re.error as err:
            raise SiteError(f"site pattern {pattern!r} is not a valid regex: {err}") from None
        hits = [Site(n, site.index) for n in names if regex.fullmatch(n)]
        if not hits:
            sample = ", ".join(names[:: max(1, len(names) // 12)][:12])
            raise SiteError(
                f"site pattern {pattern!r} matches no module of {type(model).__name__}. "
                f"Patterns are full-match regexes over named_modules(), e.g. {sample}"
            )
        found.update(hits)
    return sorted(found, key=lambda s: (order[s.module], s.index or 0))
