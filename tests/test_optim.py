"""AdamW against an independent numpy transcription of torch.optim.AdamW (and torch's clip_grad_norm_)."""

import numpy as np
import tensorflow as tf

from dppo.utils.optim import AdamW


def torch_adamw(params, grads_seq, lr, wd, max_norm, b1=0.9, b2=0.999, eps=1e-8):
    """PyTorch's documented AdamW: decoupled decay first, then the bias-corrected Adam step."""
    p = [x.copy() for x in params]
    m = [np.zeros_like(x) for x in params]
    v = [np.zeros_like(x) for x in params]
    norms = []
    for t, grads in enumerate(grads_seq, start=1):
        norm = np.sqrt(sum(float((g ** 2).sum()) for g in grads))
        norms.append(norm)
        if max_norm is not None:  # torch.nn.utils.clip_grad_norm_
            grads = [g * min(1.0, max_norm / (norm + 1e-6)) for g in grads]
        for i, g in enumerate(grads):
            p[i] = p[i] - lr * wd * p[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            m_hat, v_hat = m[i] / (1 - b1 ** t), v[i] / (1 - b2 ** t)
            p[i] = p[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p, norms


def run_ours(params, grads_seq, lr, wd, max_norm):
    vs = [tf.Variable(x) for x in params]
    opt = AdamW(vs, lr, wd, max_grad_norm=max_norm)
    norms = [float(opt.apply([tf.constant(g) for g in grads])) for grads in grads_seq]
    return [v.numpy() for v in vs], norms


def test_adamw_matches_torch_semantics():
    rng = np.random.default_rng(0)
    params = [rng.standard_normal((3, 2)), rng.standard_normal((2,))]
    params = [x.astype(np.float64) for x in params]
    # step 2's gradient norm is above max_norm (clipped), steps 1 and 3 below
    grads_seq = [[0.1 * rng.standard_normal(x.shape) for x in params],
                 [3.0 * rng.standard_normal(x.shape) for x in params],
                 [0.2 * rng.standard_normal(x.shape) for x in params]]
    want, want_norms = torch_adamw(params, grads_seq, lr=0.05, wd=0.1, max_norm=1.0)
    got, got_norms = run_ours([x.astype(np.float32) for x in params],
                              [[g.astype(np.float32) for g in gs] for gs in grads_seq], lr=0.05, wd=0.1, max_norm=1.0)
    assert want_norms[1] > 1.0 > max(want_norms[0], want_norms[2])
    np.testing.assert_allclose(got_norms, want_norms, rtol=1e-5)  # the norm before clipping is returned
    for g, w, p0 in zip(got, want, params):
        np.testing.assert_allclose(g, w, rtol=0, atol=2e-6)
        assert np.abs(w - p0).max() > 0.05  # the steps moved the parameters well beyond the tolerance


def test_first_step_is_lr_times_sign():
    """Closed form: from m = v = 0, m_hat / sqrt(v_hat) = g / |g|, so p1 = p0 (1 - lr wd) - lr sign(g) (to eps)."""
    p0, g = np.array([1.0, -2.0, 0.5], np.float32), np.array([0.3, -4.0, 1e-3], np.float32)
    got, _ = run_ours([p0], [[g]], lr=0.01, wd=0.5, max_norm=None)
    np.testing.assert_allclose(got[0], p0 * (1 - 0.01 * 0.5) - 0.01 * np.sign(g), atol=1e-6)
