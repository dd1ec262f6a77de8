"""The stages for one program, in order: parse, check, optimize the forward,
differentiate, optimize the backward, stabilize; what the compiler, ``tcc
grad`` and ``tcc explain`` share."""

from __future__ import annotations

from .autodiff import differentiate
from .check import analyze, require_lowerable, size_symbols
from .errors import TccError
from .parse import parse as _parse_text


class Pipeline:
    """The stages for one program: forward and backward, optimized or not."""

    def __init__(self, text: str, filename: str | None, optimize: bool,
                 forward_rewrites: bool = True):
        """forward_rewrites=False keeps the forward as written (contraction order
        and stable forms off): the backward then reads only the user's tensors."""
        from .optimize import Log
        program = _parse_text(text, filename)
        self.log = Log()
        try:
            info = analyze(program)
            if forward_rewrites:      # compiling: refuse what the lowering cannot do yet
                require_lowerable(info)
            self.original = info
            from .optimize import optimize_backward, optimize_forward, stabilize
            if optimize and forward_rewrites:
                info = analyze(optimize_forward(info, self.log))
            self.unstable = info
            backward = differentiate(info)
            self.raw_backward = backward
            if optimize:
                backward = optimize_backward(info, backward, self.log,
                                             compiled=forward_rewrites)
                if forward_rewrites:
                    forward, backward = stabilize(info, backward, self.log)
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
