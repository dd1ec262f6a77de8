"""The stages for one program, in order: parse, check, optimize the forward,
differentiate, optimize the backward, stabilize; what the compiler, ``tcc
grad`` and ``tcc explain`` share. ``tcc grad`` prints ``backward``, the very
program the compiled module's backward runs, on what its forward returns."""

from __future__ import annotations

from .autodiff import differentiate
from .check import analyze, size_symbols
from .errors import TccError
from .parse import parse as _parse_text


class Pipeline:
    """The stages for one program: forward and backward, optimized or not."""

    def __init__(self, text: str, filename: str | None, optimize: bool):
        from .optimize import Log, optimize_backward, optimize_forward, stable_forms
        program = _parse_text(text, filename)
        self.log = Log()
        try:
            info = analyze(program)
            self.original = info
            if optimize:
                info = analyze(optimize_forward(info, self.log))
            self.unstable = info
            backward = differentiate(info)
            self.raw_backward = backward
            if optimize:
                backward = optimize_backward(info, backward, self.log)
                forward, backward = stable_forms(info, backward, self.log)
                info = analyze(forward)
            self.info = info
            self.backward = backward
            self.binfo = analyze(backward, reserved=size_symbols(info))
        except TccError as err:
            raise err.attach(filename, text) from None
        self.text, self.filename, self.optimize = text, filename, optimize

    @property
    def saved(self) -> list[str]:
        """Forward-computed tensors the backward reads."""
        return [t for t in self.binfo.inputs if t in self.info.computed]
