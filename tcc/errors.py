"""Errors that point at the source: ``FILE:LINE:COL: error: MESSAGE``."""

from __future__ import annotations


class TccError(Exception):
    """A compile-time error in a .loop program, with its position.

    ``str(err)`` is the one-line form; ``err.format()`` adds the offending
    source line and a caret under the column, as the CLI prints it.
    """

    def __init__(self, message: str, pos=None, filename: str | None = None,
                 source: str | None = None):
        super().__init__(message)
        self.message = message
        self.pos = pos
        self.filename = filename
        self.source = source

    @property
    def line(self) -> int | None:
        return self.pos.line if self.pos is not None else None

    @property
    def col(self) -> int | None:
        return self.pos.col if self.pos is not None else None

    def attach(self, filename: str | None, source: str | None) -> "TccError":
        """Fill in the file name and text once they are known (in place)."""
        if self.filename is None:
            self.filename = filename
        if self.source is None:
            self.source = source
        return self

    def __str__(self) -> str:
        where = self.filename or "<input>"
        if self.pos is not None:
            where += f":{self.pos.line}:{self.pos.col}"
        return f"{where}: error: {self.message}"

    def format(self) -> str:
        text = str(self)
        if self.pos is None or self.source is None:
            return text
        # lines end at "\n" only, as the lexer counts them (splitlines would
        # also break at vertical tabs, form feeds and other separators)
        lines = [line.rstrip("\r") for line in self.source.split("\n")]
        if not 1 <= self.pos.line <= len(lines):
            return text
        src = lines[self.pos.line - 1].expandtabs(1)
        caret = " " * (self.pos.col - 1) + "^"
        return f"{text}\n    {src}\n    {caret}"
