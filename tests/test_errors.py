"""Compile-time errors: each malformed program, the exact 1-based (line, col)
the error points at, and part of its message; then the same through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import tcc
import tcc.cli
from tcc.check import analyze

ROOT = Path(__file__).resolve().parent.parent

DEEP = "(" * 101 + "x[b]" + ")" * 101

# (id, source, line, col, substrings of the message)
ERRORS = [
    # ---- syntax
    ("unclosed_bracket_in_declaration", "input x[B\noutput y[B]\nfor b: y[b] = x[b]\n",
     2, 1, ("unexpected 'output'", "expected", "']'")),
    ("unclosed_bracket_at_end", "input x[B]\nfor b: y[b] = x[b\n",
     2, 18, ("unexpected end of input", "']'")),
    ("unclosed_paren_at_end", "input x[B]\nfor b: y[b] = exp(x[b]\n",
     2, 23, ("unexpected end of input", "')'")),
    ("wrong_closing_bracket", "input x[B]\nfor b: y[b] = x[b))\n",
     2, 18, ("unexpected ')'", "expected ']'")),
    ("extra_closing_bracket", "input x[B]\nfor b: y[b] = x[b]]\n",
     2, 19, ("unexpected ']'", "end of line")),
    ("bad_character", "input x[B]\nfor b: y[b] = x[b] $ 2\n",
     2, 20, ("unexpected character '$'", "expected")),
    ("missing_update_operator", "input x[B]\nfor b: y[b] x[b]\n",
     2, 13, ("unexpected 'x'", "an update")),
    ("unknown_update_operator", "input x[B]\nfor b: y[b] *= x[b]\n",
     2, 13, ("unexpected '*'", "'+=', '-=', '=', 'max=' or 'min='")),
    ("missing_colon", "input x[B]\nfor b y[b] = x[b]\n",
     2, 7, ("unexpected 'y'", "':'")),
    ("two_operators", "input x[B]\nfor b: y[b] = x[b] * * 2\n",
     2, 22, ("unexpected '*'", "a name", "a number")),
    ("empty_right_hand_side", "input x[B]\nfor b: y[b] =\n",
     2, 14, ("unexpected end of line",)),
    ("chained_comparison", "input x[B]\nfor b: y[b] = x[b] < 1 < 2\n",
     2, 24, ("unexpected '<'",)),
    ("name_starting_with_digit", "input 1x[B]\n",
     1, 7, ("unexpected '1'", "a name")),
    ("unknown_function", "input x[B]\nfor b: y[b] = foo(x[b])\n",
     2, 15, ("unknown function 'foo'", "exp")),
    ("tensor_called_like_function", "input x[B]\nfor b: y[b] = 1 + x(b)\n",
     2, 19, ("unknown function 'x'",)),
    ("max_with_one_argument", "input x[B]\nfor b: y[b] = max(x[b])\n",
     2, 15, ("max() takes 2 arguments, not 1",)),
    ("exp_with_two_arguments", "input x[B]\nfor b: y[b] = exp(x[b], 1)\n",
     2, 15, ("exp() takes 1 argument, not 2",)),
    ("min_with_three_arguments", "input x[B]\nfor b: y[b] = exp(x[b]) + min(x[b], 0, 1)\n",
     2, 27, ("min() takes 2 arguments, not 3",)),
    # ---- names and declarations
    ("undefined_tensor", "input x[B]\nfor b: y[b] = x[b] + z[b]\n",
     2, 22, ("undefined tensor 'z'",)),
    ("undefined_scalar", "input x[B]\nfor b: y[b] = x[b] * q\n",
     2, 22, ("undefined tensor 'q'",)),
    ("undefined_grad", "input x[B]\nfor b: y[b] = x.grad[b]\n",
     2, 15, ("undefined tensor 'x.grad'",)),
    ("write_to_input", "input x[B]\nfor b: x[b] += 1\n",
     2, 8, ("'x'", "input")),
    ("write_to_param", "param W[B]\nfor b: W[b] = 1\n",
     2, 8, ("'W'", "param")),
    ("write_to_data", "data d[B]\nfor b: d[b] -= 1\n",
     2, 8, ("'d'", "data")),
    ("declared_twice", "input x[B]\nparam x[B]\nfor b: y[b] = x[b]\n",
     2, 7, ("'x'", "declared twice")),
    ("declared_twice_on_one_line", "input x[B], x[B]\nfor b: y[b] = x[b]\n",
     1, 13, ("'x'", "declared twice")),
    ("input_declared_output", "input x[B]\noutput x\nfor b: y[b] = x[b]\n",
     2, 8, ("'x'", "declared twice")),
    ("empty_shape", "input x[]\ny = 1\n",
     1, 8, ("'x[]'", "scalar")),
    ("grad_grad_read", "input x[B]\nfor b: y[b] = x.grad.grad[b]\n",
     2, 21, ("X.grad.grad",)),
    ("grad_grad_declared", "input x.grad.grad[B]\n",
     1, 13, ("X.grad.grad",)),
    ("grad_grad_target", "input x[B]\nfor b: y.grad.grad[b] = x[b]\n",
     2, 14, ("X.grad.grad",)),
    ("T_grad_beside_T", "input T[B], T_grad[B]\nfor b: y[b] = T[b] + T_grad[b]\n",
     1, 13, ("'T_grad'", "T.grad")),
    ("T_grad_computed_beside_T", "input T[B]\nfor b: T_grad[b] = T[b]\n",
     2, 8, ("'T_grad'", "T.grad")),
    ("T_computed_beside_T_grad", "input T_grad[B]\nfor b: T[b] = T_grad[b]\n",
     2, 8, ("'T_grad'",)),
    ("x_grad_beside_x.grad", "input x.grad[B], x_grad[B]\nfor b: y[b] = x.grad[b] + x_grad[b]\n",
     1, 18, ("'x_grad'",)),
    ("dim_clashes_with_tensor", "dim B\ninput x[B], B[B]\nfor b: y[b] = x[b]\n",
     2, 13, ("'B'", "dim", "tensor")),
    ("dim_clashes_with_computed_tensor", "dim N\ninput x[B]\nfor b: N[b] = x[b]\n",
     3, 8, ("'N'",)),
    ("loop_index_clashes_with_tensor", "input x[B], i[B]\nfor i: y[i] = x[i]\n",
     2, 5, ("'i'", "tensor")),
    ("loop_index_clashes_with_computed_tensor",
     "input x[B]\nfor b: y[b] = x[b]\nfor y: z[y] = x[y]\n",
     3, 5, ("'y'",)),
    ("loop_index_clashes_with_dim", "dim i\ninput x[B]\nfor i: y[i] = x[i]\n",
     3, 5, ("'i'", "dim")),
    ("loop_index_as_target", "input x[B]\nfor b: b[b] = x[b]\n",
     2, 8, ("'b'",)),
    ("reserved_keyword", "input for[B]\n",
     1, 7, ("'for'", "reserved")),
    ("reserved_function_name", "input exp[B]\nfor b: y[b] = exp[b]\n",
     1, 7, ("'exp'", "reserved")),
    ("reserved_python_keyword", "input lambda[B]\nfor b: y[b] = lambda[b]\n",
     1, 7, ("'lambda'", "reserved")),
    ("reserved_dim_name", "input x[if]\nfor b: y[b] = x[b]\n",
     1, 9, ("'if'", "reserved")),
    ("reserved_loop_index", "input x[B]\nfor class: y[class] = x[class]\n",
     2, 5, ("'class'", "reserved")),
    ("non_ascii_name", "input x[B]\nfor b: y\u00e9[b] = x[b]\n",
     2, 9, ("ASCII",)),
    ("non_ascii_declaration", "input \u00e9[B]\n",
     1, 7, ("ASCII",)),
    ("batch_two", "batch 2\ninput x[B]\nfor b: y[b] = x[b]\n",
     1, 7, ("'batch'", "1")),
    ("batch_declared_twice", "batch B\nbatch 1\ninput x[B]\nfor b: y[b] = x[b]\n",
     2, 7, ("'batch'", "twice")),
    # ---- numbers and nesting
    ("float_index", "input x[B]\nfor b: y[b] = x[1.5]\n",
     2, 17, ("integer", "1.5")),
    ("float_index_with_integer_value", "input x[B]\nfor b: y[b] = x[b] + x[2.0]\n",
     2, 24, ("integer",)),
    ("overflowing_literal", "input x[B]\nfor b: y[b] = x[b] * 1e999\n",
     2, 22, ("1e999", "overflows")),
    ("overflowing_second_literal", "input x[B]\nfor b: y[b] = x[b] * 1.5e308 * 2e308\n",
     2, 32, ("2e308", "overflows")),
    ("nesting_deeper_than_100", f"input x[B]\nfor b: y[b] = {DEEP}\n",
     2, 115, ("deeper than 100",)),
    # ---- statements
    ("loop_index_listed_twice", "input x[B]\nfor b, b: y[b] = x[b]\n",
     2, 8, ("'b'", "twice")),
    ("loop_index_not_used", "input x[B]\nfor b, j: y[b] += x[b]\n",
     2, 8, ("'j'", "not used")),
    ("index_not_in_for_list", "input x[B, J]\nfor b: y[b] += x[b, j]\n",
     2, 21, ("'j'", "loop index")),
    ("define_updated_twice", "input x[B]\nfor b: y[b] = x[b]\nfor b: y[b] = x[b]\n",
     3, 1, ("'y'", "'='", "more than once", "line 2")),
    ("define_after_accumulate", "input x[B]\nfor b: y[b] += x[b]\nfor b: y[b] = x[b]\n",
     3, 1, ("'y'", "'='", "more than once")),
    ("accumulate_after_define",
     "input x[B]\noutput y[B]\nfor b: y[b] = x[b]\nfor b: y[b] += x[b]\n",
     4, 1, ("'y'", "'='", "line 3")),
    ("define_sums_over_an_index", "input x[B, J]\nfor b, j: y[b] = x[b, j]\n",
     2, 11, ("'='", "'j'", "plain index of the target")),
    ("define_affine_target", "input x[B]\noutput y[B]\nfor b: y[b + 1] = x[b]\n",
     3, 8, ("'='", "'b'", "plain index")),
    ("max_updated_twice",
     "input x[B, J]\nfor b, j: m[b] max= x[b, j]\nfor b, j: m[b] max= x[b, j]\n",
     3, 1, ("'m'", "max=")),
    ("max_then_accumulate",
     "input x[B, J]\nfor b, j: m[b] max= x[b, j]\nfor b, j: m[b] += x[b, j]\n",
     3, 1, ("'m'", "max=")),
    ("min_updated_twice",
     "input x[B, J]\nfor b, j: m[b] min= x[b, j]\nfor b, j: m[b] min= x[b, j]\n",
     3, 1, ("'m'", "'min='", "exactly one update")),
    ("accumulate_then_min",
     "input x[B, J]\nfor b, j: m[b] += x[b, j]\nfor b, j: m[b] min= x[b, j]\n",
     3, 1, ("'m'", "'min='")),
    ("read_before_last_update",
     "input x[B]\nfor b: u[b] += x[b]\nfor b: v[b] = u[b]\nfor b: u[b] += x[b]\n",
     3, 15, ("'u'", "updated later", "line 4")),
    ("reads_own_target", "input x[B]\nfor b: u[b] += x[b] * u[b]\n",
     2, 23, ("own target", "'u'")),
    ("reads_own_target_without_for", "input x[B]\ny[b] += x[b] + y[b]\n",
     2, 16, ("own target", "'y'")),
    # ---- recurrences (issue 11): each rule, with a hint naming it
    ("recurrence_reads_own_step", "input x[T, B]\nfor t, b: h[t, b] += x[t, b] + h[t, b]\n",
     2, 32, ("own target", "'h'", "to read an earlier step, write h[t - 1, b]")),
    ("recurrence_reads_a_constant_step", "input x[T, B]\nfor t, b: h[t, b] += x[t, b] * h[0, b]\n",
     2, 32, ("own target", "write h[t - 1, b]")),
    ("recurrence_reads_later_update_without_step",
     "input x[T, B], w[B]\nfor t, b: a[t, b] += x[t, b] * g[t, b]\n"
     "for t, b: g[t, b] = tanh(a[t, b]) * w[b]\n",
     2, 32, ("'g'", "updated later, at line 3", "to read an earlier step, write g[t - 1, b]")),
    ("recurrence_mixed_directions",
     "input x[T, B]\nfor t, b: a[t, b] += x[t, b] + h[t - 1, b] + h[t + 1, b]\n"
     "for t, b: h[t, b] = tanh(a[t, b])\n",
     2, 46, ("'h'", "later step", "earlier step", "one direction")),
    ("recurrence_same_step_before_its_update",
     "input x[T, B]\nfor t, b: h[t, b] = x[t, b] + g[t, b]\nfor t, b: g[t, b] += h[t - 1, b]\n",
     2, 31, ("'g'", "step being computed", "line 3", "only after its update",
             "write g[t - 1, b]")),
    ("recurrence_define_at_an_offset",
     "input x[T, B]\nfor t, b: h[t + 1, b] = tanh(x[t, b] + h[t, b])\n",
     2, 11, ("'='", "plainly", "'+='")),
    ("recurrence_target_without_step",
     "input x[T, B]\nfor t, b: a[t, b] += x[t, b] + h[t - 1, b]\nfor b: h[0, b] = tanh(a[0, b])\n",
     3, 8, ("'h'", "inside a recurrence", "step index", "axis 0")),
    ("recurrence_step_either_side",
     "input x[T, B]\nfor t, i in T, b: h[t, b] += x[t, b] * h[t - 1 + i, b]\n",
     2, 40, ("'h'", "either side", "one direction")),
    ("conflicting_ranges", "input x[B], w[J]\nfor b: y[b] = x[b] * w[b]\n",
     2, 22, ("'b'", "B", "J", "'x'", "'w'")),
    ("rank_mismatch", "input x[B, J]\nfor b: y[b] = x[b]\n",
     2, 15, ("'x'", "2 axes", "1")),
    ("two_loop_indices_multiplied", "input x[B, J]\nfor b, j: y[b] += x[b * j, j]\n",
     2, 21, ("multiply",)),
    ("unfixed_indices_share_an_expression", "input x[B]\noutput y\nfor i, j: y += x[i + j]\n",
     3, 1, ("i, j", "share")),
    ("output_nobody_computes", "input x[B]\noutput y[B], z[B]\nfor b: y[b] = x[b]\n",
     2, 14, ("output 'z'", "no statement computes it")),
    # ---- gathers
    ("gather_through_input", "input x[B], y[B]\nfor b: L[b] = x[y[b]]\n",
     2, 17, ("'y'", "input", "data")),
    ("gather_through_param", "input p[B, K]\nparam y[B]\nfor b: L[b] = p[b, y[b]]\n",
     3, 20, ("'y'", "param", "data")),
    ("gather_through_computed",
     "input x[B]\ndata y[B]\nfor b: z[b] = y[b]\nfor b: L[b] = x[z[b]]\n",
     4, 17, ("'z'", "computed", "data")),
    ("gather_through_undefined", "input p[B, K]\nfor b: L[b] = p[b, q[b]]\n",
     2, 20, ("'q'",)),
    ("gather_with_offset", "input p[B, K]\ndata y[B]\nfor b: L[b] = p[b, y[b] + 1]\n",
     3, 20, ("y[b]", "offset")),
    ("gather_with_coefficient", "input p[B, K]\ndata y[B]\nfor b: L[b] = p[b, 2*y[b]]\n",
     3, 22, ("y[b]",)),
    ("nested_gather", "input p[B, K]\ndata y[B], z[B]\nfor b: L[b] = p[b, y[z[b]]]\n",
     3, 22, ("do not nest",)),
    ("loop_index_as_value", "input p[B, K]\nfor b, k: L[b] += p[b, k] * k\n",
     2, 29, ("loop index 'k'", "value")),
    # ---- index comparisons
    ("comparison_gathers_through_input",
     "input p[B, K], y[B]\nfor b, k: L[b] += p[b, k] * (k == y[b])\n",
     2, 35, ("compares positions", "gather through 'y'", "declared input", "'data'")),
    ("comparison_of_an_index_with_a_value",
     "input p[B, K], x[B]\nfor b, k: L[b] += p[b, k] * (k < x[b])\n",
     2, 34, ("compares positions", "gather through 'x'", "declared input")),
    ("comparison_side_not_an_index",
     "input p[B, K]\nfor b, k: L[b] += p[b, k] * (k == exp(b))\n",
     2, 35, ("an index is a loop index",)),
    ("comparison_side_not_an_integer", "input p[B, K]\nfor b, k: L[b] += p[b, k] * (k < 2.5)\n",
     2, 34, ("an index must be an integer, not 2.5",)),
    ("comparison_fixes_no_range", "input x[N]\nfor i, j: y[i] += x[i] * (i == j)\n",
     2, 8, ("cannot infer the range of index 'j'", "a comparison fixes no range")),
    ("comparison_gather_with_offset",
     "input p[B, K]\ndata y[B]\nfor b, k: L[b] += p[b, k] * (k == y[b] + 1)\n",
     3, 35, ("y[b]", "offset")),
    ("loop_index_times_a_comparison",
     "input p[B, K]\nfor b, k: L[b] += k * (k == 0) * p[b, k]\n",
     2, 19, ("loop index 'k' used as a value",)),
    # ---- written ranges
    ("written_range_not_a_dim", "input x[N]\nfor n in M: y[n] += x[n]\n",
     2, 5, ("range of 'n'", "'M' is not declared", "dim M")),
    ("written_range_is_a_tensor", "input x[N]\nfor n in x: y[n] += x[n]\n",
     2, 5, ("range of 'n'", "'x' is a tensor")),
    ("written_range_against_a_literal", "input x[4]\nfor n in 3: y[n] += x[n]\n",
     2, 21, ("'n' is written to range over 3", "'x' ranges over 4")),
    ("written_range_dim_with_no_size", "dim M\ninput x[N]\noutput y\nfor n in M: y += x[n]\n",
     4, 5, ("dim 'M' has no size",)),
    # ---- constant targets and static bounds
    ("stacked_past_a_declared_axis",
     "input x[B]\noutput w[B, 1]\nfor b: w[b, 0] += x[b]\nfor b: w[b, 1] += x[b]\n",
     4, 13, ("'w' axis 1 reaches position 1", "size 1")),
    ("stacked_and_plain_axis",
     "input x[B, J]\nfor b, j: w[b, 0] += x[b, j]\nfor b, j: w[b, j] += x[b, j]\n",
     2, 11, ("shape of 'w'", "index 0", "constant in every update")),
    ("constant_index_past_a_known_axis",
     "param W[1, 3]\ninput x[B, I]\nfor b, i: y[b] += W[1, i] * x[b, i]\n",
     3, 21, ("'W' axis 0 reaches position 1", "size 1")),
    ("shift_reaches_a_negative_position", "input x[T]\noutput y[T]\nfor t: y[t] += x[t - 1]\n",
     3, 18, ("t - 1", "'x' axis 0", "position -1", "for i in N")),
    ("affine_index_past_a_literal_size",
     "input x[3], w[3]\noutput y[3]\nfor n, i: y[n] += x[n + i] * w[i]\n",
     3, 21, ("n + i", "'x' axis 0", "position 4", "size 3")),
    ("negative_constant_index", "input x[B, J]\nfor b: y[b] += x[b, -1]\n",
     2, 21, ("'x' axis 1", "position -1")),
    # ---- seeds a backward adds to
    ("seed_defined_with_equals", "input x[B]\ndata y.grad[B]\nfor b: y.grad[b] = x[b]\n",
     3, 8, ("seed 'y.grad'", "'='", "'+='")),
    ("min_into_a_seed", "input x[B]\ndata y.grad[B]\nfor b: y.grad[b] min= x[b]\n",
     3, 8, ("seed 'y.grad'", "'min='")),
    # ---- a scalar where an index goes
    ("scalar_used_as_an_index", "input x[B]\ndata ks\noutput y\ny += x[ks]\n",
     4, 8, ("'ks' is a tensor used as an index", "y[b]")),
    ("scalar_used_as_an_index_with_for", "input x[B]\ndata ks\nfor b: y[b] += x[ks] * x[b]\n",
     3, 18, ("'ks' is a tensor used as an index",)),
    # ---- positions after continuation lines and CRLF
    ("error_after_continued_lines", "input x[B,\n   J]\nfor b, j: y[b] += x[\n  b, j] + z[b]\n",
     4, 11, ("undefined tensor 'z'",)),
    ("error_on_a_continuation_line", "input x[B]\nfor b: y[b] = (x[b] +\n   foo(x[b]))\n",
     3, 4, ("unknown function 'foo'",)),
    ("crlf_line_endings", "input x[B]\r\nfor b: y[b] = x[b] + z[b]\r\n",
     2, 22, ("undefined tensor 'z'",)),
    ("dim_with_no_size", "dim N\ninput x\noutput y\ny = x * N\n",
     4, 9, ("dim 'N' has no size",)),
    ("dim_offset_with_no_size", "dim D\ninput x[T]\nfor t: y[t] = x[t + D]\n",
     3, 17, ("dim 'D' has no size",)),
    ("data_named_like_a_seed", "input x[B]\ndata y.grad[B]\nfor b: y[b] = x[b] * y.grad[b]\n",
     2, 6, ("'y.grad' is the name of the gradient of output 'y'",)),
    ("computed_named_like_a_gradient", "input x[B]\nfor b: x.grad[b] = x[b] * 2\n",
     2, 8, ("'x.grad' is the name of the gradient of input 'x'",)),
]

IDS = [e[0] for e in ERRORS]


def compile_error(src: str) -> tcc.TccError:
    """The TccError that parsing and checking ``src`` raises."""
    with pytest.raises(tcc.TccError) as info:
        analyze(tcc.parse(src))
    return info.value


def test_the_table_is_big_enough():
    assert len(ERRORS) >= 25
    assert len(set(IDS)) == len(IDS)


@pytest.mark.parametrize("name, src, line, col, parts", ERRORS, ids=IDS)
def test_error_position_and_message(name, src, line, col, parts):
    err = compile_error(src)
    assert (err.line, err.col) == (line, col), err.message
    assert (err.pos.line, err.pos.col) == (line, col)
    for part in parts:
        assert part in err.message
    assert err.message in str(err)
    assert f":{line}:{col}: error: " in str(err)


# ------------------------------------------------------------ more nesting

@pytest.mark.parametrize("src", [
    "(" * 101 + "1" + ")" * 101,
    "-" * 150 + "x[b]",
    "exp(" * 101 + "x[b]" + ")" * 101,
    "x[b] ** (" * 101 + "x[b]" + ")" * 101,
    "(" * 5000 + "1" + ")" * 5000,
    "-" * 5000 + "1",
], ids=["parens", "unary_minus", "calls", "power_parens", "parens_5000", "minus_5000"])
def test_nesting_deeper_than_100_is_an_error(src):
    err = compile_error(f"input x[B]\nfor b: y[b] = {src}\n")
    assert err.line == 2
    assert "100" in err.message


@pytest.mark.parametrize("src", [
    "(" * 100 + "1" + ")" * 100,
    "exp(" * 100 + "1" + ")" * 100,
    "-" * 100 + "1",
    "(" * 99 + "x[b]" + ")" * 99,
], ids=["parens", "calls", "unary_minus", "parens_around_a_read"])
def test_nesting_of_100_is_fine(src):
    """Exactly 100 levels (the brackets of x[b] are a level) are allowed."""
    analyze(tcc.parse(f"input x[B]\nfor b: y[b] = x[b] + {src}\n"))


@pytest.mark.parametrize("op", ["+", "*", "-"])
def test_long_flat_chains_are_not_nesting(op):
    """150 terms joined by one left-associative operator nest nothing."""
    src = f" {op} ".join(["x[b]"] * 150)
    analyze(tcc.parse(f"input x[B]\nfor b: y[b] = {src}\n"))


def test_errors_are_tcc_errors_not_python_exceptions():
    """Odd input raises TccError (or parses), never another exception."""
    odd = ["", "\n\n", "#", "for", "input", "input x[B", "for b: y[b] = x[b]",
           "y = ", "= 1", "y[] = 1", "input x[B]\nfor : y = x[0]\n", "\x00", "input x[-1]",
           "input x[B]\nfor b: y[b] = x[b] +\n", "max= 1", "input x[B]\nfor b: y[b] = (((",
           "input x[99999999999999999999999]\ny = x[99999999999999999999999]\n",
           "input x[B]\nfor b: y[b] = x[b] ** ** 2\n", "\ufeffinput x[B]\n"]
    for src in odd:
        try:
            analyze(tcc.parse(src))
        except tcc.TccError as err:
            assert err.message
            assert "Traceback" not in err.format()


# ----------------------------------------------------------------- the CLI

def write(tmp_path: Path, src: str, name: str = "bad.loop") -> Path:
    path = tmp_path / name
    path.write_bytes(src.encode("utf-8"))
    return path


def check_report(stderr: str, path: Path, src: str, line: int, col: int) -> None:
    """``FILE:LINE:COL: error: ...``, the source line, a caret under the column."""
    lines = stderr.splitlines()
    assert lines[0].startswith(f"{path}:{line}:{col}: error: "), stderr
    source_line = src.splitlines()[line - 1].expandtabs(1)
    assert lines[1].endswith(source_line), stderr
    indent = len(lines[1]) - len(source_line)
    assert lines[2].rstrip() == " " * (indent + col - 1) + "^", stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("name, src, line, col, parts", ERRORS, ids=IDS)
def test_cli_reports_error_with_caret(name, src, line, col, parts, tmp_path, capsys):
    path = write(tmp_path, src)
    status = tcc.cli.main(["parse", str(path)])
    out, err = capsys.readouterr()
    assert status == 1
    assert out == ""
    check_report(err, path, src, line, col)
    for part in parts:
        assert part in err.splitlines()[0]


def test_cli_missing_file_exits_2(tmp_path, capsys):
    missing = tmp_path / "nope.loop"
    assert tcc.cli.main(["parse", str(missing)]) == 2
    out, err = capsys.readouterr()
    assert "nope.loop" in err
    assert "Traceback" not in out + err


def test_cli_non_utf8_file_is_an_error_not_a_crash(tmp_path, capsys):
    path = tmp_path / "latin1.loop"
    path.write_bytes(b"input x[B]\n# caf\xe9\nfor b: y[b] = x[b]\n")
    assert tcc.cli.main(["parse", str(path)]) == 1
    out, err = capsys.readouterr()
    assert "UTF-8" in err
    assert "Traceback" not in out + err


def test_cli_good_file_exits_0(tmp_path, capsys):
    path = write(tmp_path, "input x[B]\nfor b: y[b] = x[b]\n", "good.loop")
    assert tcc.cli.main(["parse", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "for b: y[b] = x[b]" in out
    assert err == ""


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as info:
        tcc.cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tcc")
    for command in ("parse", "grad", "compile", "check", "explain"):
        assert command in out


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as info:
        tcc.cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"tcc {tcc.__version__}"


def test_cli_subprocess(tmp_path):
    """A real ``python -m tcc parse bad.loop``: no traceback, status 1."""
    src = "input x[B]\nfor b: y[b] = x[b] + z[b]\n"
    path = write(tmp_path, src)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "tcc", "parse", str(path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    check_report(proc.stderr, path, src, 2, 22)
    assert "undefined tensor 'z'" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
