"""Closed forms that trained networks must match (paper.md §4; the derivations are ours).

**Linear FCN, one layer.** f(x) = Wx from W₀ = R, gradient descent on the squared error of the
training images X (d × n, identity target). Every gradient is (W X − X) Xᵀ, whose rows lie in the
span of the training images, so W moves only there and converges to

    W∞ = R + (X − R X) X⁺ = Π∥ + R Π⊥,   Π∥ = X X⁺ (projector onto span X), Π⊥ = I − Π∥.

The trained map is the identity on the span of the training images and the *initial random
matrix* on everything orthogonal to it: for one image x̂, f(x) = Π∥x + R Π⊥x.

>>> X = torch.tensor([[1.0], [0.0]], dtype=torch.float64)       # one training "image" e₁
>>> R = torch.tensor([[0.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
>>> linear_fcn_limit(R, X)
tensor([[1., 2.],
        [0., 4.]], dtype=torch.float64)
"""
from __future__ import annotations

import functools

import torch

__all__ = ["projectors", "linear_fcn_limit", "end_to_end", "leftover_rms", "init_gain",
           "input_jacobian", "iterate", "remaining_error", "one_layer_iterates"]


def _columns(X: torch.Tensor) -> torch.Tensor:
    """Training images as the columns of a float64 (d, n) matrix; accepts (n, 1, 28, 28) too."""
    X = X.double()
    return X.flatten(1).T if X.dim() > 2 else X


def projectors(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Π∥, Π⊥): orthogonal projectors onto the span of the training images and its complement.

    Π∥ = X X⁺, with pseudo-inverse's default cut-off (singular values below max(d, n) · eps of the
    largest are zero). With more images than pixels (n > d) X is first reduced to the triangular
    factor of Xᵀ = QR: X = Rᵀ Qᵀ has the span and singular values of Rᵀ (d × d), so the SVD is of
    a d × d matrix instead of d × n (60,000 MNIST images: about 3× faster, equal to round-off).
    """
    X = _columns(X)
    rtol = max(X.shape) * torch.finfo(X.dtype).eps
    if X.shape[1] > X.shape[0]:
        X = torch.linalg.qr(X.T, mode="r")[1].T                        # (d, d), same span
    par = X @ torch.linalg.pinv(X, rtol=rtol)
    return par, torch.eye(X.shape[0], dtype=X.dtype) - par


def linear_fcn_limit(R: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """W∞ = R + (X − R X) X⁺: where gradient descent from W₀ = R converges on the identity task."""
    X = _columns(X)
    R = R.double()
    return R + (X - R @ X) @ torch.linalg.pinv(X)


def end_to_end(model) -> torch.Tensor:
    """The matrix W_L ⋯ W_1 (float64) of a linear FCN without biases: f(x) = W x."""
    W = None
    for layer in model.layers:
        if layer.bias is not None:
            raise ValueError("end_to_end needs a network without biases")
        w = layer.weight.detach().double()
        W = w if W is None else w @ W
    return W


def leftover_rms(W: torch.Tensor, X: torch.Tensor) -> float:
    """Root-mean-square singular value of W Π⊥: how strongly a linear map passes on what is
    orthogonal to the training images. Any linear network that fits x̂ exactly computes
    f(x) = Π∥x + W Π⊥x, so this number alone separates depths and inits.

    >>> X = torch.zeros(784, 1, dtype=torch.float64); X[0] = 1
    >>> round(leftover_rms(torch.eye(784, dtype=torch.float64), X), 6)
    1.0
    """
    _, perp = projectors(X)
    rank = int(round(float(torch.trace(perp))))
    return float(torch.linalg.matrix_norm(W.double() @ perp) / rank ** 0.5)


INIT_VARIANCE = {  # Var(w) · fan_in of each scheme for a square layer (ReLU gain for "he")
    "xavier_uniform": 1.0, "xavier_normal": 1.0, "orthogonal": 1.0, "he": 2.0, "default": 1.0 / 3.0,
}


def init_gain(scheme: str, scale: float = 1.0) -> float:
    """Expected factor by which one square random layer scales the norm of a vector:
    √(fan_in · Var w) · scale. A depth-L product of such layers scales it by gain^L.

    >>> round(init_gain("default"), 4), init_gain("xavier_uniform", 0.5)
    (0.5774, 0.5)
    """
    return (INIT_VARIANCE[scheme] ** 0.5) * scale


def input_jacobian(model, x: torch.Tensor) -> torch.Tensor:
    """∂f(x)/∂x of a network at one input (1, 28, 28): a (784, 784) float64 matrix. Its singular
    values say how much the network passes on small changes of its input: all ≈ 1 for the
    identity, all ≈ 0 for a constant function.
    """
    dtype = next(model.parameters()).dtype

    def f(v):
        return model(v.view(1, *x.shape)).flatten()

    J = torch.autograd.functional.jacobian(f, x.detach().to(dtype).flatten(), vectorize=True)  # one batched backward
    return J.double()


@torch.no_grad()
def iterate(model, x: torch.Tensor, n: int) -> torch.Tensor:
    """x, f(x), f(f(x)), … (n applications): (n + 1, *x.shape). A training image that attracts
    the iterates is *memorized* in the sense of Radhakrishnan et al. (2018)."""
    dtype = next(model.parameters()).dtype
    out = [x.detach().to(dtype)]
    for _ in range(n):
        out.append(model(out[-1].unsqueeze(0))[0])
    return torch.stack(out).float()


def one_layer_iterates(R: torch.Tensor, X: torch.Tensor, x: torch.Tensor, steps) -> dict:
    """Where the trained one-layer map f = Π∥ + R Π⊥ (:func:`linear_fcn_limit`) sends ``x`` when
    applied again and again, in closed form.

    Split x = a + b (a = Π∥x in the span of the training images X, b = Π⊥x orthogonal to it). f
    keeps a (f(a) = a) and sends b to R b, whose Π∥ part joins the span for good, so with
    M = Π⊥ R Π⊥ (R seen from the complement):

        fⁿ(x) = a + Π∥ R (I + M + … + Mⁿ⁻¹) b + Mⁿ b.

    If M's spectral radius ρ is below 1 the iterates converge, at rate ρⁿ, to the point of the span
    x∞ = a + Π∥ R (I − M)⁻¹ b (I − M is invertible when ρ < 1): for
    one training image, a multiple of it. If ρ > 1 the part off the span grows without bound.

    ``x`` is one input (any shape with d pixels) or a batch (N, ...); ``steps`` the iteration
    counts wanted. Returns ``{"iterates": (len(steps), N, d), "limit": (N, d) or None,
    "radius": ρ}``, float64.

    >>> R = torch.tensor([[0.0, 0.3], [0.2, 0.5]], dtype=torch.float64)
    >>> X = torch.tensor([[1.0], [0.0]], dtype=torch.float64)          # one training image e₁
    >>> out = one_layer_iterates(R, X, torch.tensor([0.0, 1.0]), [0, 1, 50])
    >>> out["iterates"][:, 0].tolist()[:2], round(out["radius"], 3)
    ([[0.0, 1.0], [0.3, 0.5]], 0.5)
    >>> [round(v, 6) for v in out["limit"][0].tolist()]               # 0.3 (1 + 0.5 + …) = 0.6
    [0.6, 0.0]
    """
    X = _columns(X)
    d = X.shape[0]
    R = R.double()
    par, perp = projectors(X)
    xs = x.double().reshape(-1, d) if x.numel() != d else x.double().reshape(1, d)
    a, b = xs @ par.T, xs @ perp.T                                   # rows: inputs
    M = perp @ R @ perp
    radius = float(torch.linalg.eigvals(M).abs().max())
    # the terms of the closed form built up one n at a time: Mⁿ b and S_n b = (I + M + … + Mⁿ⁻¹) b,
    # as M^{n+1} b = M (Mⁿ b) and S_{n+1} b = S_n b + Mⁿ b: matrix-vector products only, instead
    # of a matrix power and a solve for every n wanted
    wanted = sorted({int(n) for n in steps})
    at = {}
    Mn_b, S_b = b.T, torch.zeros_like(b.T)
    for n in range(wanted[-1] + 1 if wanted else 0):
        if n in wanted:
            at[n] = a + (par @ R @ S_b).T + Mn_b.T
        S_b, Mn_b = S_b + Mn_b, M @ Mn_b
    out = [at[int(n)] for n in steps]
    limit = None
    if radius < 1:
        limit = a + (par @ R @ torch.linalg.solve(torch.eye(d, dtype=M.dtype) - M, b.T)).T
    return {"iterates": torch.stack(out), "limit": limit, "radius": radius}


def remaining_error(W: torch.Tensor, R: torch.Tensor, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Along each principal direction uᵢ of the training images: the data's variance λᵢ and the
    fraction ‖(W − I)uᵢ‖ / ‖(R − I)uᵢ‖ of the initial error that training has not yet removed.

    Gradient descent shrinks that fraction as exp(−c·t·λᵢ) (c set by the learning rate and the
    loss), so directions the data spans strongly are learned first; directions it does not span
    at all (λᵢ = 0) keep the random initial map R for good.
    Returns (λ, fraction), both of length 784, λ in decreasing order.
    """
    X = _columns(X)                                       # (784, n)
    lam, U = torch.linalg.eigh(X @ X.T / X.shape[1])      # (784,), (784, 784): no n x n matrix
    lam, U = lam.flip(0).clamp_min(0.0), U.flip(1)
    eye = torch.eye(X.shape[0], dtype=X.dtype)
    before = ((R.double() - eye) @ U).norm(dim=0)
    after = ((W.double() - eye) @ U).norm(dim=0)
    return lam, after / before


# --- One-layer CNN (paper.md §4; the closed forms below are our derivation) ---------------------
#
# f(x) = w ⊛ x (one k × k filter, zero "same" padding, no bias) = P(x) w, with P(x) the patch
# (im2col) matrix of x. The filter δ (a 1 at the centre) computes the identity: P(x) δ = x.
# Gradient descent on ‖P(x̂) w − x̂‖² only ever adds gradients 2 P(x̂)ᵀ(P(x̂) w − x̂), which lie in
# the row space of P(x̂), so the part of w in N = ker P(x̂) never changes and w converges to
#
#     w∞ = δ + Π_N (w₀ − δ),     f(x) − x = P(x) Π_N (w₀ − δ):
#
# the exact identity when the training patches have full rank k², else an error bounded by
# ‖P(x)‖ ‖Π_N (w₀ − δ)‖.

__all__ += ["patch_matrix", "identity_filter", "patch_rank", "cnn_limit", "cnn_after_steps",
            "cnn_heavy_ball", "cnn_test_error", "cnn_error_bound", "patch_norms"]

RANK_RTOL = 1e-10  # singular values below this fraction of the largest count as zero


def _image2d(x: torch.Tensor) -> torch.Tensor:
    """One image as a float64 (H, W) tensor; accepts (H, W), (1, H, W) and (1, 1, H, W)."""
    x = x.detach().double()
    while x.dim() > 2:
        if x.shape[0] != 1:
            raise ValueError(f"expected one single-channel image, got shape {tuple(x.shape)}")
        x = x[0]
    return x


def patch_matrix(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """P(x): the float64 patch (im2col) matrix of one image, (784, k²) for MNIST. Row (i, j) holds
    the k × k patch centred on pixel (i, j), zeros outside the image, so that a one-layer CNN with
    filter w (zero padding k // 2, no bias: torch's conv2d, a cross-correlation, and identlib's
    CNN) computes f(x) = P(x) w.flatten().

    >>> x = torch.arange(1.0, 10.0).view(3, 3)
    >>> patch_matrix(x, 3)[4]                          # the centre pixel sees the whole image
    tensor([1., 2., 3., 4., 5., 6., 7., 8., 9.], dtype=torch.float64)
    >>> patch_matrix(x, 3)[0]                          # a corner pixel: zeros outside
    tensor([0., 0., 0., 0., 1., 2., 0., 4., 5.], dtype=torch.float64)
    >>> torch.equal(patch_matrix(x, 3) @ identity_filter(3).flatten(), x.flatten().double())
    True
    """
    import torch.nn.functional as F

    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer (got {kernel_size})")
    x = _image2d(x)
    cols = F.unfold(x[None, None], kernel_size, padding=kernel_size // 2)   # (1, k², H·W)
    return cols[0].T.contiguous()                                          # (H·W, k²)


def identity_filter(kernel_size: int) -> torch.Tensor:
    """δ: the k × k float64 filter with a 1 at the centre, which copies its input.

    >>> identity_filter(3)
    tensor([[0., 0., 0.],
            [0., 1., 0.],
            [0., 0., 0.]], dtype=torch.float64)
    """
    delta = torch.zeros(kernel_size, kernel_size, dtype=torch.float64)
    delta[kernel_size // 2, kernel_size // 2] = 1.0
    return delta


def patch_rank(x: torch.Tensor, kernel_size: int, rtol: float = RANK_RTOL) -> int:
    """Numerical rank of P(x): singular values above ``rtol`` times the largest. At most
    min(k², number of pixels); a single lit corner pixel gives (k // 2 + 1)².

    >>> corner = torch.zeros(28, 28); corner[0, 0] = 1
    >>> patch_rank(corner, 3), patch_rank(torch.ones(28, 28), 3)
    (4, 9)
    """
    s, _ = _patch_svd(x, kernel_size)
    return int((s > rtol * s[0]).sum()) if s[0] > 0 else 0


@functools.lru_cache(maxsize=64)
def _patch_svd_cached(data: bytes, shape: tuple, kernel_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.frombuffer(bytearray(data), dtype=torch.float64).view(shape)
    _, s, vh = torch.linalg.svd(patch_matrix(x, kernel_size), full_matrices=False)
    return s, vh


def _patch_svd(x_hat: torch.Tensor, kernel_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Singular values and right singular vectors (rows) of the thin SVD of P(x̂), remembered per
    image and kernel size (the chapters ask for the same ones many times). Callers must not
    modify the returned tensors."""
    x = _image2d(x_hat).contiguous()
    return _patch_svd_cached(x.numpy().tobytes(), tuple(x.shape), kernel_size)


def cnn_limit(w0: torch.Tensor, x_hat: torch.Tensor, rtol: float = RANK_RTOL) -> torch.Tensor:
    """w∞ = δ + Π_N(w₀ − δ), N = ker P(x̂): where gradient descent (with or without momentum) from
    the filter ``w0`` ((k, k) or a conv weight (1, 1, k, k)) converges on the identity task with
    the single training image ``x_hat``. Returns a (k, k) float64 filter: δ when P(x̂) has full
    rank k², otherwise δ plus the part of w₀ − δ that x̂'s patches cannot see.

    >>> x_hat = torch.zeros(28, 28); x_hat[0, 0] = 1   # one lit corner pixel: taps (2, ·), (·, 2) unseen
    >>> cnn_limit(torch.ones(3, 3), x_hat)
    tensor([[0., 0., 1.],
            [0., 1., 1.],
            [1., 1., 1.]], dtype=torch.float64)
    """
    k = w0.shape[-1]
    s, vh = _patch_svd(x_hat, k)
    rows = vh[s > rtol * s[0]]                                  # (rank, k²): row space of P(x̂)
    delta = identity_filter(k).flatten()
    d = w0.detach().double().reshape(-1) - delta                # w₀ − δ
    return (delta + d - rows.T @ (rows @ d)).view(k, k)


def cnn_after_steps(w0: torch.Tensor, x_hat: torch.Tensor, lr: float, steps: int,
                    loss_reduction: str = "sum") -> torch.Tensor:
    """The filter after ``steps`` steps of plain gradient descent (no momentum) from ``w0``:

        w_t = δ + (I − 2η P̂ᵀP̂)^t (w₀ − δ),   P̂ = P(x̂),  η = lr (summed loss) or lr / pixels (mean).

    Exact at every t, converged or not: along a right singular vector of P̂ with singular value
    σ, the initial error w₀ − δ shrinks by (1 − 2ησ²) per step; along N (σ = 0) it stays. For
    0 < η < 1/σ_max² it tends to :func:`cnn_limit`. Returns a (k, k) float64 filter.

    >>> x_hat = torch.zeros(28, 28); x_hat[0, 0] = 1
    >>> cnn_after_steps(torch.ones(3, 3), x_hat, lr=0.25, steps=1)   # seen taps move halfway to δ
    tensor([[0.5000, 0.5000, 1.0000],
            [0.5000, 1.0000, 1.0000],
            [1.0000, 1.0000, 1.0000]], dtype=torch.float64)
    """
    if loss_reduction not in ("sum", "mean"):
        raise ValueError(f"loss_reduction must be sum or mean (got {loss_reduction!r})")
    k = w0.shape[-1]
    s, vh = _patch_svd(x_hat, k)                                # thin SVD: the rest is N, factor 1
    eta = lr if loss_reduction == "sum" else lr / _image2d(x_hat).numel()
    delta = identity_filter(k).flatten()
    d = w0.detach().double().reshape(-1) - delta
    seen = vh @ d
    return (delta + d + vh.T @ (((1 - 2 * eta * s ** 2) ** steps - 1) * seen)).view(k, k)


def cnn_heavy_ball(x_hat: torch.Tensor, kernel_size: int) -> tuple[float, float]:
    """Polyak's heavy-ball step and momentum for the summed squared error ‖P(x̂) w − x̂‖² of a
    one-layer CNN, from the extreme non-zero singular values of P(x̂): with L = 2σ²_max and
    μ = 2σ²_min, lr = 4 / (√L + √μ)² and momentum = ((√L − √μ) / (√L + √μ))², rounded to 3
    significant digits of lr and of 1 − momentum, both towards stability (the exact values sit
    within μ/(L + μ) of its edge). The error then shrinks by about (√κ − 1)/(√κ + 1) per step,
    κ = L/μ, against (κ − 1)/(κ + 1) for plain gradient descent at its best step 2/(L + μ).
    Momentum keeps every update a combination of gradients, so the limit is still
    :func:`cnn_limit`.

    >>> cnn_heavy_ball(torch.ones(28, 28), 1)       # P is one column of norm 28: L = μ
    (0.000637, 0.0)
    """
    import math

    s = torch.linalg.svdvals(patch_matrix(x_hat, kernel_size))
    s = s[s > RANK_RTOL * s[0]]
    big, small = float(2 ** 0.5 * s[0]), float(2 ** 0.5 * s[-1])
    lr = 4 / (big + small) ** 2
    momentum = ((big - small) / (big + small)) ** 2

    def floor3(v):                                   # round down to 3 significant digits
        e = math.floor(math.log10(v)) - 2
        return float(f"{math.floor(v / 10 ** e)}e{e}")

    return floor3(lr), float(f"{1 - floor3(1 - momentum):.12g}")


def cnn_test_error(w: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """‖f(x) − x‖ for each of ``inputs`` (N, 1, H, W), f the one-layer CNN with filter ``w``
    ((k, k) or (1, 1, k, k)): ‖P(x)(w − δ)‖, computed as a convolution. Float64, shape (N,).

    >>> x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    >>> cnn_test_error(identity_filter(5), x).tolist()
    [0.0, 0.0]
    """
    import torch.nn.functional as F

    k = w.shape[-1]
    diff = (w.detach().double().reshape(k, k) - identity_filter(k))[None, None]   # (1, 1, k, k)
    return F.conv2d(inputs.double(), diff, padding=k // 2).flatten(1).norm(dim=1)


def cnn_error_bound(w0: torch.Tensor, x_hat: torch.Tensor, inputs: torch.Tensor,
                    rtol: float = RANK_RTOL) -> torch.Tensor:
    """‖P(x)‖₂ ‖Π_N(w₀ − δ)‖ for each of ``inputs`` (N, 1, H, W): a bound on the test error
    ‖f(x) − x‖ = ‖P(x) Π_N(w₀ − δ)‖ of the limit :func:`cnn_limit` (zero, up to round-off, when
    P(x̂) has full rank). Float64, shape (N,).

    >>> x_hat = torch.zeros(28, 28); x_hat[0, 0] = 1
    >>> x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    >>> bool((cnn_test_error(cnn_limit(torch.ones(3, 3), x_hat), x)
    ...       <= cnn_error_bound(torch.ones(3, 3), x_hat, x)).all())
    True
    """
    k = w0.shape[-1]
    left = (cnn_limit(w0, x_hat, rtol) - identity_filter(k)).norm()            # ‖Π_N(w₀ − δ)‖
    return patch_norms(inputs, k) * left


def patch_norms(inputs: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """‖P(x)‖₂, the largest singular value of each input's patch matrix, for ``inputs``
    (N, 1, H, W): the square root of the largest eigenvalue of the smaller Gram matrix (PᵀP or
    PPᵀ), all inputs in one batched call (several times faster than one SVD per input; equal to
    ``torch.linalg.matrix_norm(P, 2)`` to round-off). Float64, shape (N,).

    >>> dot = torch.zeros(1, 1, 28, 28); dot[..., 14, 14] = 1   # P(dot): orthonormal columns
    >>> patch_norms(dot, 3)
    tensor([1.], dtype=torch.float64)
    """
    P = torch.stack([patch_matrix(x, kernel_size) for x in inputs])           # (N, H·W, k²)
    gram = P.mT @ P if P.shape[-1] <= P.shape[-2] else P @ P.mT
    return torch.linalg.eigvalsh(gram)[..., -1].clamp(min=0).sqrt()
