"""Text -> IR: the lark grammar in ``grammar/loop.lark`` and one transformer.

The parser is LALR with the transformer applied while parsing (no parse tree
is built, and no recursion over deep input). Names are resolved once the
whole program is read: a name is a dim if some declaration says so (``dim``,
a shape entry or ``batch``), a loop index if the statement's ``for`` lists it
(or, with ``for`` omitted, if it is used in an index and is not a dim), and
a tensor otherwise.

It is one module over 500 lines on purpose: the transformer's rules, the
name resolution and the hints of the parse errors all follow the grammar's
rule and terminal names, and change together with ``loop.lark``.
"""

from __future__ import annotations

import functools
import keyword
import os
import threading
from importlib import resources

import lark
from lark import Lark, Token, Transformer

from .errors import TccError
from . import functions
from .ir import (base_name, COMPARISONS, Affine, Bin, Call, Decl, DimVal, Expr, Gather,
                 IndexCmp, Neg, Num, Pos, Program, Ref, Stmt, index_vars)

MAX_DEPTH = 100
MAX_HEIGHT = 250
KEYWORDS = {"for", "dim", "input", "param", "data", "output", "batch"}
_RESERVED = KEYWORDS | set(keyword.kwlist) | {"grad"}   # and the function names

_TOKEN_TEXT = {
    "NAME": "a name", "INT": "an integer", "NUMBER": "a number", "ROLE": "a declaration",
    "UPDATE": "an update ('+=', '-=', '=', 'max=' or 'min=')", "CMP": "a comparison",
    "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "POW": "'**'",
    "LSQB": "'['", "RSQB": "']'", "LPAR": "'('", "RPAR": "')'", "COMMA": "','",
    "COLON": "':'", "FOR": "'for'", "IN": "'in'", "GRAD": "'.grad'", "DOT": "'.dot'",
    "HESS": "'.hess'", "_NL": "end of line",
    "$END": "end of input", "DIM": "'dim'", "BATCH": "'batch'",
}


def _pos(tok: Token) -> Pos:
    return Pos(tok.line, tok.column)


class _BracketNewlines:
    """Post-lexer: newlines inside brackets continue the statement."""

    always_accept = ("_NL",)

    def __init__(self):
        self._mine = threading.local()      # one parser serves every thread

    @property
    def open(self) -> list:
        """The brackets still open in this thread's parse, for error messages."""
        return self._mine.__dict__.setdefault("open", [])

    def process(self, stream):
        self._mine.open = []
        for tok in stream:
            if tok.type in ("LSQB", "LPAR"):
                self.open.append(tok)
                if len(self.open) > MAX_DEPTH:
                    raise TccError(f"nesting deeper than {MAX_DEPTH} levels", _pos(tok))
            elif tok.type in ("RSQB", "RPAR"):
                if self.open:
                    self.open.pop()
            elif tok.type == "_NL" and self.open:
                continue
            yield tok


class _ToIR(Transformer):
    """Builds IR nodes bottom-up while the LALR parser runs."""

    def __init__(self):
        super().__init__()
        self._mine = threading.local()      # one parser serves every thread

    @property
    def depth(self) -> dict:
        """Nesting depth and height by node id, for this thread's parse."""
        return self._mine.__dict__.setdefault("depth", {})

    def _node(self, node, *children, nests=True):
        """Record a node's nesting depth (parentheses, calls, brackets, unary
        minus and powers nest; a flat chain of + or * does not) and height."""
        d = max((self.depth.get(id(c), (0, 0))[0] for c in children), default=0) + nests
        h = 1 + max((self.depth.get(id(c), (0, 0))[1] for c in children), default=0)
        if d > MAX_DEPTH:
            raise TccError(f"expression nested deeper than {MAX_DEPTH} levels", node.pos)
        if h > MAX_HEIGHT:
            raise TccError(f"expression too long ({MAX_HEIGHT} operations in a chain at "
                           "most): split it into several statements", node.pos)
        self.depth[id(node)] = (d, h)
        return node

    # ---- declarations
    def tensor_name(self, items):
        name, *suffixes = items
        kinds = [str(t) for t in suffixes]
        if kinds.count(".grad") > 1:
            raise TccError("'X.grad.grad' is not a name: only one '.grad' is allowed",
                           _pos(suffixes[[k for k, t in enumerate(kinds) if t == ".grad"][1]]))
        # the names are X, X.grad, X.dot, X.grad.dot and X.hess
        if kinds not in ([], [".grad"], [".dot"], [".grad", ".dot"], [".hess"]):
            bad = next((t for t in suffixes[1:]), suffixes[0])
            raise TccError(f"'{name}{''.join(kinds)}' is not a name: a name may end in "
                           "'.grad', '.dot', '.grad.dot' or '.hess'", _pos(bad))
        return (str(name) + "".join(kinds), _pos(name))

    def scalar_item(self, items):
        (name, pos), = items
        return (name, None, pos)

    def shaped_item(self, items):
        (name, pos), lsqb, *rest = items
        if not rest:
            raise TccError(f"'{name}[]' has an empty shape: write '{name}' for a scalar",
                           _pos(lsqb))
        return (name, rest[0], pos)

    def shape_entries(self, items):
        for tok in items:
            if tok.type == "INT" and len(tok.lstrip("0")) > 18:
                raise TccError(f"size {tok[:20]}... is too large for an array axis", _pos(tok))
        return [(int(tok.lstrip("0") or "0") if tok.type == "INT" else str(tok), _pos(tok))
                for tok in items]

    def tensor_decl(self, items):
        role, *decl_items = items
        out = []
        for name, shape, pos in decl_items:
            entries = None if shape is None else tuple(e for e, _ in shape)
            where = None if shape is None else tuple(p for _, p in shape)
            out.append(Decl(str(role), name, entries, pos, shape_pos=where))
        return out

    def dim_decl(self, items):
        return [Decl("dim", str(t), None, _pos(t)) for t in items]

    def batch_decl(self, items):
        tok = items[0]
        if tok.type == "INT" and tok.lstrip("0") != "1":
            raise TccError("'batch' takes a dim name, or 1 to turn averaging off", _pos(tok))
        return [Decl("batch", str(tok), None, _pos(tok))]

    # ---- statements
    def scalar_target(self, items):
        (name, pos), = items
        return Ref(name, (), pos)

    def indexed_target(self, items):
        (name, pos), _lsqb, args = items
        return Ref(name, tuple(_to_index(a) for a in args), pos)

    def loop_item(self, items):
        if len(items) == 1:
            return (items[0], None)
        name, _in, size = items
        if size.type == "INT":
            if len(size.lstrip("0")) > 18:
                raise TccError(f"range {size[:20]}... is too large", _pos(size))
            return (name, int(size.lstrip("0") or "0"))
        return (name, str(size))

    def stmt(self, items):
        loops: tuple[str, ...] | None = None
        pos = None
        written: tuple = ()
        if isinstance(items[0], Token) and items[0].type == "FOR":
            pos = _pos(items[0])
            entries = [t for t in items[1:] if isinstance(t, tuple)]
            names = [t for t, _ in entries]
            seen = set()
            for t in names:
                if str(t) in seen:
                    raise TccError(f"loop index '{t}' is listed twice", _pos(t))
                seen.add(str(t))
            loops = tuple(map(str, names))
            loop_pos = tuple(_pos(t) for t in names)
            written = tuple((str(t), size) for t, size in entries if size is not None)
            items = items[1 + len(names):]
        else:
            loop_pos = None
        target, op, expr = items
        return Stmt(loops, target, str(op), expr, pos or target.pos, loop_pos=loop_pos,
                    written=written)

    # ---- expressions
    def args(self, items):
        return list(items)

    def paren(self, items):
        _lpar, e = items
        d, h = self.depth.get(id(e), (0, 0))
        if d + 1 > MAX_DEPTH:
            raise TccError(f"expression nested deeper than {MAX_DEPTH} levels", _pos(_lpar))
        self.depth[id(e)] = (d + 1, h)
        return e

    def number(self, items):
        tok, = items
        text = str(tok)
        try:
            if text.isdigit() and len(text.lstrip("0")) > 308:
                raise OverflowError          # past any float (and Python's int-parse limit)
            value = int(text.lstrip("0") or "0") if text.isdigit() else float(text)
            if abs(float(value)) == float("inf"):
                raise OverflowError
        except OverflowError:
            raise TccError(f"the literal {text[:20]}{'...' if len(text) > 20 else ''} "
                           "overflows a float", _pos(tok)) from None
        return self._node(Num(value, _pos(tok)), nests=False)

    def name(self, items):
        (name, pos), = items
        return self._node(Ref(name, (), pos), nests=False)

    def read(self, items):
        (name, pos), _lsqb, args = items
        return self._node(Ref(name, tuple(_to_index(a) for a in args), pos), *args)

    def call(self, items):
        name, _lpar, args = items
        fn = str(name)
        if fn not in functions.TABLE:
            known = ", ".join(sorted(functions.TABLE))
            raise TccError(f"unknown function '{fn}' (the functions are {known})", _pos(name))
        n = functions.TABLE[fn].arity
        if len(args) != n:
            raise TccError(f"{fn}() takes {n} argument{'s' if n > 1 else ''}, "
                           f"not {len(args)}", _pos(name))
        return self._node(Call(fn, tuple(args), _pos(name)), *args)

    def binary(self, items):
        lhs, op, rhs = items
        return self._node(Bin(str(op), lhs, rhs, lhs.pos), lhs, rhs, nests=False)

    def power(self, items):
        lhs, _op, rhs = items
        return self._node(Bin("**", lhs, rhs, lhs.pos), lhs, rhs)

    def compare(self, items):
        lhs, op, rhs = items
        return self._node(Bin(str(op), lhs, rhs, lhs.pos), lhs, rhs, nests=False)

    def negate(self, items):
        tok, arg = items
        return self._node(Neg(arg, _pos(tok)), arg)

    def start(self, items):
        decls, stmts = [], []
        for it in items:
            if isinstance(it, list):
                decls.extend(it)
            else:
                stmts.append(it)
        return decls, stmts


# --------------------------------------------------------------- indices

_AFFINE_HELP = ("an index is a loop index, an integer, a dim, an integer multiple of "
                "a loop index, a sum of those, or a gather like y[b]")


def _to_affine(e: Expr) -> Affine:
    """Narrow an index expression to ``sum(c*v) + const`` (names unresolved)."""
    if isinstance(e, Num):
        if not isinstance(e.value, int):
            raise TccError(f"an index must be an integer, not {e}", e.pos)
        return Affine((), e.value, (), e.pos)
    if isinstance(e, Ref) and not e.index:
        return Affine(((e.tensor, 1),), 0, (), e.pos)
    if isinstance(e, Ref):
        raise TccError(f"a gather index ({e}) must stand alone: it takes no offset "
                       "or coefficient, and gathers do not nest", e.pos)
    if isinstance(e, Neg):
        return _scale(_to_affine(e.arg), -1, e.pos)
    if isinstance(e, Bin) and e.op in "+-":
        a, b = _to_affine(e.lhs), _to_affine(e.rhs)
        if e.op == "-":
            b = _scale(b, -1, b.pos)
        return _add(a, b, e.pos)
    if isinstance(e, Bin) and e.op == "*":
        a, b = _to_affine(e.lhs), _to_affine(e.rhs)
        if not a.terms:
            return _scale(b, a.const, e.pos)
        if not b.terms:
            return _scale(a, b.const, e.pos)
        raise TccError("an index may not multiply two loop indices", e.pos)
    raise TccError(_AFFINE_HELP, e.pos)


def _scale(a: Affine, c: int, pos) -> Affine:
    return Affine(tuple((v, k * c) for v, k in a.terms if k * c), a.const * c, (), pos)


def _add(a: Affine, b: Affine, pos) -> Affine:
    terms = dict(a.terms)
    for v, k in b.terms:
        terms[v] = terms.get(v, 0) + k
    return Affine(tuple((v, k) for v, k in terms.items() if k), a.const + b.const, (),
                  a.pos or pos)


def _to_index(e: Expr):
    if isinstance(e, Ref) and e.index:
        for sub in e.index:
            if isinstance(sub, Gather):
                raise TccError("gathers do not nest", sub.pos)
        return Gather(e.tensor, e.index, e.pos)
    return _to_affine(e)


# --------------------------------------------------------------- the parser

@functools.lru_cache(maxsize=1)
def _grammar_text() -> str:
    return resources.files("tcc.grammar").joinpath("loop.lark").read_text()


_TRANSFORMER = _ToIR()


_POSTLEX = _BracketNewlines()


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    # cache=True keeps the LALR tables in the temp dir between runs (keyed by the
    # grammar's hash), so a fresh process parses its first program in a few ms.
    try:
        return Lark(_grammar_text(), parser="lalr", lexer="contextual", postlex=_POSTLEX,
                    maybe_placeholders=False, transformer=_TRANSFORMER, cache=True)
    except OSError:  # pragma: no cover - an unwritable temp dir
        return Lark(_grammar_text(), parser="lalr", lexer="contextual", postlex=_POSTLEX,
                    maybe_placeholders=False, transformer=_TRANSFORMER)


def _expected(tokens) -> str:
    names = sorted({_TOKEN_TEXT.get(t, f"'{t.lower()}'" if t.isupper() and len(t) <= 8
                                    and t.isalpha() else t) for t in tokens})
    names = [n for n in names if not n.startswith("__")]
    if not names:
        return ""
    return "; expected " + (names[0] if len(names) == 1 else
                            "one of " + ", ".join(names))


def _syntax_error(err: lark.exceptions.UnexpectedInput) -> TccError:
    pos = Pos(err.line, err.column) if getattr(err, "line", -1) not in (-1, None) else None
    if isinstance(err, lark.exceptions.UnexpectedCharacters):
        ch = err.char
        shown = repr(ch) if ch.isprintable() else f"U+{ord(ch):04X}"
        msg = f"unexpected character {shown}"
        if not ch.isascii() and ch.isalpha():
            msg += " (names are ASCII: [A-Za-z_][A-Za-z0-9_]*)"
        return TccError(msg + _expected(err.allowed), pos)
    if isinstance(err, lark.exceptions.UnexpectedToken):
        tok = err.token
        if tok.type == "$END":
            what = "end of input"
            if getattr(tok, "end_line", None):   # $END borrows the last token's place
                pos = Pos(tok.end_line, tok.end_column)
        elif tok.type == "_NL":
            what = "end of line"
        else:
            what = repr(str(tok))
        return TccError(f"unexpected {what}" + _expected(err.expected), pos)
    if isinstance(err, lark.exceptions.UnexpectedEOF):
        return TccError("unexpected end of input" + _expected(err.expected), pos)
    return TccError(str(err).splitlines()[0], pos)


def parse(text: str, filename: str | None = None, known_dims=()) -> Program:
    """Parse .loop source text into a Program; raise TccError on bad input.

    known_dims: dim names to assume besides those the text declares (for a
    hand-written backward, whose names resolve against the forward program).
    """
    try:
        try:
            _TRANSFORMER.depth.clear()
            decls, stmts = _parser().parse(text + "\n")
        except lark.exceptions.UnexpectedInput as err:
            error = _syntax_error(err)
            if _POSTLEX.open and error.pos and error.pos.line > _POSTLEX.open[-1].line:
                tok = _POSTLEX.open[-1]
                error.message += (f" (the '{tok}' at line {tok.line}, column {tok.column} "
                                  "is never closed)")
            raise error from None
        except lark.exceptions.VisitError as err:  # pragma: no cover - defensive
            if isinstance(err.orig_exc, TccError):
                raise err.orig_exc from None
            raise
        finally:
            _TRANSFORMER.depth.clear()
        return _resolve(decls, stmts, known_dims)
    except TccError as err:
        raise err.attach(filename, text) from None
    except RecursionError:
        raise TccError(f"program nested too deeply (the limit is {MAX_DEPTH} levels)",
                       None, filename, text) from None


def read_source(text_or_path) -> tuple[str, str | None]:
    """(text, filename): a path to an existing .loop file, or program text."""
    if isinstance(text_or_path, os.PathLike) or (
            isinstance(text_or_path, str) and "\n" not in text_or_path
            and text_or_path.endswith(".loop")):
        path = os.fspath(text_or_path)
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    return str(text_or_path), None


# ---------------------------------------------------------- name resolution

def _bare_names(e: Expr) -> list[str]:
    """Names read with no brackets (scalars, loop indices, dims) on the sides of the
    comparison e, outside indices and outside comparisons nested in its sides."""
    out, todo = [], [e.lhs, e.rhs] if isinstance(e, Bin) else [e]
    while todo:
        n = todo.pop()
        if isinstance(n, Ref) and not n.index:
            out.append(n.tensor)
        elif isinstance(n, Bin) and n.op not in COMPARISONS:
            todo += [n.lhs, n.rhs]
        elif isinstance(n, Neg):
            todo.append(n.arg)
        elif isinstance(n, Call):
            todo += list(n.args)
    return out


def _check_name(name: str, pos, what: str):
    base = base_name(name)
    if base in _RESERVED or base in functions.TABLE:
        raise TccError(f"'{base}' is reserved and cannot name a {what}", pos)


def _resolve(decls: list[Decl], stmts: list[Stmt], known_dims=()) -> Program:
    """Classify names as dims, loop indices or tensors, and fill in loop lists."""
    dims: dict[str, Pos] = {d: None for d in known_dims}
    tensors: dict[str, Decl] = {}
    for d in decls:
        if d.role == "dim":
            _check_name(d.name, d.pos, "dim")
            dims.setdefault(d.name, d.pos)
        elif d.role == "batch":
            if d.name != "1":
                dims.setdefault(d.name, d.pos)
        else:
            _check_name(d.name, d.pos, "tensor")
            for k, entry in enumerate(d.shape or ()):
                if isinstance(entry, str):
                    _check_name(entry, d.shape_pos[k] if d.shape_pos else d.pos, "dim")
                    dims.setdefault(entry, d.pos)
            if d.name in tensors:
                first = tensors[d.name].pos
                raise TccError(f"tensor '{d.name}' is declared twice (first at line "
                               f"{first.line})", d.pos)
            tensors[d.name] = d
    for name, d in tensors.items():
        if name in dims:
            raise TccError(f"'{name}' names both a dim and a tensor", d.pos)

    computed = {s.target.tensor for s in stmts}
    out = []
    for s in stmts:
        out.append(_resolve_stmt(s, dims, tensors, computed))
    return Program(tuple(decls), tuple(out))


def _resolve_stmt(s: Stmt, dims, tensors, computed=frozenset()) -> Stmt:
    used: list[str] = []
    for v in index_vars(s.target.index):
        used.append(v)
    from .ir import reads
    for r in reads(s.expr):
        for v in index_vars(r.index):
            if v not in used:
                used.append(v)
    index_names = [v for v in used if v not in dims and v not in tensors and v not in computed]
    loops = s.loops if s.loops is not None else tuple(index_names)
    if s.target.tensor in dims or s.target.tensor in loops:
        what = "a dim" if s.target.tensor in dims else "a loop index of this statement"
        raise TccError(f"cannot assign to '{s.target.tensor}': it is {what}, not a tensor",
                       s.target.pos)
    where = s.pos_of if s.loops is not None else (lambda v: s.pos)
    for v in loops:
        _check_name(v, where(v), "loop index")
        if v in dims:
            raise TccError(f"loop index '{v}' is also a dim name", where(v))
        if v in tensors or v in computed:
            raise TccError(f"loop index '{v}' is also a tensor name", where(v))
    loopset = set(loops)
    for v, size in s.written:
        if isinstance(size, str) and size not in dims:
            what = "a loop index" if size in loopset else (
                "a tensor" if size in tensors or size in computed else "not declared")
            hint = f": declare it (dim {size}) or use it in a shape" if what == \
                "not declared" else ""
            raise TccError(f"the range of '{v}' must be a dim name or an integer, but "
                           f"'{size}' is {what}{hint}", s.pos_of(v))

    def fix_affine(a: Affine) -> Affine:
        terms, dterms = [], []
        for v, c in a.terms:
            if v in loopset:
                terms.append((v, c))
            elif v in dims:
                dterms.append((v, c))
            elif v in tensors or v in computed:
                raise TccError(f"'{v}' is a tensor used as an index: a gather position is "
                               "read from an indexed integer data tensor, like y[b], and a "
                               "scalar cannot be one", a.pos or s.pos)
            else:
                raise TccError(f"'{v}' in an index is neither a loop index of this statement "
                               f"({', '.join(loops) or 'none'}) nor a dim", a.pos or s.pos)
        return Affine(tuple(terms), a.const, tuple(dterms), a.pos)

    def fix_index(ix):
        if isinstance(ix, Gather):
            return Gather(ix.tensor, tuple(fix_affine(a) for a in ix.index), ix.pos)
        return fix_affine(ix)

    def fix_ref(e: Ref) -> Expr:
        if not e.index:
            if e.tensor in loopset:
                raise TccError(f"loop index '{e.tensor}' used as a value: loop indices "
                               "are positions, not numbers", e.pos)
            if e.tensor in dims:
                return DimVal(e.tensor, e.pos)
            return e
        return Ref(e.tensor, tuple(fix_index(i) for i in e.index), e.pos)

    def fix_expr(e: Expr) -> Expr:
        """Resolve names; a comparison with a loop index on a side compares positions."""
        if isinstance(e, Bin) and e.op in COMPARISONS and \
                any(n in loopset for n in _bare_names(e)):
            return IndexCmp(e.op, fix_index(_to_index(e.lhs)), fix_index(_to_index(e.rhs)),
                            e.pos)
        if isinstance(e, Ref):
            return fix_ref(e)
        if isinstance(e, Neg):
            return Neg(fix_expr(e.arg), e.pos)
        if isinstance(e, Bin):
            return Bin(e.op, fix_expr(e.lhs), fix_expr(e.rhs), e.pos)
        if isinstance(e, Call):
            return Call(e.fn, tuple(fix_expr(a) for a in e.args), e.pos)
        return e

    target = Ref(s.target.tensor, tuple(fix_index(i) for i in s.target.index), s.target.pos)
    return Stmt(tuple(loops), target, s.op, fix_expr(s.expr), s.pos,
                loop_pos=s.loop_pos, written=s.written)


__all__ = ["parse", "read_source", "COMPARISONS"]
