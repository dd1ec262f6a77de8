"""By-hand benchmark: tcc's generated forward+backward against hand-written NumPy.

Never run in CI. From the repository root:

    python benchmarks/bench.py [--quick] [--only NAME[,NAME]] [--repeat N] [--dtype float32]
    python benchmarks/bench.py --selftest     # check the hand-written baselines first

Each workload is a .loop program in benchmarks/programs/ and a hand-written
NumPy forward+backward computing the same outputs and gradients (param
gradients averaged over the batch, as LANGUAGE.md section 2 says). For each
one the script checks once that every column agrees with the hand-written
result (the warm-up call's output; a mismatch prints a FAIL line), then times
one forward+backward `--repeat` times and prints the medians as a markdown
table. A ratio is column time / hand-written time: above 1, slower than by hand.

tcc is timed with both backends (numpy, opt_einsum); the softmax also with
optimize=False ("tcc unfused"). The convolutions have a second hand-written
version (im2col) beside the tap-by-tap target. If torch or jax is importable,
their CPU autograd (jax: jit + vjp) gets a column too; neither is a dependency.
A column that cannot run (tcc not importable yet, a compile error) prints its
error and the rest goes on.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

HERE = Path(__file__).resolve().parent
PROGRAMS = HERE / "programs"
sys.path.insert(0, str(HERE.parent))  # a source checkout: `import tcc` without installing

try:
    import tcc
    TCC_ERROR = None if hasattr(tcc, "compile") else "tcc has no attribute 'compile' yet"
except Exception as exc:  # noqa: BLE001 -- any import failure just disables the tcc columns
    tcc, TCC_ERROR = None, f"import tcc failed: {type(exc).__name__}: {exc}"

STRIDE = 2  # the stride written in programs/conv1d.loop


# ---------------------------------------------------------------------------
# Hand-written NumPy forward and backward passes.
#
# Each workload has forward(t) -> (outputs, saved) and backward(t, saved, seeds)
# -> {input or param name: gradient}; `t` holds the inputs, params and data by
# name, `seeds` each output's .grad.
# ---------------------------------------------------------------------------

def softmax_forward(t):
    s = t["s"]
    p = s - s.max(axis=1, keepdims=True)
    np.exp(p, out=p)
    p *= 1 / p.sum(axis=1, keepdims=True)
    return {"p": p}, p


def softmax_backward(t, p, seeds):
    dp = seeds["p"]
    e = np.einsum("bj,bj->b", p, dp)  # e[b] = sum_j p * dp
    ds = dp - e[:, None]
    ds *= p
    return {"s": ds}


def mlp_forward(t):
    x, y = t["x"], t["y"]
    a1 = x @ t["W1"].T
    a1 += t["c1"]
    np.maximum(a1, 0, out=a1)
    s = a1 @ t["W2"].T
    s += t["c2"]
    m = s.max(axis=1, keepdims=True)
    p = s - m
    np.exp(p, out=p)
    Z = p.sum(axis=1, keepdims=True)
    p *= 1 / Z
    loss = np.log(Z[:, 0]) + m[:, 0] - s[np.arange(len(y)), y]  # logsumexp(s) - s[y]
    return {"L": loss}, (a1, p)


def mlp_backward(t, saved, seeds):
    a1, p = saved
    x, y = t["x"], t["y"]
    dL = seeds["L"] / len(y)  # every gradient here is a param's: fold in the 1/B once
    g = p * dL[:, None]  # ds = (p - onehot(y)) * L.grad
    g[np.arange(len(y)), y] -= dL
    da1 = g @ t["W2"]
    da1 *= a1 > 0  # relu'(z1 + c1) = (a1 > 0)
    return {"W1": da1.T @ x, "c1": da1.sum(axis=0), "W2": g.T @ a1, "c2": g.sum(axis=0)}


def _sigmoid_(u):
    """u <- sigmoid(u), in place."""
    np.negative(u, out=u)
    np.exp(u, out=u)
    u += 1
    np.reciprocal(u, out=u)
    return u


def ugrnn_forward(t):
    h, x = t["h"], t["x"]
    R = h @ t["WhR"].T
    R += x @ t["WxR"].T
    R -= t["BR"]
    np.tanh(R, out=R)
    G = h @ t["WhG"].T
    G += x @ t["WxG"].T
    G -= t["BG"]
    _sigmoid_(G)
    hn = h - R  # hn = G * h + (1 - G) * R = G * (h - R) + R
    hn *= G
    hn += R
    return {"hn": hn}, (R, G)


def ugrnn_backward(t, saved, seeds):
    R, G = saved
    h, x, dhn = t["h"], t["x"], seeds["hn"]
    dh = dhn * G  # the direct path through G * h
    dRp = dhn - dh  # dhn * (1 - G) * (1 - R**2)
    dRp *= 1 - R * R
    dGp = h - R  # dhn * (h - R) * G * (1 - G)
    dGp *= dhn
    dGp *= G
    dGp *= 1 - G
    dh += dRp @ t["WhR"]
    dh += dGp @ t["WhG"]
    inv_b = 1 / len(h)
    dRp_avg, dGp_avg = dRp * inv_b, dGp * inv_b
    return {
        "h": dh,
        "WhR": dRp_avg.T @ h, "WxR": dRp_avg.T @ x, "BR": -dRp_avg.sum(axis=0),
        "WhG": dGp_avg.T @ h, "WxG": dGp_avg.T @ x, "BG": -dGp_avg.sum(axis=0),
    }


def _tap_rows(n_out, i):
    """The rows of x that tap i reads for outputs 0..n_out-1: i, i + S, ..., i + S*(n_out-1)."""
    return slice(i, i + STRIDE * (n_out - 1) + 1, STRIDE)


def conv1d_forward(t):
    """Tap by tap: f = sum_i x[:, i::S] @ W[:, :, i].T, one batched matmul per tap."""
    x, W = t["x"], t["W"]
    n_out = (x.shape[1] - W.shape[2]) // STRIDE + 1
    Wt = np.ascontiguousarray(W.transpose(2, 1, 0))  # (F, C, O): BLAS wants contiguous taps
    f = np.matmul(x[:, _tap_rows(n_out, 0)], Wt[0])
    tmp = np.empty_like(f)
    for i in range(1, len(Wt)):
        np.matmul(x[:, _tap_rows(n_out, i)], Wt[i], out=tmp)
        f += tmp
    return {"f": f}, Wt


def conv1d_backward(t, Wt, seeds):
    x, df = t["x"], seeds["f"]
    n_batch, n_out, _ = df.shape
    n_taps = len(Wt)
    dWt = np.empty_like(Wt)
    # Taps 0..S-1 cover the rows [0, S*n_out) exactly once between them, so
    # they write dx where the later taps add to it; only the tail needs zeros.
    dx = np.empty_like(x) if n_taps >= STRIDE else np.zeros_like(x)
    dx[:, STRIDE * n_out:] = 0
    tmp = np.empty(x[:, _tap_rows(n_out, 0)].shape, x.dtype)
    for i in range(n_taps):
        rows = _tap_rows(n_out, i)
        np.matmul(x[:, rows].transpose(0, 2, 1), df).sum(axis=0, out=dWt[i])
        if i < STRIDE:
            np.matmul(df, Wt[i].T, out=dx[:, rows])
        else:
            np.matmul(df, Wt[i].T, out=tmp)
            dx[:, rows] += tmp
    dWt *= 1 / n_batch
    return {"x": dx, "W": dWt.transpose(2, 1, 0)}


def conv1d_im2col_forward(t):
    """im2col: gather every window into a (B*N, C*F) matrix, then one matmul."""
    x, W = t["x"], t["W"]
    n_batch, n_out = x.shape[0], (x.shape[1] - W.shape[2]) // STRIDE + 1
    windows = sliding_window_view(x, W.shape[2], axis=1)[:, ::STRIDE]  # (B, N, C, F)
    cols = windows.reshape(n_batch * n_out, -1)
    f = cols @ W.reshape(len(W), -1).T
    return {"f": f.reshape(n_batch, n_out, -1)}, cols


def conv1d_im2col_backward(t, cols, seeds):
    x, W, df = t["x"], t["W"], seeds["f"]
    n_batch, n_out, n_o = df.shape
    df2 = df.reshape(-1, n_o)
    dW = (df2.T @ cols).reshape(W.shape)
    dW *= 1 / n_batch
    dcols = (df2 @ W.reshape(n_o, -1)).reshape(n_batch, n_out, x.shape[2], W.shape[2])
    dx = np.zeros_like(x)
    for i in range(W.shape[2]):  # col2im: scatter each tap back
        dx[:, _tap_rows(n_out, i)] += dcols[..., i]
    return {"x": dx, "W": dW}


def conv2d_forward(t):
    """Tap by tap, one matmul per (fr, fc) over a shifted block of rows.

    X goes channels-last and flat over (b, r, c), so tap (fr, fc) reads row
    p + fr*Lc + fc for output row p: each tap is one (M, I) @ (I, O) matmul on
    a contiguous slice. Rows whose window wraps past the right or bottom edge
    are computed too and dropped (about (Fc-1)/Lc of the work).
    """
    X, H = t["X"], t["H"]
    n_b, n_i, n_r, n_c = X.shape
    n_o, _, n_fr, n_fc = H.shape
    Xf = np.ascontiguousarray(X.transpose(0, 2, 3, 1)).reshape(-1, n_i)
    Ht = np.ascontiguousarray(H.transpose(2, 3, 1, 0))  # (Fr, Fc, I, O)
    m = len(Xf) - (n_fr - 1) * n_c - (n_fc - 1)  # every valid output row is below m
    Yf = np.empty((len(Xf), n_o), X.dtype)
    tmp = np.empty((m, n_o), X.dtype)
    np.matmul(Xf[:m], Ht[0, 0], out=Yf[:m])
    for fr in range(n_fr):
        for fc in range(n_fc):
            if fr or fc:
                d = fr * n_c + fc
                np.matmul(Xf[d:d + m], Ht[fr, fc], out=tmp)
                Yf[:m] += tmp
    Y = Yf.reshape(n_b, n_r, n_c, n_o)[:, :n_r - n_fr + 1, :n_c - n_fc + 1].transpose(0, 3, 1, 2)
    return {"Y": Y}, (Xf, Ht)


def conv2d_backward(t, saved, seeds):
    Xf, Ht = saved
    dY = seeds["Y"]
    n_b, n_i, n_r, n_c = t["X"].shape
    n_fr, n_fc = Ht.shape[:2]
    n_o, n_ro, n_co = dY.shape[1:]
    m = len(Xf) - (n_fr - 1) * n_c - (n_fc - 1)
    dYf = np.zeros((n_b, n_r, n_c, n_o), dY.dtype)  # the dropped rows get zero gradient
    dYf[:, :n_ro, :n_co] = dY.transpose(0, 2, 3, 1)
    dYf = dYf.reshape(-1, n_o)[:m]
    dHt = np.empty_like(Ht)
    dXf = np.empty_like(Xf)
    dXf[m:] = 0
    np.matmul(dYf, Ht[0, 0].T, out=dXf[:m])  # tap (0, 0) covers rows [0, m): write, not add
    tmp = np.empty((m, n_i), Xf.dtype)
    for fr in range(n_fr):
        for fc in range(n_fc):
            d = fr * n_c + fc
            np.matmul(Xf[d:d + m].T, dYf, out=dHt[fr, fc])
            if d:
                np.matmul(dYf, Ht[fr, fc].T, out=tmp)
                dXf[d:d + m] += tmp
    dHt *= 1 / n_b
    dX = dXf.reshape(n_b, n_r, n_c, n_i).transpose(0, 3, 1, 2)
    return {"X": dX, "H": dHt.transpose(3, 2, 0, 1)}


def conv2d_im2col_forward(t):
    X, H = t["X"], t["H"]
    n_b, n_o = X.shape[0], H.shape[0]
    windows = sliding_window_view(X, H.shape[2:], axis=(2, 3))  # (B, I, Ro, Co, Fr, Fc)
    n_ro, n_co = windows.shape[2:4]
    cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n_b * n_ro * n_co, -1)
    Y = (cols @ H.reshape(n_o, -1).T).reshape(n_b, n_ro, n_co, n_o).transpose(0, 3, 1, 2)
    return {"Y": Y}, cols


def conv2d_im2col_backward(t, cols, seeds):
    X, H, dY = t["X"], t["H"], seeds["Y"]
    n_b, n_o, n_ro, n_co = dY.shape
    n_fr, n_fc = H.shape[2:]
    dY2 = dY.transpose(0, 2, 3, 1).reshape(-1, n_o)
    dH = (dY2.T @ cols).reshape(H.shape)
    dH *= 1 / n_b
    dcols = (dY2 @ H.reshape(n_o, -1)).reshape(n_b, n_ro, n_co, -1, n_fr, n_fc)
    dXn = np.zeros((n_b, *X.shape[2:], X.shape[1]), X.dtype)  # channels last
    for fr in range(n_fr):  # col2im: scatter each tap back
        for fc in range(n_fc):
            dXn[:, fr:fr + n_ro, fc:fc + n_co] += dcols[..., fr, fc]
    return {"X": dXn.transpose(0, 3, 1, 2), "H": dH}


def chain_forward(t):
    AB, CE = t["A"] @ t["Bm"], t["C"] @ t["E"]
    return {"D": AB @ CE}, (AB, CE)


def chain_backward(t, saved, seeds):
    AB, CE = saved
    dD = seeds["D"]
    dAB = dD @ CE.T
    dCE = AB.T @ dD
    return {"A": dAB @ t["Bm"].T, "Bm": t["A"].T @ dAB, "C": dCE @ t["E"].T, "E": t["C"].T @ dCE}


EPS = 1e-5  # the epsilon written in programs/layernorm.loop


def layernorm_forward(t):
    x = t["x"]
    D = x.shape[1]
    xc = x - x.mean(axis=1, keepdims=True)
    rs = 1 / np.sqrt(np.einsum("bd,bd->b", xc, xc) / D + EPS)
    xhat = xc
    xhat *= rs[:, None]
    y = xhat * t["g"]
    y += t["c"]
    return {"y": y}, (xhat, rs)


def layernorm_backward(t, saved, seeds):
    xhat, rs = saved
    dy = seeds["y"]
    B, D = dy.shape
    dc = dy.sum(axis=0) / B
    dg = np.einsum("bd,bd->d", dy, xhat) / B
    dxhat = dy * t["g"]
    proj = np.einsum("bd,bd->b", dxhat, xhat) / D
    dx = dxhat
    dx -= dxhat.mean(axis=1, keepdims=True)
    dx -= xhat * proj[:, None]
    dx *= rs[:, None]
    return {"x": dx, "g": dg, "c": dc}


def attention_forward(t):
    Q, K, V = t["Q"], t["K"], t["V"]
    scale = Q.shape[1] ** -0.5
    S = Q @ K.T
    S *= scale
    S += t["M"]
    S -= S.max(axis=1, keepdims=True)
    np.exp(S, out=S)
    S *= 1 / S.sum(axis=1, keepdims=True)
    return {"O": S @ V}, S


def attention_backward(t, P, seeds):
    Q, K, V = t["Q"], t["K"], t["V"]
    scale = Q.shape[1] ** -0.5
    dO = seeds["O"]
    dV = P.T @ dO
    dP = dO @ V.T
    e = np.einsum("ij,ij->i", P, dP)
    dP -= e[:, None]
    dP *= P
    dP *= scale
    return {"Q": dP @ K, "K": dP.T @ Q, "V": dV}


# ---------------------------------------------------------------------------
# The forward once more, written for autograd frameworks and for the
# self-test's reference: `lib` supplies the few functions that differ between
# NumPy (the slow, definitional reference), torch and jax.
# ---------------------------------------------------------------------------

def rnn_forward(t):
    """Elman tanh RNN, the time-independent product W x[t] hoisted out of the loop."""
    x, W, U = t["x"], t["W"], t["U"]
    a = x @ W.T
    h = np.empty_like(a)
    np.tanh(a[0], out=h[0])
    for k in range(1, len(x)):
        a[k] += h[k - 1] @ U.T
        np.tanh(a[k], out=h[k])
    return {"h": h}, h


def rnn_backward(t, h, seeds):
    """Backpropagation through time: one product per step, then the parameter
    gradients summed over t and b (and x.grad) each as one product."""
    x, W, U = t["x"], t["W"], t["U"]
    n_t, n_b, n_s = h.shape
    dh = seeds["h"].copy()
    da = np.empty_like(h)
    for k in range(n_t - 1, -1, -1):
        np.multiply(dh[k], 1 - h[k] ** 2, out=da[k])
        if k:
            dh[k - 1] += da[k] @ U
    dU = da[1:].reshape(-1, n_s).T @ h[:-1].reshape(-1, n_s) / n_b
    dW = da.reshape(-1, n_s).T @ x.reshape(-1, x.shape[2]) / n_b
    return {"x": da @ W, "W": dW, "U": dU}


def attention_rnn_inf_forward(t):
    """AttentionRNN(infinity) by hand: the products of x hoisted out of the loop;
    each step attends to x[t] and the t earlier states only (h[t-1::-1])."""
    x, Q0, K0, V0, Q, K, V = (t[k] for k in ("x", "Q0", "K0", "V0", "Q", "K", "V"))
    T, B, _ = x.shape
    S = Q0.shape[0]
    q0, k0, v0 = x @ Q0.T, x @ K0.T, x @ V0.T
    w0 = np.einsum("tbs,tbs->tb", q0, k0)
    h = np.zeros((T, B, S), x.dtype)
    steps = []
    for n in range(T):
        hist = h[n - 1::-1] if n else h[:0]            # h[n - 1 - i], i < n
        q = hist @ Q[:n].transpose(0, 2, 1)            # (i, b, s)
        k = hist @ K[:n].transpose(0, 2, 1)
        v = hist @ V[:n].transpose(0, 2, 1)
        w = np.concatenate([w0[n][None], np.einsum("ibs,ibs->ib", q, k)])
        a = np.exp(w - w.max(axis=0))
        a /= a.sum(axis=0)
        h[n] = a[0][:, None] * v0[n] + np.einsum("ib,ibs->bs", a[1:], v)
        steps.append((q, k, v, a))
    return {"h": h}, (h, q0, k0, v0, steps)


def attention_rnn_inf_backward(t, saved, seeds):
    """Backpropagation through time, descending; slot i's gradient at step n
    goes to h.grad[n - 1 - i] (one reversed slice add per step)."""
    x, Q0, K0, V0, Q, K, V = (t[k] for k in ("x", "Q0", "K0", "V0", "Q", "K", "V"))
    h, q0, k0, v0, steps = saved
    T, B, _ = x.shape
    dh = seeds["h"].copy()
    dq0, dk0, dv0 = np.empty_like(q0), np.empty_like(k0), np.empty_like(v0)
    dQ, dK, dV = np.zeros_like(Q), np.zeros_like(K), np.zeros_like(V)
    for n in range(T - 1, -1, -1):
        q, k, v, a = steps[n]
        g = dh[n]
        da = np.concatenate([np.einsum("bs,bs->b", g, v0[n])[None],
                             np.einsum("bs,ibs->ib", g, v)])
        dw = a * (da - np.einsum("ib,ib->b", a, da))
        dv0[n] = a[0][:, None] * g
        dq0[n] = dw[0][:, None] * k0[n]
        dk0[n] = dw[0][:, None] * q0[n]
        if n:
            hist = h[n - 1::-1]
            dq, dk = dw[1:, :, None] * k, dw[1:, :, None] * q
            dv = a[1:, :, None] * g
            dh[n - 1::-1] += dq @ Q[:n] + dk @ K[:n] + dv @ V[:n]
            dQ[:n] += dq.transpose(0, 2, 1) @ hist
            dK[:n] += dk.transpose(0, 2, 1) @ hist
            dV[:n] += dv.transpose(0, 2, 1) @ hist
    xf = x.reshape(-1, x.shape[2])
    S = Q0.shape[0]
    return {"x": dq0 @ Q0 + dk0 @ K0 + dv0 @ V0,
            "Q0": dq0.reshape(-1, S).T @ xf / B, "K0": dk0.reshape(-1, S).T @ xf / B,
            "V0": dv0.reshape(-1, S).T @ xf / B, "Q": dQ / B, "K": dK / B, "V": dV / B}

def lib_softmax(lib, s):
    return {"p": lib.softmax(s)}


def lib_mlp(lib, x, y, W1, c1, W2, c2):
    s = lib.relu(x @ W1.T + c1) @ W2.T + c2
    return {"L": -lib.pick(lib.log_softmax(s), y)}


def lib_ugrnn(lib, h, x, WhR, WxR, BR, WhG, WxG, BG):
    R = lib.tanh(h @ WhR.T + x @ WxR.T - BR)
    G = lib.sigmoid(h @ WhG.T + x @ WxG.T - BG)
    return {"hn": G * h + (1 - G) * R}


def lib_conv1d(lib, x, W):
    return {"f": lib.conv1d(x, W)}


def lib_conv2d(lib, X, H):
    return {"Y": lib.conv2d(X, H)}


def lib_chain(lib, A, Bm, C, E):
    return {"D": lib.multi_dot([A, Bm, C, E])}


def lib_layernorm(lib, x, g, c):
    return {"y": lib.layer_norm(x, g, c)}


def lib_attention(lib, Q, K, V, M):
    scale = Q.shape[1] ** -0.5
    return {"O": lib.softmax(Q @ K.T * scale + M) @ V}


def _np_layer_norm(x, g, c):
    xc = x - x.mean(axis=1, keepdims=True)
    return g * xc / np.sqrt((xc * xc).mean(axis=1, keepdims=True) + EPS) + c


def lib_rnn(lib, x, W, U):
    return {"h": lib.rnn(x, W, U)}


def lib_attention_rnn_inf(lib, x, Q0, K0, V0, Q, K, V):
    """AttentionRNN(infinity) step by step, each slot by itself (no in-place writes,
    for autograd): slot 0 attends to x[t], slot i + 1 to h[t - 1 - i]."""
    hs = []
    for t in range(x.shape[0]):
        srcs = [(x[t], Q0, K0, V0)] + [(hs[t - 1 - i], Q[i], K[i], V[i]) for i in range(t)]
        q = lib.stack([g @ Qi.T for g, Qi, _, _ in srcs], 1)
        k = lib.stack([g @ Ki.T for g, _, Ki, _ in srcs], 1)
        v = lib.stack([g @ Vi.T for g, _, _, Vi in srcs], 1)
        a = lib.softmax((q * k).sum(-1))
        hs.append((a[:, :, None] * v).sum(1))
    return {"h": lib.stack(hs, 0)}

def _loop_rnn(x, W, U):
    h, out = np.zeros((x.shape[1], W.shape[0]), x.dtype), []
    for xt in x:
        h = np.tanh(xt @ W.T + h @ U.T)
        out.append(h)
    return np.array(out)


def _loop_conv1d(x, W):
    """f[b, n, o] = sum_{c, i} x[b, S*n + i, c] W[o, c, i], looping over n and i."""
    n_out = (x.shape[1] - W.shape[2]) // STRIDE + 1
    f = np.zeros((x.shape[0], n_out, W.shape[0]))
    for n in range(n_out):
        for i in range(W.shape[2]):
            f[:, n] += x[:, STRIDE * n + i] @ W[:, :, i].T
    return f


def _loop_conv2d(X, H):
    """Y[b, o, r, c] = sum_{i, fr, fc} H[o, i, fr, fc] X[b, i, r + fr, c + fc], looping."""
    n_fr, n_fc = H.shape[2:]
    n_ro, n_co = X.shape[2] - n_fr + 1, X.shape[3] - n_fc + 1
    Y = np.zeros((X.shape[0], H.shape[0], n_ro, n_co))
    for r in range(n_ro):
        for c in range(n_co):
            for fr in range(n_fr):
                for fc in range(n_fc):
                    Y[:, :, r, c] += X[:, :, r + fr, c + fc] @ H[:, :, fr, fc].T
    return Y


def _np_softmax(s):
    e = np.exp(s)
    return e / e.sum(axis=1, keepdims=True)


REFERENCE_LIB = SimpleNamespace(
    softmax=_np_softmax, log_softmax=lambda s: np.log(_np_softmax(s)),
    pick=lambda a, y: a[np.arange(len(y)), y], relu=lambda u: np.maximum(u, 0),
    tanh=np.tanh, sigmoid=lambda u: 1 / (1 + np.exp(-u)),
    conv1d=_loop_conv1d, conv2d=_loop_conv2d,
    multi_dot=lambda ms: functools.reduce(np.matmul, ms), layer_norm=_np_layer_norm,
    rnn=_loop_rnn, stack=np.stack,
)


def _torch_lib():
    import torch
    import torch.nn.functional as F
    lib = SimpleNamespace(
        softmax=lambda s: torch.softmax(s, dim=1),
        log_softmax=lambda s: torch.log_softmax(s, dim=1),
        pick=lambda a, y: a.gather(1, y[:, None])[:, 0], relu=torch.relu,
        tanh=torch.tanh, sigmoid=torch.sigmoid,
        conv1d=lambda x, W: F.conv1d(x.transpose(1, 2), W, stride=STRIDE).transpose(1, 2),
        conv2d=F.conv2d, multi_dot=torch.linalg.multi_dot,
        layer_norm=lambda x, g, c: F.layer_norm(x, x.shape[1:], g, c, EPS),
        # torch.nn.RNN's own kernel (tanh, no biases, one layer, time first)
        rnn=lambda x, W, U: torch._VF.rnn_tanh(
            x, x.new_zeros((1, x.shape[1], W.shape[0])), [W, U], False, 1, 0.0, False, False,
            False)[0],
        stack=torch.stack,
    )
    return torch, lib


def _jax_lib():
    import jax
    jax.config.update("jax_enable_x64", True)  # float64 stays float64; float32 stays float32
    import jax.numpy as jnp
    from jax import lax
    lib = SimpleNamespace(
        softmax=lambda s: jax.nn.softmax(s, axis=1),
        log_softmax=lambda s: jax.nn.log_softmax(s, axis=1),
        pick=lambda a, y: jnp.take_along_axis(a, y[:, None], axis=1)[:, 0],
        relu=jax.nn.relu, tanh=jnp.tanh, sigmoid=jax.nn.sigmoid,
        conv1d=lambda x, W: lax.conv_general_dilated(
            x, W, (STRIDE,), "VALID", dimension_numbers=("NWC", "OIW", "NWC")),
        conv2d=lambda X, H: lax.conv_general_dilated(X, H, (1, 1), "VALID"),
        multi_dot=jnp.linalg.multi_dot,
        layer_norm=lambda x, g, c: g * (x - x.mean(1, keepdims=True)) * jax.lax.rsqrt(
            x.var(1, keepdims=True) + EPS) + c,
        rnn=lambda x, W, U: lax.scan(
            lambda h, xt: (jnp.tanh(xt @ W.T + h @ U.T),) * 2,
            jnp.zeros((x.shape[1], W.shape[0]), x.dtype), x)[1],
        stack=jnp.stack,
    )
    return jax, lib


# ---------------------------------------------------------------------------
# Workloads: random tensors and seeds for given sizes.
# ---------------------------------------------------------------------------

def _normal(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def make_softmax(rng, dtype, B, J):
    return {"s": _normal(rng, (B, J), dtype)}, {"p": _normal(rng, (B, J), dtype)}


def make_mlp(rng, dtype, B, D, H, O):
    t = {"x": _normal(rng, (B, D), dtype), "y": rng.integers(0, O, B),
         "W1": _normal(rng, (H, D), dtype, D ** -0.5), "c1": _normal(rng, H, dtype, 0.1),
         "W2": _normal(rng, (O, H), dtype, H ** -0.5), "c2": _normal(rng, O, dtype, 0.1)}
    return t, {"L": np.ones(B, dtype)}


def make_ugrnn(rng, dtype, B, J, K):
    t = {"h": _normal(rng, (B, J), dtype), "x": _normal(rng, (B, K), dtype)}
    for gate in "RG":
        t[f"Wh{gate}"] = _normal(rng, (J, J), dtype, J ** -0.5)
        t[f"Wx{gate}"] = _normal(rng, (J, K), dtype, K ** -0.5)
        t[f"B{gate}"] = _normal(rng, J, dtype, 0.1)
    return t, {"hn": _normal(rng, (B, J), dtype)}


def make_conv1d(rng, dtype, B, L, C, O, F):
    n_out = (L - F) // STRIDE + 1
    t = {"x": _normal(rng, (B, L, C), dtype), "W": _normal(rng, (O, C, F), dtype, (C * F) ** -0.5)}
    return t, {"f": _normal(rng, (B, n_out, O), dtype)}


def make_conv2d(rng, dtype, B, I, O, Lr, Lc, Fr, Fc):
    t = {"X": _normal(rng, (B, I, Lr, Lc), dtype),
         "H": _normal(rng, (O, I, Fr, Fc), dtype, (I * Fr * Fc) ** -0.5)}
    return t, {"Y": _normal(rng, (B, O, Lr - Fr + 1, Lc - Fc + 1), dtype)}


def make_chain(rng, dtype, I, J, K, L, M):
    t = {"A": _normal(rng, (I, J), dtype, J ** -0.5), "Bm": _normal(rng, (J, K), dtype, K ** -0.5),
         "C": _normal(rng, (K, L), dtype, L ** -0.5), "E": _normal(rng, (L, M), dtype, M ** -0.5)}
    return t, {"D": _normal(rng, (I, M), dtype)}


def make_layernorm(rng, dtype, B, D):
    t = {"x": _normal(rng, (B, D), dtype), "g": 1 + _normal(rng, D, dtype, 0.1),
         "c": _normal(rng, D, dtype, 0.1)}
    return t, {"y": _normal(rng, (B, D), dtype)}


def make_attention(rng, dtype, N, E):
    t = {k: _normal(rng, (N, E), dtype) for k in "QKV"}
    t["M"] = np.triu(np.full((N, N), -1e9, dtype), k=1)
    return t, {"O": _normal(rng, (N, E), dtype)}


def make_rnn(rng, dtype, T, B, D, S):
    t = {"x": _normal(rng, (T, B, D), dtype), "W": _normal(rng, (S, D), dtype, D ** -0.5),
         "U": _normal(rng, (S, S), dtype, S ** -0.5)}
    return t, {"h": _normal(rng, (T, B, S), dtype)}


def make_attention_rnn_inf(rng, dtype, T, B, D, S):
    t = {"x": _normal(rng, (T, B, D), dtype)}
    for n in ("Q0", "K0", "V0"):
        t[n] = _normal(rng, (S, D), dtype, D ** -0.5)
    for n in ("Q", "K", "V"):
        t[n] = _normal(rng, (T, S, S), dtype, S ** -0.5)
    return t, {"h": _normal(rng, (T, B, S), dtype)}

@dataclass(frozen=True)
class Impl:
    forward: Callable
    backward: Callable

    def __call__(self, t, seeds):
        outputs, saved = self.forward(t)
        return outputs, self.backward(t, saved, seeds)


@dataclass(frozen=True)
class Workload:
    name: str
    make: Callable  # (rng, dtype, **sizes) -> (tensors, seeds)
    hand: Impl  # the hand-written target
    lib_forward: Callable  # (lib, **tensors) -> outputs: reference, torch, jax
    inputs: tuple[str, ...]  # differentiable, plain gradient
    params: tuple[str, ...]  # differentiable, gradient averaged over B
    batch: str  # a tensor whose first axis is B ("" if no params)
    sizes: dict
    quick: dict
    tiny: tuple[dict, ...]  # self-test sizes
    others: dict = field(default_factory=dict)  # more hand-written versions, by column label
    unfused: bool = False  # also time tcc with optimize=False

    @property
    def program(self) -> Path:
        return PROGRAMS / f"{self.name}.loop"


WORKLOADS = [
    Workload("softmax", make_softmax, Impl(softmax_forward, softmax_backward), lib_softmax,
             inputs=("s",), params=(), batch="", unfused=True,
             sizes=dict(B=256, J=8192), quick=dict(B=16, J=64), tiny=(dict(B=3, J=5),)),
    Workload("mlp", make_mlp, Impl(mlp_forward, mlp_backward), lib_mlp,
             inputs=(), params=("W1", "c1", "W2", "c2"), batch="x",
             sizes=dict(B=512, D=784, H=256, O=10), quick=dict(B=32, D=64, H=32, O=10),
             tiny=(dict(B=4, D=5, H=6, O=3),)),
    Workload("ugrnn", make_ugrnn, Impl(ugrnn_forward, ugrnn_backward), lib_ugrnn,
             inputs=("h",), params=("WhR", "WxR", "BR", "WhG", "WxG", "BG"), batch="h",
             sizes=dict(B=256, J=512, K=256), quick=dict(B=16, J=32, K=16),
             tiny=(dict(B=3, J=4, K=2),)),
    Workload("conv1d", make_conv1d, Impl(conv1d_forward, conv1d_backward), lib_conv1d,
             inputs=("x",), params=("W",), batch="x",
             others={"im2col": Impl(conv1d_im2col_forward, conv1d_im2col_backward)},
             sizes=dict(B=32, L=4096, C=64, O=64, F=5), quick=dict(B=4, L=64, C=8, O=8, F=5),
             tiny=(dict(B=2, L=13, C=3, O=2, F=3), dict(B=2, L=10, C=2, O=3, F=4),
                   dict(B=2, L=7, C=2, O=2, F=1))),
    Workload("conv2d", make_conv2d, Impl(conv2d_forward, conv2d_backward), lib_conv2d,
             inputs=("X",), params=("H",), batch="X",
             others={"im2col": Impl(conv2d_im2col_forward, conv2d_im2col_backward)},
             sizes=dict(B=16, I=32, O=64, Lr=32, Lc=32, Fr=3, Fc=3),
             quick=dict(B=2, I=4, O=8, Lr=10, Lc=10, Fr=3, Fc=3),
             tiny=(dict(B=2, I=2, O=3, Lr=5, Lc=6, Fr=2, Fc=3),)),
    Workload("chain", make_chain, Impl(chain_forward, chain_backward), lib_chain,
             inputs=("A", "Bm", "C", "E"), params=(), batch="",
             sizes=dict(I=700, J=700, K=700, L=700, M=700),
             quick=dict(I=40, J=40, K=40, L=40, M=40), tiny=(dict(I=2, J=3, K=4, L=5, M=3),)),
    Workload("layernorm", make_layernorm, Impl(layernorm_forward, layernorm_backward),
             lib_layernorm, inputs=("x",), params=("g", "c"), batch="x",
             sizes=dict(B=1024, D=1024), quick=dict(B=32, D=64), tiny=(dict(B=3, D=5),)),
    Workload("attention", make_attention, Impl(attention_forward, attention_backward),
             lib_attention, inputs=("Q", "K", "V"), params=(), batch="",
             sizes=dict(N=512, E=64), quick=dict(N=32, E=8), tiny=(dict(N=4, E=3),)),
    Workload("rnn", make_rnn, Impl(rnn_forward, rnn_backward), lib_rnn,
             inputs=("x",), params=("W", "U"), batch="h_batch",
             sizes=dict(T=64, B=64, D=256, S=256), quick=dict(T=8, B=4, D=16, S=16),
             tiny=(dict(T=1, B=2, D=3, S=2), dict(T=4, B=2, D=3, S=4))),
    Workload("attention_rnn_inf", make_attention_rnn_inf,
             Impl(attention_rnn_inf_forward, attention_rnn_inf_backward), lib_attention_rnn_inf,
             inputs=("x",), params=("Q0", "K0", "V0", "Q", "K", "V"), batch="h_batch",
             sizes=dict(T=32, B=32, D=64, S=64), quick=dict(T=6, B=4, D=8, S=8),
             tiny=(dict(T=1, B=2, D=3, S=2), dict(T=5, B=2, D=3, S=4))),
]
BY_NAME = {w.name: w for w in WORKLOADS}


def size_label(sizes: dict) -> str:
    """B=16 I=32 Lr=Lc=32: runs of equal sizes share one '='."""
    groups: list[list] = []
    for name, value in sizes.items():
        if groups and groups[-1][1] == value:
            groups[-1][0].append(name)
        else:
            groups.append([[name], value])
    return " ".join("=".join(names) + f"={value}" for names, value in groups)


# ---------------------------------------------------------------------------
# Columns: each turns a workload into step(t, seeds) -> (outputs, grads), or
# None when the column does not apply to it. A factory may raise: the error
# is printed for that cell.
# ---------------------------------------------------------------------------

def tcc_column(backend: str, optimize: bool, only_unfused: bool = False):
    def factory(w: Workload):
        if only_unfused and not w.unfused:
            return None
        if TCC_ERROR:
            raise RuntimeError(TCC_ERROR)
        kernel = tcc.compile(str(w.program), backend=backend, optimize=optimize)

        def step(t, seeds):
            saved = kernel.forward(**t)
            grads = kernel.backward(seeds, **{**t, **saved})
            return {name: saved[name] for name in seeds}, grads
        return step
    return factory


def other_impl_column(label: str):
    return lambda w: w.others.get(label)


def batch_size(w: Workload, t) -> int:
    """B, which param gradients are averaged over (1 without params)."""
    if w.batch == "h_batch":       # time first: B is the second axis of x
        return t["x"].shape[1]
    return len(t[w.batch]) if w.batch else 1


def torch_column(w: Workload):
    torch, lib = _torch_lib()
    wrt = w.inputs + w.params

    def step(t, seeds):
        tt = {name: torch.from_numpy(a) for name, a in t.items()}
        for name in wrt:
            tt[name].requires_grad_(True)
        outputs = w.lib_forward(lib, **tt)
        names = list(seeds)
        grads = torch.autograd.grad([outputs[k] for k in names], [tt[k] for k in wrt],
                                    [torch.from_numpy(seeds[k]) for k in names])
        scale = 1 / batch_size(w, t)
        grads = {k: g.numpy() * scale if k in w.params else g.numpy()
                 for k, g in zip(wrt, grads, strict=True)}
        return {k: v.detach().numpy() for k, v in outputs.items()}, grads
    return step


def jax_column(w: Workload):
    jax, lib = _jax_lib()
    wrt = w.inputs + w.params

    @jax.jit
    def fwd_bwd(diff, rest, seeds, scale):
        outputs, pullback = jax.vjp(lambda d: w.lib_forward(lib, **d, **rest), diff)
        (grads,) = pullback(seeds)
        return outputs, {k: g * scale if k in w.params else g for k, g in grads.items()}

    def step(t, seeds):
        diff = {k: t[k] for k in wrt}
        rest = {k: a for k, a in t.items() if k not in diff}
        outputs, grads = fwd_bwd(diff, rest, seeds, 1 / batch_size(w, t))
        jax.block_until_ready(grads)
        return ({k: np.asarray(v) for k, v in outputs.items()},
                {k: np.asarray(v) for k, v in grads.items()})
    return step


def _importable(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception:  # noqa: BLE001
        return False


def columns() -> dict[str, Callable]:
    cols = {
        "hand-written": lambda w: w.hand,
        "tcc numpy": tcc_column("numpy", True),
        "tcc opt_einsum": tcc_column("opt_einsum", True),
        "tcc unfused": tcc_column("numpy", False, only_unfused=True),
        "im2col": other_impl_column("im2col"),
    }
    if _importable("torch"):
        cols["torch"] = torch_column
    if _importable("jax"):
        cols["jax"] = jax_column
    return cols


# ---------------------------------------------------------------------------
# Checking and timing.
# ---------------------------------------------------------------------------

def compare(got: dict, want: dict, rtol: float) -> list[str]:
    """Problems with `got` against `want` (keys, shapes, values); empty if they agree."""
    problems = []
    for name in sorted(set(got) | set(want)):
        if name not in got or name not in want:
            problems.append(f"{name}: only in {'result' if name in got else 'expected'}")
            continue
        a, b = np.asarray(got[name]), np.asarray(want[name])
        if a.shape != b.shape:
            problems.append(f"{name}: shape {a.shape}, expected {b.shape}")
            continue
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        if not np.allclose(a, b, rtol=rtol, atol=rtol * scale):
            err = float(np.max(np.abs(a - b))) / (scale or 1.0)
            problems.append(f"{name}: max |diff| / max |expected| = {err:.2e} (rtol {rtol:g})")
    return problems


def time_once(step, t, seeds) -> float:
    t0 = time.perf_counter()
    step(t, seeds)
    return time.perf_counter() - t0


def short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    return text if len(text) <= 200 else text[:197] + "..."


def bench_workload(w: Workload, cols: dict, args) -> dict[str, str]:
    """Run every column on one workload; returns the table cells by column label.
    The first column is the hand-written baseline: the others are checked
    against its result and timed relative to it.

    The columns are timed interleaved, one call of each per round, so that a
    burst of load on a shared machine hits every column of that round alike,
    each round starting at the next column; a ratio is the median over the
    rounds of (column time / hand-written time)."""
    sizes = w.quick if args.quick else w.sizes
    t, seeds = w.make(np.random.default_rng(0), np.dtype(args.dtype), **sizes)
    rtol = 1e-6 if args.dtype == "float64" else 2e-3
    cells = {"workload": w.name, "sizes": size_label(sizes)}
    baseline = None  # (outputs, grads) of the hand-written column
    steps: dict[str, Callable] = {}
    failed: set[str] = set()
    for label, factory in cols.items():
        tag = f"{w.name} [{label}]"
        try:
            step = factory(w)
            if step is None:
                continue
            outputs, grads = step(t, seeds)  # the warm-up call, also the check
        except Exception as exc:  # noqa: BLE001 -- report and go on with the next column
            print(f"ERROR {tag}: {short(exc)}")
            cells[label] = "error"
            continue
        if baseline:
            problems = compare(outputs, baseline[0], rtol) + compare(grads, baseline[1], rtol)
            for p in problems:
                print(f"FAIL {tag}: {p}")
            if problems:
                failed.add(label)
            else:
                print(f"ok   {tag}: outputs and gradients match the hand-written ones")
        elif label == "hand-written":
            baseline = (outputs, grads)
        steps[label] = step
    times: dict[str, list[float]] = {label: [] for label in steps}
    started = time.perf_counter()
    order = list(steps)
    for r in range(args.repeat):
        # each round starts at the next column: threads that spin on after a
        # call returns (OpenMP in torch, OpenBLAS) slow whichever column runs
        # next, and that must not always be the same one
        for label in order[r % len(order):] + order[:r % len(order)]:
            times[label].append(time_once(steps[label], t, seeds))
        if time.perf_counter() - started > args.max_seconds:
            break
    hand = times.get("hand-written")
    for label, ts in times.items():
        ms = 1e3 * statistics.median(ts)
        cells[label] = f"{ms:.1f}" if ms >= 10 else f"{ms:.3g}"
        if hand and label != "hand-written":
            ratio = statistics.median(a / b for a, b in zip(ts, hand))
            cells[label + " ratio"] = f"{ratio:.2f}x" + (" FAIL" if label in failed else "")
    return cells


def print_table(rows: list[dict], labels: list[str]) -> None:
    fixed = ["hand-written", "tcc numpy", "tcc opt_einsum"]
    extras = [c for c in labels if c not in fixed and any(c in r for r in rows)]
    header = ["workload", "sizes", "hand-written ms", "tcc numpy ms", "ratio",
              "tcc opt_einsum ms", "ratio"] + [f"{c} ms (ratio)" for c in extras]
    lines = [header, ["---"] * len(header)]
    for r in rows:
        line = [r["workload"], r["sizes"], r.get("hand-written", "")]
        for c in fixed[1:]:
            line += [r.get(c, ""), r.get(c + " ratio", "")]
        for c in extras:
            ms, ratio = r.get(c, ""), r.get(c + " ratio", "")
            line.append(f"{ms} ({ratio})" if ratio else ms)
        lines.append(line)
    for line in lines:
        print("| " + " | ".join(line) + " |")


# ---------------------------------------------------------------------------
# Self-test of the hand-written baselines, on tiny float64 sizes.
# ---------------------------------------------------------------------------

def check_impl(w: Workload, impl: Impl, sizes: dict) -> list[str]:
    """Problems with one hand-written version on tiny sizes: its forward against
    the definitional reference (REFERENCE_LIB), its gradients against central
    finite differences of that reference in random directions, and float32 in,
    float32 out; and that it leaves its arguments alone."""
    rng = np.random.default_rng(1)
    t, seeds = w.make(rng, np.float64, **sizes)

    def phi(tensors):  # the scalar whose gradient the backward computes
        outputs = w.lib_forward(REFERENCE_LIB, **tensors)
        return sum(float(np.sum(outputs[k] * seeds[k])) for k in seeds)

    before = {k: a.copy() for k, a in {**t, **seeds}.items()}
    outputs, grads = impl(t, seeds)
    problems = [f"{k}: changed in place" for k, a in before.items()
                if not np.array_equal(a, {**t, **seeds}[k])]
    problems += compare(outputs, w.lib_forward(REFERENCE_LIB, **t), 1e-10)
    wrt = w.inputs + w.params
    if set(grads) != set(wrt):
        problems.append(f"gradients for {sorted(grads)}, expected {sorted(wrt)}")
    step = 1e-5
    for name in set(grads) & set(wrt):
        for _ in range(3):
            v = rng.standard_normal(t[name].shape)
            fd = (phi({**t, name: t[name] + step * v}) -
                  phi({**t, name: t[name] - step * v})) / (2 * step)
            if name in w.params:
                fd /= batch_size(w, t)
            got = float(np.sum(grads[name] * v))
            err = abs(fd - got) / max(abs(fd), abs(got), 1e-12)
            if err > 1e-6:
                problems.append(f"{name}.grad: finite differences {fd:.8g}, "
                                f"backward {got:.8g} (rel err {err:.1e})")
                break

    t32 = {k: a.astype(np.float32) if a.dtype.kind == "f" else a for k, a in t.items()}
    out32, grads32 = impl(t32, {k: a.astype(np.float32) for k, a in seeds.items()})
    problems += [f"{name}: float32 in, {a.dtype} out"
                 for name, a in {**out32, **grads32}.items() if a.dtype != np.float32]
    problems += [f"float32 {p}" for p in compare({**out32, **grads32}, {**outputs, **grads}, 1e-4)]
    return problems


def selftest() -> bool:
    """Check every hand-written version of every workload; True if all pass."""
    ok = True
    for w in WORKLOADS:
        for sizes in w.tiny:
            for label, impl in {"hand-written": w.hand, **w.others}.items():
                tag = f"{w.name} [{label}] {size_label(sizes)}"
                try:
                    problems = check_impl(w, impl, sizes)
                except Exception as exc:  # noqa: BLE001 -- a crash is a failure like any other
                    problems = [short(exc)]
                for p in problems:
                    print(f"FAIL {tag}: {p}")
                if not problems:
                    print(f"ok   {tag}: forward = reference, gradients = finite differences, "
                          "float32 kept")
                ok &= not problems
    print("selftest passed" if ok else "selftest FAILED")
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, to smoke-test")
    parser.add_argument("--only", metavar="NAME[,NAME]",
                        help=f"workloads to run, from: {', '.join(BY_NAME)}")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per cell (default 7)")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--max-seconds", type=float, default=30.0,
                        help="stop timing a cell after this long (at least one run; default 30)")
    parser.add_argument("--selftest", action="store_true",
                        help="check the hand-written baselines on tiny sizes, then exit")
    args = parser.parse_args(argv)

    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.selftest:
        return 0 if selftest() else 1
    chosen = WORKLOADS
    if args.only:
        unknown = [n for n in args.only.split(",") if n not in BY_NAME]
        if unknown:
            parser.error(f"unknown workload {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
        chosen = [BY_NAME[n] for n in args.only.split(",")]

    print(f"numpy {np.__version__}, python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, dtype {args.dtype}, median of {args.repeat} "
          f"after one warm-up{', quick sizes' if args.quick else ''}")
    if TCC_ERROR:
        print(f"note: {TCC_ERROR}")
    cols = columns()
    rows = [bench_workload(w, cols, args) for w in chosen]
    print()
    print_table(rows, list(cols))
    if not TCC_ERROR:
        print()
        memory_table(chosen, args)
    if BY_NAME["softmax"] in chosen and not TCC_ERROR:
        print()
        softmax_backward_table(args)
    return 0


def peak_extra(step, t, seeds) -> int:
    """The largest memory one call holds at once beyond what it was given, in
    bytes, as tracemalloc sees it (NumPy reports its array buffers to it); the
    results it returns count."""
    step(t, seeds)                          # warm: caches, pools, plans
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        step(t, seeds)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def memory_table(chosen: list, args) -> None:
    """Peak extra memory of one forward+backward, hand-written and tcc numpy,
    and tcc's estimated passes over memory (``tcc explain``): reads and writes
    of arrays in units of the largest one."""
    from tcc import explain
    from tcc.pipeline import Pipeline
    print("| workload | hand-written peak MiB | tcc numpy peak MiB | ratio "
          "| tcc passes forward + backward (estimated) |")
    print("| --- | --- | --- | --- | --- |")
    for w in chosen:
        sizes = w.quick if args.quick else w.sizes
        t, seeds = w.make(np.random.default_rng(0), np.dtype(args.dtype), **sizes)
        hand = peak_extra(w.hand, t, seeds)
        tcc_peak = peak_extra(tcc_column("numpy", True)(w), t, seeds)
        pipe = Pipeline(w.program.read_text(), str(w.program), optimize=True)
        moved = [explain.memory_passes(pipe, stage, sizes, grouped=True)
                 for stage in ("forward", "backward")]
        shown = "n/a" if None in moved else f"{moved[0]:.1f} + {moved[1]:.1f}"
        print(f"| {w.name} | {hand / 2**20:.1f} | {tcc_peak / 2**20:.1f} | "
              f"{tcc_peak / max(hand, 1):.2f}x | {shown} |")


def softmax_backward_table(args) -> None:
    """The softmax backward alone (the forward's values given): hand-written,
    tcc with the TTIC problem 3 fusion, and tcc unfused (optimize=False)."""
    w = BY_NAME["softmax"]
    sizes = w.quick if args.quick else w.sizes
    t, seeds = w.make(np.random.default_rng(0), np.dtype(args.dtype), **sizes)
    outputs, saved = w.hand.forward(t)
    steps = {"hand": lambda t_, s_: w.hand.backward(t_, saved, s_)}
    for label, opt in (("fused", True), ("unfused", False)):
        kernel = tcc.compile(str(w.program), optimize=opt)
        fwd = kernel.forward(**t)
        steps[label] = lambda t_, s_, k=kernel, f=fwd: k.backward(s_, **t_, **f)
    times: dict[str, list[float]] = {label: [] for label in steps}
    started = time.perf_counter()
    for _ in range(args.repeat):              # interleaved, as in bench_workload
        for label, step in steps.items():
            times[label].append(time_once(step, t, seeds))
        if time.perf_counter() - started > args.max_seconds:
            break
    hand = 1e3 * statistics.median(times["hand"])
    cells = [(label, 1e3 * statistics.median(times[label])) for label in ("fused", "unfused")]
    fused, unfused = cells[0][1], cells[1][1]
    print(f"softmax backward only ({size_label(sizes)}): hand-written {hand:.2f} ms | "
          f"tcc fused {fused:.2f} ms ({fused / hand:.2f}x hand) | tcc unfused "
          f"{unfused:.2f} ms ({unfused / hand:.2f}x hand; fused is "
          f"{unfused / fused:.2f}x faster)")


if __name__ == "__main__":
    sys.exit(main())
