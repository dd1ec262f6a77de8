"""A catalogue of small .loop programs beyond the course examples.

Each entry is a ``Case(name, text, sizes=None, covers=...)``: ``text`` is a
complete, valid program (LANGUAGE.md section 1); ``sizes`` are the dim sizes
to check it with (``None``: tcc's defaults); ``covers`` says which feature of
the language it is there for. Every program here is meant to be run by every
backend and checked against finite differences, so the sizes are tiny (the
reference interpreter is slow).

Import it from another test module with::

    from catalogue import CATALOGUE, COURSE_EXAMPLES, by_name

(``tests/`` is on ``sys.path`` under pytest; the test modules also put it
there explicitly, so the import works with or without a ``tests/__init__.py``).
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES_DIR = os.path.join(HERE, "data", "examples")


@dataclass(frozen=True)
class Case:
    name: str
    text: str
    sizes: dict | None = None
    covers: tuple[str, ...] = field(default=())

    def __post_init__(self):
        object.__setattr__(self, "text", textwrap.dedent(self.text).strip() + "\n")


def _c(name, text, sizes=None, covers=()):
    return Case(name, text, sizes, tuple(covers))


CATALOGUE: list[Case] = [
    # ------------------------------------------------------------ functions
    _c("fn_exp_tanh_sigmoid", """
        # smooth one-argument functions on an unconstrained input
        input x[N]
        output y[N]
        for i: y[i] = exp(x[i]) + tanh(x[i]) - 2 * sigmoid(x[i])
        """, {"N": 4}, ["exp", "tanh", "sigmoid"]),
    _c("fn_sin_cos", """
        input x[N]
        param w[N]
        output y
        for i: y += sin(x[i]) * cos(w[i]) + cos(x[i] * w[i])
        """, {"N": 3}, ["sin", "cos", "scalar output", "param without batch"]),
    _c("fn_log_sqrt", """
        # log and sqrt: tcc check keeps the inputs positive
        input x[N]
        input z[N]
        output y[N]
        for i: y[i] = log(x[i]) * sqrt(z[i]) + sqrt(x[i] * z[i])
        """, {"N": 3}, ["log", "sqrt"]),
    _c("fn_relu_abs", """
        input x[N]
        output y[N]
        for i: y[i] = relu(x[i]) - 3 * abs(x[i]) + relu(-x[i]) * x[i]
        """, {"N": 5}, ["relu", "abs", "unary minus"]),
    _c("fn_max_min_two_arg", """
        input a[N], c[N]
        output y[N]
        for i: y[i] = max(a[i], c[i]) * 2 - min(a[i], 0.5 * c[i]) + max(a[i], 0)
        """, {"N": 5}, ["max two-arg", "min two-arg"]),
    _c("fn_nested", """
        input x[N]
        output y
        for i: y += sigmoid(tanh(exp(-x[i] ** 2)) * sin(x[i]))
        """, {"N": 3}, ["nested calls", "unary minus over a power"]),

    # ------------------------------------------------------------ operators
    _c("op_arith", """
        input a[N], c[N]
        output y[N]
        for i: y[i] = (a[i] + c[i]) * (a[i] - c[i]) / (1 + a[i] ** 2) - c[i] / 4
        """, {"N": 4}, ["+", "-", "*", "/", "constant"]),
    _c("op_power_const", """
        input x[N]
        output y[N]
        for i: y[i] = x[i] ** 3 - 2 * x[i] ^ 2 + (x[i] ** 2) ** 2
        """, {"N": 4}, ["** constant", "^", "power of a power"]),
    _c("op_power_fractional_negative", """
        # a fractional exponent keeps tcc check's inputs positive
        input x[N]
        output y[N]
        for i: y[i] = x[i] ** 1.5 + x[i] ** -2 - 0.5 * x[i] ** -0.5
        """, {"N": 3}, ["** fractional", "** negative"]),
    _c("op_power_tensor_exponent", """
        input a[N], e[N]
        output y
        for i: y += a[i] ** e[i]
        """, {"N": 3}, ["** tensor exponent"]),
    _c("op_unary_minus", """
        input x[N], w[N]
        output y[N]
        for i: y[i] = -x[i] * w[i] + -(x[i] - 1) ** 2 - -w[i]
        """, {"N": 4}, ["unary minus"]),
    _c("op_comparison_masks", """
        # comparisons are 0/1 masks with derivative 0
        input x[N], w[N]
        output y[N]
        for i: y[i] = (x[i] * (x[i] > 0.1) + w[i] * (x[i] <= w[i]) + x[i] * w[i] * (w[i] != 0)
                       + (x[i] < w[i]) * (w[i] >= -5) + (x[i] == 7) * w[i])
        """, {"N": 5}, ["comparisons", "masks"]),

    _c("mask_only_input", """
        # w is read only inside a comparison: its gradient is zero, and no
        # statement computes it
        input x[N], w[N]
        output y[N]
        for i: y[i] = x[i] * (w[i] > 0) - (w[i] < x[i])
        """, {"N": 4}, ["comparison mask", "input with a zero gradient"]),

    # ------------------------------------------------------------ indices
    _c("idx_affine_stride_offset", """
        # a 1-D convolution with stride 2 and an offset of 1: the window is inferred
        input x[L]
        param w[F]
        output y
        for n, i: y[n] += x[2*n + i + 1] * w[i]
        """, {"L": 9, "F": 3}, ["affine", "stride", "offset", "inferred range"]),
    _c("idx_affine_dim_offset", """
        # the offset is a dim: read the second half of x
        input x[M]
        param w[N]
        output y
        for i: y += w[i] * x[i + N] ** 2
        """, {"N": 2, "M": 5}, ["affine with a dim"]),
    _c("idx_shift_difference", """
        # a shifted difference: t is plain only in the target, so it ranges over L - 2
        input x[L]
        output d
        for t: d[t] = x[t + 2] - x[t + 1] * x[t + 1]
        """, {"L": 5}, ["affine offset", "inferred range", "read twice"]),
    _c("idx_constant", """
        input x[R, K]
        output y[K]
        for k: y[k] = x[0, k] * x[2, k] - x[1, k]
        """, {"R": 3, "K": 2}, ["constant index"]),
    _c("idx_gather_read", """
        # an embedding lookup: repeated ids must accumulate in E.grad
        input E[V, D]
        data w[B, T]
        output h[B, D]
        for b, t, d: h[b, d] += E[w[b, t], d]
        """, {"V": 3, "D": 2, "B": 2, "T": 3}, ["gather read", "scatter in the backward"]),
    _c("idx_gather_target_minus", """
        # a gather on the target side, with -=, mixed with +=
        input x[B], c[K]
        data y[B]
        output h[K]
        for k: h[k] += c[k] ** 2
        for b: h[y[b]] -= x[b] * x[b]
        """, {"B": 5, "K": 3}, ["gather target", "-=", "read twice", "+= and -= mixed"]),
    _c("idx_xent_gather", """
        # cross-entropy by log-sum-exp with a gather label: s.grad[b, y[b]] -= L.grad[b]
        input s[B, K]
        data y[B]
        output L[B]
        for b, k: Z[b] += exp(s[b, k])
        for b: L[b] = log(Z[b]) - s[b, y[b]]
        """, {"B": 3, "K": 4}, ["gather read", "-= scatter in the backward"]),
    _c("idx_diagonal", """
        input A[N, N]
        param v[N]
        output t
        for i: t += A[i, i] * v[i] ** 2
        """, {"N": 3}, ["diagonal read"]),
    _c("idx_transpose", """
        input A[N, M]
        data G[M, N]
        output y
        for i, j: T[j, i] = A[i, j]
        for i, j: y += T[i, j] * G[i, j] * T[i, j]
        """, {"N": 2, "M": 3}, ["transpose", "read twice", "data no grad"]),

    # ------------------------------------------------------------ scalars
    _c("scalar_all", """
        # a 0-d input, a 0-d param, a 0-d data, a scalar output
        input a
        param w0
        data k0
        output f
        f = a * w0 + sin(a) * k0 - w0 ** 2
        """, None, ["0-d input", "0-d param", "0-d data", "scalar output", "no for"]),
    _c("reduce_sum", """
        # the simplest reduction: x.grad[i] += f.grad
        input x[N]
        output f
        for i: f += x[i]
        """, {"N": 3}, ["sum to a scalar"]),
    _c("scalar_times_vector", """
        input a
        input x[N]
        output f
        for i: f += a * x[i] + a ** 2
        """, {"N": 3}, ["scalar broadcast", "reduction to a scalar"]),

    # ------------------------------------------------------------ batch and roles
    _c("batch_default_B", """
        param W[J, K], c[J]
        input x[B, K]
        output y[B, J]
        for b, j, k: y[b, j] += W[j, k] * x[b, k]
        for b, j: y[b, j] += c[j]
        """, {"B": 3, "J": 2, "K": 2}, ["param averaged over B"]),
    _c("batch_one", """
        batch 1
        param W[J, K]
        input x[B, K]
        output y[B, J]
        for b, j, k: y[b, j] += W[j, k] * x[b, k]
        """, {"B": 3, "J": 2, "K": 2}, ["batch 1: no averaging"]),
    _c("batch_named_N", """
        batch N
        param W[J, K]
        input x[N, K]
        output y[N, J]
        for n, j, k: y[n, j] += tanh(W[j, k] * x[n, k])
        """, {"N": 3, "J": 2, "K": 2}, ["batch N"]),
    _c("batch_none", """
        param W[J, K]
        input x[K]
        output y[J]
        for j, k: y[j] += W[j, k] * x[k]
        """, {"J": 2, "K": 3}, ["no batch dim: no averaging"]),
    _c("data_mask_no_grad", """
        # data tensors get no gradient; the mask may hold integers
        input x[B, J]
        data m[B, J]
        data t[B, J]
        output L
        for b, j: L += m[b, j] * (x[b, j] - t[b, j]) ** 2 / B
        """, {"B": 2, "J": 3}, ["data", "dim as a number", "-"]),
    _c("inactive_intermediate", """
        # c depends only on data: no c.grad, no work for it
        input x[B, J]
        data d[J]
        output y[B, J]
        for j: c[j] = exp(d[j]) * 2
        for j: e[j] = c[j] + 1
        for b, j: y[b, j] = x[b, j] * e[j]
        """, {"B": 2, "J": 3}, ["inactive intermediate"]),
    _c("dims_as_numbers", """
        input x[N]
        output y[N]
        for i: mean += x[i] / N
        for i: y[i] = (x[i] - mean) * N + 1 / N
        """, {"N": 4}, ["dim as a number", "scalar intermediate"]),

    # ------------------------------------------------------------ max=
    _c("max_over_axis", """
        input s[B, J]
        output y[B]
        for b, j: m[b] max= s[b, j]
        for b: y[b] = m[b] ** 2
        """, {"B": 2, "J": 4}, ["max= over an axis"]),
    _c("max_pool_stride", """
        # a 1-D max-pool with window 3 and stride 2, with a learned position bias
        # (the bias fixes the window's range: n and i may not share an unfixed index)
        input x[L]
        param pb[F]
        output m
        for n, i: m[n] max= x[2*n + i] + pb[i]
        """, {"L": 9, "F": 3}, ["max= with affine index", "max-pool"]),
    _c("max_scalar", """
        input x[N]
        output y
        for i: m max= x[i] * 3
        y = m
        """, {"N": 4}, ["max= to a scalar", "max= of an expression"]),

    # ------------------------------------------------------------ chains
    _c("chain_mlp", """
        # two layers and a squared error: a chain of several statements
        param W1[H, K], c1[H], W2[O, H]
        input x[B, K]
        data t[B, O]
        output L
        for b, h, k: z[b, h] += W1[h, k] * x[b, k]
        for b, h: a[b, h] = tanh(z[b, h] + c1[h])
        for b, o, h: q[b, o] += W2[o, h] * a[b, h]
        for b, o: L += (q[b, o] - t[b, o]) ** 2 / B
        """, {"B": 2, "K": 3, "H": 2, "O": 2}, ["chain", "params averaged", "1/B in the loss"]),
    _c("read_by_several", """
        # u is read by three statements; the gradients sum
        input x[N]
        output y
        for i: u[i] = x[i] * 2 + 1
        for i: a[i] = exp(u[i])
        for i: c[i] = u[i] * a[i]
        for i: y += c[i] - u[i] ** 2
        """, {"N": 3}, ["a tensor read by several statements"]),
    _c("read_twice", """
        input x[N]
        output y[N]
        for i: y[i] = x[i] * x[i]
        """, {"N": 3}, ["a tensor read twice in one statement"]),
    _c("contraction_3", """
        # a three-operand contraction chain A B C
        input A[I, J]
        param Bm[J, K]
        input C[K, L]
        output y
        for i, j, k, l: y[i, l] += A[i, j] * Bm[j, k] * C[k, l]
        """, {"I": 2, "J": 3, "K": 2, "L": 2}, ["3-operand contraction", "output with no shape"]),
    _c("outputs_no_shape", """
        input x[N, M]
        output s, q
        for i, j: s[i] += x[i, j]
        for i, j: q[j] += x[i, j] * x[i, j] - 1
        """, {"N": 2, "M": 3}, ["outputs with no declared shape", "two outputs"]),
    _c("outputs_implicit", """
        # no output declared: the outputs are the computed tensors nothing reads
        input x[N]
        for i: u[i] = x[i] ** 2
        for i: r += u[i]
        for i: q += u[i] * x[i]
        """, {"N": 3}, ["implicit outputs"]),

    # ------------------------------------------------------------ compositions
    _c("logsumexp_stable", """
        # log-sum-exp with the maximum subtracted
        input s[B, K]
        output L[B]
        for b, k: m[b] max= s[b, k]
        for b, k: Z[b] += exp(s[b, k] - m[b])
        for b: L[b] = log(Z[b]) + m[b]
        """, {"B": 2, "K": 3}, ["log-sum-exp", "max="]),
    _c("layer_norm", """
        param g[J], be[J]
        input x[B, J]
        output y[B, J]
        for b, j: mu[b] += x[b, j] / J
        for b, j: d[b, j] = x[b, j] - mu[b]
        for b, j: var[b] += d[b, j] ** 2 / J
        for b, j: y[b, j] = g[j] * d[b, j] / sqrt(var[b] + 1e-5) + be[j]
        """, {"B": 2, "J": 3}, ["layer norm", "sqrt", "dims as numbers"]),
    _c("attention", """
        # softmax(Q K^T) V, with the row maximum subtracted
        input Q[N, D], Kt[M, D], V[M, E]
        output O[N, E]
        for i, j, d: S[i, j] += Q[i, d] * Kt[j, d]
        for i, j: m[i] max= S[i, j]
        for i, j: P[i, j] = exp(S[i, j] - m[i])
        for i, j: Z[i] += P[i, j]
        for i, j, e: O[i, e] += P[i, j] / Z[i] * V[j, e]
        """, {"N": 2, "M": 3, "D": 2, "E": 2}, ["attention", "softmax", "contraction"]),
    _c("softmax_weighted_xent", """
        # softmax + cross-entropy against a data weight tensor whose rows need not sum to 1
        input s[B, K]
        data Y[B, K]
        output L[B]
        for b, k: Z[b] += exp(s[b, k])
        for b, k: p[b, k] = exp(s[b, k]) / Z[b]
        for b, k: L[b] += -Y[b, k] * log(p[b, k])
        """, {"B": 2, "K": 3}, ["softmax", "cross-entropy with data weights"]),
    _c("conv2d_tiny_bias", """
        # a 2-D convolution with a bias and a ReLU, tiny sizes
        input X[C, R, S]
        param W[F, C, P, Q], c0[F]
        output Y
        for f, ch, r, s, p, q: A[f, r, s] += W[f, ch, p, q] * X[ch, r + p, s + q]
        for f, r, s: Y[f, r, s] = relu(A[f, r, s] + c0[f])
        """, {"C": 1, "R": 3, "S": 3, "F": 2, "P": 2, "Q": 2}, ["2-D affine", "relu"]),
    _c("conv1d_taps_fewer_than_the_stride", """
        # stride 3, a window of 2: the taps miss every third input row, whose
        # gradient stays zero; -= so the first taps write a negated product
        input x[B, L, C]
        param W[O, C, F]
        output f
        for b, n, o, c, i: f[b, n, o] -= x[b, 3*n + i, c] * W[o, c, i]
        """, {"B": 2, "L": 10, "C": 2, "O": 3, "F": 2}, ["stride", "-=", "tap by tap"]),
    _c("conv1d_taps_past_the_stride", """
        # stride 2, a window of 5: the later taps add to rows the first two wrote
        input x[B, L, C]
        param W[O, C, F]
        output f
        for b, n, o, c, i: f[b, n, o] += x[b, 2*n + i, c] * W[o, c, i]
        """, {"B": 2, "L": 12, "C": 2, "O": 3, "F": 5}, ["stride", "tap by tap"]),
    _c("conv2d_flat_rows_twice", """
        # a batched 2-D convolution on flattened rows, subtracted, then a second
        # convolution added to the same output
        input X[B, I, R, S]
        param H[O, I, P, Q], G[O, I, P, Q]
        output Y[B, O, T, U]
        for b, o, i, r, s, p, q: Y[b, o, r, s] -= H[o, i, p, q] * X[b, i, r + p, s + q]
        for b, o, i, r, s, p, q: Y[b, o, r, s] += G[o, i, p, q] * X[b, i, r + p, s + q] ** 2
        """, {"B": 2, "I": 2, "R": 4, "S": 5, "O": 2, "P": 2, "Q": 3},
       ["2-D affine", "-=", "flattened rows", "two updates"]),
    _c("gru_gate_multi_line", """
        # a gated update with a statement continued inside brackets
        param Wz[J, J]
        input h[B, J], u[B, J]
        output hn[B, J]
        for b, j, i: zp[b, j] += Wz[j, i] * h[b, i]
        for b, j: hn[b, j] = sigmoid(zp[b, j]) * h[b, j] + (
                      1 - sigmoid(zp[b, j])) * tanh(u[b, j])
        """, {"B": 2, "J": 2}, ["continuation line", "gating", "params averaged"]),
]


# Course programs the compiled backends refuse yet, kept in tests/data/interp_only/
# (out of examples/, which every `tcc check` run covers) and tested through the
# reference interpreter and `tcc grad` (tests/test_recurrence.py). None today:
# AttentionRNN(infinity), its step shifted by a loop index (h[t - 1 - i]), is
# compiled since issue 11's last part and lives in examples/.
INTERP_ONLY_DIR = os.path.join(HERE, "data", "interp_only")
INTERP_ONLY: dict[str, str] = {}
ALL_EXAMPLES = sorted(f[:-5] for f in os.listdir(EXAMPLES_DIR) if f.endswith(".loop"))
COURSE_EXAMPLES = [n for n in ALL_EXAMPLES if n not in INTERP_ONLY]
# the course examples with a recurrence (issue 11)
RECURRENCE_EXAMPLES = ["rnn_elman", "ttic_ugrnn_rnn", "nyu_gated_rnn", "nyu_attention_rnn2",
                       "nyu_attention_rnn_inf"]

# Sizes for the course examples in the finite-difference tests (default: tcc's own).
EXAMPLE_SIZES = {
    "conv2d": {"Ni": 2, "Lr": 4, "Lc": 4, "No": 2, "Fr": 2, "Fc": 2},
    # small widths keep the attention scores (sums of D * S products) where the
    # unoptimized softmax backward's Z ** 2 stays finite in float32
    "nyu_attention_rnn2": {"D": 2, "S": 2},
}


def example_path(name: str) -> str:
    return os.path.join(INTERP_ONLY_DIR if name in INTERP_ONLY else EXAMPLES_DIR, name + ".loop")


def by_name(name: str) -> Case:
    for c in CATALOGUE:
        if c.name == name:
            return c
    raise KeyError(name)


assert len({c.name for c in CATALOGUE}) == len(CATALOGUE), "duplicate catalogue names"
