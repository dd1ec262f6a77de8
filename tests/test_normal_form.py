"""The golden-file comparer: backward programs as normalized sums of products.

Reordered statements and factors, renamed loop variables and temporaries,
spacing, ``^`` for ``**`` and the way constants are written must not matter;
a sign, a number, a factor or an index must.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from normal_form import Term, assert_same, normal_form, render, same  # noqa: E402

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "golden")

SOFTMAX = """\
for b, j: s.grad[b, j] += p.grad[b, j] * exp(s[b, j]) / Z[b]
for b, j: Z.grad[b] -= p.grad[b, j] * exp(s[b, j]) / Z[b] ** 2
for b, j: s.grad[b, j] += Z.grad[b] * exp(s[b, j])
"""

UGRNN = """\
for b, j:    Br.grad[j] -= 1/B * Rt.grad[b, j]
for b, j, k: Wxr.grad[j, k] += 1/B * Rt.grad[b, j] * x[b, k]
for b, j, i: Whr.grad[j, i] += 1/B * Rt.grad[b, j] * h[b, i]
for b, j, i: h.grad[b, i] += Rt.grad[b, j] * Whr[j, i]
"""

OPT_SOFTMAX = """\
for b, j: e[b] += p.grad[b, j] * p[b, j]
for b, j: s.grad[b, j] += p[b, j] * (p.grad[b, j] - e[b])
"""


# ------------------------------------------------------------- equal forms

def test_terms_are_canonical_and_readable():
    nf = normal_form(SOFTMAX)
    assert len(nf) == 3
    assert all(isinstance(t, Term) for t in nf)
    assert [t.target for t in nf] == sorted(t.target for t in nf)
    assert {t.target for t in nf} == {"s.grad[v0,v1]", "Z.grad[v0]"}
    z = next(t for t in nf if t.target.startswith("Z.grad"))
    assert z.sign == -1 and z.coef == -1.0
    assert z.den == ("Z[v0]", "Z[v0]")                    # Z ** 2 is Z * Z
    assert sorted(z.num) == list(z.num)
    assert "Z.grad[v0] -=" in render(nf)


def test_statement_order_spacing_factor_order_and_loop_names_do_not_matter():
    shuffled = """\
for c, k: s.grad[c,k] += exp(s[c,k]) * Z.grad[c]
for q, r:   Z.grad[q]  -=  exp(s[q, r]) * p.grad[q, r] / (Z[q] * Z[q])
for u, w: s.grad[u, w] += exp(s[u, w]) / Z[u] * p.grad[u, w]
"""
    assert same(SOFTMAX, shuffled)
    assert_same(shuffled, SOFTMAX)


def test_loop_order_in_the_for_list_does_not_matter():
    assert same("for b, j, i: h.grad[b, i] += Rt.grad[b, j] * Whr[j, i]\n",
                "for i, b, j: h.grad[b, i] += Whr[j, i] * Rt.grad[b, j]\n")


def test_constants_fold_and_are_written_any_way():
    a = "for b, j: W.grad[j] += 1/B * 2 * g[b, j]\n"
    assert same(a, "for b, j: W.grad[j] += g[b, j] * 2 / B\n")
    assert same(a, "for b, j: W.grad[j] += 4 * g[b, j] / (2 * B) * 0.5 * 2\n")
    assert same(a, "for b, j: W.grad[j] -= -2.0 * g[b, j] / B\n")
    assert same(a, "for b, j: W.grad[j] += g[b, j] / B\nfor b, j: W.grad[j] += g[b, j] / B\n")


def test_powers_are_repeated_factors():
    assert same("for i: x.grad[i] += g[i] * x[i] ** 2\n",
                "for i: x.grad[i] += g[i] * x[i] * x[i]\n")
    assert same("for i: x.grad[i] += g[i] * x[i] ^ 2\n", "for i: x.grad[i] += g[i] * x[i] ** 2\n")
    assert same("for i: x.grad[i] += g[i] * x[i] ** -2\n", "for i: x.grad[i] += g[i] / x[i] ** 2\n")
    assert not same("for i: x.grad[i] += g[i] * x[i] ** 3\n",
                    "for i: x.grad[i] += g[i] * x[i] ** 2\n")


def test_products_distribute_over_sums():
    assert same(OPT_SOFTMAX, """\
for b, j: e[b] += p.grad[b, j] * p[b, j]
for b, j: s.grad[b, j] += p[b, j] * p.grad[b, j]
for b, j: s.grad[b, j] -= e[b] * p[b, j]
""")


def test_temporaries_match_up_to_renaming():
    renamed = """\
for c, k: tmp_sum[c] += p[c, k] * p.grad[c, k]
for c, k: s.grad[c, k] += p[c, k] * (p.grad[c, k] - tmp_sum[c])
"""
    assert same(OPT_SOFTMAX, renamed)
    # ... but not up to a different definition
    other = renamed.replace("tmp_sum[c] += p[c, k] * p.grad[c, k]", "tmp_sum[c] += p.grad[c, k]")
    assert not same(OPT_SOFTMAX, other)


def test_a_temporary_defined_by_several_statements_or_by_eq():
    a = """\
for b, i: g[b, i] = y.grad[b, i] * (z[b, i] + v[i] > 0)
for b, i, k: x.grad[b, k] += H[i, k] * g[b, i]
"""
    b = """\
for b, i: mask[b, i] += (v[i] + z[b, i] > 0) * y.grad[b, i]
for b, i, k: x.grad[b, k] += mask[b, i] * H[i, k]
"""
    assert same(a, b)


def test_comparisons_are_normalized():
    assert same("u.grad += y.grad * (u > 0)\n", "u.grad += (0 < u) * y.grad\n")
    assert same("u.grad += y.grad * (u >= w)\n", "u.grad += (w <= u) * y.grad\n")
    assert same("u.grad += y.grad * (u == w)\n", "u.grad += (w == u) * y.grad\n")
    assert not same("u.grad += y.grad * (u > 0)\n", "u.grad += y.grad * (u >= 0)\n")
    assert not same("u.grad += y.grad * (u > w)\n", "u.grad += y.grad * (w > u)\n")


def test_index_comparisons_are_normalized_with_the_loop():
    assert same("for b, k: s.grad[b, k] += L.grad[b] * (k == y[b])\n",
                "for c, j: s.grad[c, j] += (y[c] == j) * L.grad[c]\n")
    assert same("for t, j: a.grad[t, j] += o.grad[t] * (j <= t)\n",
                "for u, i: a.grad[u, i] += (u >= i) * o.grad[u]\n")
    assert same("for i, j: A.grad[i, j] += t.grad * (i == j)\n",
                "for a, b: A.grad[a, b] += t.grad * (b == a)\n")
    assert not same("for t, j: a.grad[t, j] += o.grad[t] * (j <= t)\n",
                    "for t, j: a.grad[t, j] += o.grad[t] * (j < t)\n")
    assert not same("for t, j: a.grad[t, j] += o.grad[t] * (j <= t)\n",
                    "for t, j: a.grad[t, j] += o.grad[t] * (t <= j)\n")
    assert not same("for b, k: s.grad[b, k] += L.grad[b] * (k == y[b])\n",
                    "for b, k: s.grad[b, k] += L.grad[b] * (k == z[b])\n")


def test_min_is_not_max():
    assert not same("for b, j: s.grad[b] min= s[b, j]\n", "for b, j: s.grad[b] max= s[b, j]\n")


def test_gather_and_affine_indices_rename_with_the_loop():
    assert same("for b: s.grad[b, y[b]] -= L.grad[b]\n", "for c: s.grad[c, y[c]] -= L.grad[c]\n")
    assert same("for n, k, i: x.grad[2*n + i, k] += f.grad[n] * W[k, i]\n",
                "for a, c, d: x.grad[d + 2*a, c] += W[c, d] * f.grad[a]\n")
    assert not same("for n, k, i: x.grad[2*n + i, k] += f.grad[n] * W[k, i]\n",
                    "for n, k, i: x.grad[n + 2*i, k] += f.grad[n] * W[k, i]\n")


def test_cancelling_terms_vanish():
    assert normal_form("for i: x.grad[i] += g[i]\nfor i: x.grad[i] -= g[i]\n") == ()


def test_function_arguments_are_normalized_inside():
    assert same("for i: x.grad[i] += g[i] * exp(a[i] * 2 + c[i])\n",
                "for j: x.grad[j] += exp(c[j] + 2 * a[j]) * g[j]\n")
    assert not same("for i: x.grad[i] += g[i] * exp(a[i] * 2 + c[i])\n",
                    "for i: x.grad[i] += g[i] * exp(a[i] * 3 + c[i])\n")


# ----------------------------------------------------------- changed forms

@pytest.mark.parametrize("change", [
    ("Z.grad[b] -= p.grad", "Z.grad[b] += p.grad"),            # a sign
    ("/ Z[b] ** 2", "/ Z[b] ** 3"),                               # a number
    ("* exp(s[b, j]) / Z[b]\n", "* exp(s[b, j]) / Z[b] * 2\n"),   # a coefficient
    ("s.grad[b, j] += Z.grad[b] * exp", "s.grad[b, j] += Z.grad[b] * tanh"),  # a factor
    ("s.grad[b, j] += Z.grad[b] * exp(s[b, j])", "s.grad[b, j] += Z.grad[b]"),  # a dropped one
    ("Z.grad[b] * exp(s[b, j])", "Z.grad[b] * exp(s[b, j]) * p[b, j]"),          # an extra one
    ("Z.grad[b] * exp(s[b, j])", "Z.grad[b] * exp(s[j, b])"),    # an index
])
def test_a_changed_program_compares_different(change):
    old, new = change
    assert old in SOFTMAX
    changed = SOFTMAX.replace(old, new, 1)
    assert not same(SOFTMAX, changed)
    with pytest.raises(AssertionError, match="differ as sums of products"):
        assert_same(changed, SOFTMAX)


def test_a_dropped_statement_or_batch_factor_compares_different():
    lines = UGRNN.splitlines(keepends=True)
    assert not same(UGRNN, "".join(lines[:-1]))
    assert not same(UGRNN, UGRNN.replace("1/B * Rt.grad[b, j] * h[b, i]",
                                         "Rt.grad[b, j] * h[b, i]"))
    # the course document's slip, h.grad[b, j], is a different program
    assert not same(UGRNN, UGRNN.replace("h.grad[b, i]", "h.grad[b, j]"))


def test_transposed_operand_compares_different():
    assert not same("for i, j: y.grad[i] += A[i, j] * x[j]\n",
                    "for i, j: y.grad[i] += A[j, i] * x[j]\n")


# ----------------------------------------------------------- golden files

@pytest.mark.parametrize("name,answer", [("ttic_softmax", SOFTMAX), ("ttic_ugrnn_linear", UGRNN)])
def test_golden_files_hold_the_course_answers(name, answer):
    path = os.path.join(GOLDEN, f"{name}.grad.loop")
    assert_same(path, answer)                        # a path is read as a file
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert_same(text, answer)
    import tcc
    from tcc.check import analyze
    analyze(tcc.parse(text))                         # golden files are complete programs
