"""Fresh names: the one source of names for the temporaries that passes and
lowerings invent (``e``, ``g2``, ``Z_max``), so none clashes with a name the
program already uses."""

from __future__ import annotations


def fresh(base: str, taken: set[str]) -> str:
    """``base``, or ``base2``, ``base3``, ... : the first not in ``taken``,
    which is then added to ``taken``."""
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}{n}"
    taken.add(name)
    return name


__all__ = ["fresh"]
