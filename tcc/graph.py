"""``tcc graph``: the computation graph as a picture.

Tensors are nodes, labelled with their shapes; each statement is an edge from
every tensor it reads to its target, labelled with the statement. With
``backward=True`` the backward program is drawn beside the forward, as the
GaTech lecture and ETH problem 1 draw it by hand.

The .dot text is built here; only rendering it (svg, png, pdf) needs the
``graphviz`` package and its ``dot`` program (``pip install 'tcc[graph]'``),
imported when needed: without them the .dot text is written instead.
"""

from __future__ import annotations

import os

from .check import Info
from .ir import Program, index_cmps, reads

FORMATS = ("svg", "png", "pdf", "dot")

# node style by role: shape, fill
STYLE = {
    "input": ("box", "#dbe9f6"),
    "param": ("box", "#fde9c8"),
    "data": ("box", "#eeeeee"),
    "output": ("doubleoctagon", "#d9f0d3"),
    "intermediate": ("ellipse", "#ffffff"),
}


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _shape(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]" if shape else "scalar"


def _cluster(name: str, title: str, info: Info, prefix: str) -> list[str]:
    lines = [f"  subgraph cluster_{name} {{", f"    label={_quote(title)};",
             "    fontname=Helvetica; color=\"#999999\";"]
    used = set(info.roles)
    for t in [*info.inputs, *info.computed]:
        if t not in used:
            continue
        shape, fill = STYLE.get(info.roles[t], STYLE["intermediate"])
        label = f"{t}\\n{_shape(info.shapes.get(t, ()))}"
        lines.append(f"    {_quote(prefix + t)} [label=\"{label}\", shape={shape}, "
                     f"style=filled, fillcolor=\"{fill}\"];")
    for s in info.program.stmts:
        sources = []
        for r in reads(s.expr):
            if r.tensor not in sources:
                sources.append(r.tensor)
        for index in [r.index for r in [s.target, *reads(s.expr)]] + \
                [c.sides for c in index_cmps(s.expr)]:
            for ix in index:
                if hasattr(ix, "tensor") and ix.tensor not in sources:
                    sources.append(ix.tensor)      # a gather reads its positions
        for src in sources:
            lines.append(f"    {_quote(prefix + src)} -> {_quote(prefix + s.target.tensor)} "
                         f"[label={_quote(str(s))}];")
    lines.append("  }")
    return lines


def dot_text(forward: Info, backward: Info | None = None, name: str = "program") -> str:
    """The graph in graphviz's dot language: the forward, and the backward beside it."""
    lines = [f"digraph {_quote(name)} {{", "  rankdir=LR;",
             "  node [fontname=Helvetica, fontsize=11];",
             "  edge [fontname=Courier, fontsize=9];"]
    lines += _cluster("forward", "forward", forward, "")
    if backward is not None:
        lines += _cluster("backward", "backward", backward, "backward:")
    lines.append("}")
    return "\n".join(lines) + "\n"


def program_dot(text_or_path, backward: bool = False, optimize: bool = True) -> str:
    """The dot text for a program (text or path)."""
    from .pipeline import Pipeline
    from .parse import read_source
    text, filename = read_source(text_or_path)
    pipe = Pipeline(text, filename, optimize)
    name = os.path.splitext(os.path.basename(filename))[0] if filename else "program"
    return dot_text(pipe.original, pipe.binfo if backward else None, name)


def render(dot: str, fmt: str) -> bytes:
    """Render dot text with graphviz; ImportError or RuntimeError when it cannot."""
    import graphviz  # the optional extra: tcc[graph]
    try:
        return graphviz.Source(dot).pipe(format=fmt)
    except graphviz.ExecutableNotFound as err:
        raise RuntimeError("graphviz's 'dot' program was not found on PATH") from err


def draw(text_or_path, output: str | None, backward: bool = False,
         optimize: bool = True) -> str | None:
    """Write the graph to ``output`` (.svg, .png, .pdf or .dot; stdout without
    one) and return a note for the user, or None."""
    import sys
    dot = program_dot(text_or_path, backward, optimize)
    if output is None:
        sys.stdout.write(dot)
        return None
    fmt = os.path.splitext(output)[1].lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"cannot draw to '{output}': the formats are "
                         f"{', '.join('.' + f for f in FORMATS)}")
    if fmt == "dot":
        _write(output, dot.encode())
        return None
    try:
        _write(output, render(dot, fmt))
        return None
    except (ImportError, RuntimeError) as err:
        fallback = os.path.splitext(output)[0] + ".dot"
        _write(fallback, dot.encode())
        why = str(err) if isinstance(err, RuntimeError) else \
            "the graphviz Python package is not installed (pip install 'tcc[graph]')"
        return (f"tcc: note: {why}; wrote the graph's dot text to {fallback} instead "
                f"(render it with: dot -T{fmt} {fallback} -o {output})")


def _write(path: str, data: bytes):
    with open(path, "wb") as f:
        f.write(data)


__all__ = ["dot_text", "program_dot", "draw", "render", "Program"]
