"""The optimizer: a pipeline of passes, each a function Program -> Program."""

from __future__ import annotations

from .check import Info
from .ir import Program


def optimize(program: Program) -> Program:
    return program


def optimize_backward(forward: Info, backward: Program) -> Program:
    return backward


def optimize_forward(info: Info) -> Program:
    return info.program
