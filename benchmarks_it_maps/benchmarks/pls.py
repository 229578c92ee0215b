"""Exact PLS2 regression (scikit-learn's ``PLSRegression`` algorithm, with exact singular vectors).

scikit-learn's ``PLSRegression`` (what Brain-Score's ``pls`` metric uses) finds each component's weight vector by
NIPALS power iteration, up to 500 iterations with tolerance 1e-6; on IT-map regressions it often stops at that limit
(``ConvergenceWarning``), so it is both slow and approximate. The weight vector NIPALS converges to is the first
singular vector pair of the deflated cross-covariance ``X_k^T Y_k``; here it is computed exactly from the small
``q x q`` matrix ``C^T C`` (q = number of targets). Everything else (centring, ``scale=False``, regression-mode
deflation, rotations, coefficients, intercept) follows scikit-learn, so predictions equal
``PLSRegression(scale=False)`` with ``algorithm='svd'`` and, where NIPALS converges, its default.
"""
from __future__ import annotations

import ctypes
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
from scipy.linalg import blas, cython_blas, cython_lapack, lapack
from threadpoolctl import ThreadpoolController


def top_eigenvector(matrix: np.ndarray) -> np.ndarray:
    """The unit eigenvector of the largest eigenvalue of a symmetric ``matrix`` (its lower triangle is read).

    LAPACK's ``dsyevr`` asked for that one pair only: the same vector as ``numpy.linalg.eigh(matrix)[1][:, -1]``
    (up to sign and rounding) at under half the cost, since no other eigenvector is computed.
    """
    size = matrix.shape[0]
    _, vectors, found, _, info = lapack.dsyevr(matrix, compute_v=1, range="I", il=size, iu=size, lower=1)
    if info != 0 or found != 1:
        raise np.linalg.LinAlgError(f"dsyevr did not converge on a {size} x {size} matrix (info {info})")
    return vectors[:, 0]


def _capsule_function(capsule) -> ctypes._CFuncPtr:
    """The C function a Cython ``__pyx_capi__`` capsule holds (scipy's ``cython_blas`` / ``cython_lapack``: the
    BLAS and LAPACK behind ``scipy.linalg``), callable through ctypes, which releases the GIL for the call. It is
    called with ``ctypes.c_void_p`` arguments only (every BLAS/LAPACK argument is a pointer), built once and
    passed as they are, which is what keeps ctypes' per-call cost to a few microseconds."""
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype, api.PyCapsule_GetName.argtypes = ctypes.c_char_p, [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return ctypes.CFUNCTYPE(None)(api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule)))


_DSYEVR = _capsule_function(cython_lapack.__pyx_capi__["dsyevr"])
_DGEMM = _capsule_function(cython_blas.__pyx_capi__["dgemm"])


class _Arguments:
    """Fortran-style arguments held in ctypes buffers: ``pointer(name)`` is a ``c_void_p`` to the value(s)."""

    def __init__(self, **values):
        self._buffers = {}
        for name, value in values.items():
            kind = {bytes: ctypes.c_char, float: ctypes.c_double}.get(type(value), ctypes.c_int)
            self._buffers[name] = (kind * 1)(value) if not isinstance(value, np.ndarray) else value
        self._pointers = {name: ctypes.c_void_p(ctypes.addressof(b) if not isinstance(b, np.ndarray)
                                                else b.ctypes.data) for name, b in self._buffers.items()}

    def pointer(self, name: str) -> ctypes.c_void_p:
        return self._pointers[name]

    def __setitem__(self, name: str, value) -> None:
        self._buffers[name][0] = value

    def __getitem__(self, name: str):
        return self._buffers[name][0]


class TopEigenvectors:
    """:func:`top_eigenvector` for a stack of symmetric matrices, with LAPACK's ``dsyevr`` called directly.

    The same LAPACK call with the same arguments as :func:`top_eigenvector` (scipy's wrapper: ``abstol`` 0,
    ``lwork`` 26 n, ``liwork`` 10 n, the lower triangle of the Fortran-ordered matrix, which for an exactly
    symmetric matrix is the same numbers in the same places), so the same vectors. Called through ctypes, which
    releases the GIL that scipy's wrapper holds, so the fold blocks of :meth:`LeaveOneGroupOutPLS.all_folds`
    find their eigenvectors at the same time on their own threads; nothing is copied or allocated per matrix.
    One instance per thread (it owns its work arrays)."""

    def __init__(self, max_size: int):
        self.max_size = int(max_size)
        m = self.max_size
        self._args = _Arguments(jobz=b"V", range=b"I", uplo=b"L", n=m, lda=m, vl=0.0, vu=0.0, il=m, abstol=0.0,
                                found=0, values=np.zeros(m), ldz=m, support=np.zeros(2, dtype=np.intc),
                                work=np.zeros(26 * m), lwork=26 * m, iwork=np.zeros(10 * m, dtype=np.intc),
                                liwork=10 * m, info=0)
        self._a, self._z = ctypes.c_void_p(), ctypes.c_void_p()
        ptr = self._args.pointer
        self._call = [ptr("jobz"), ptr("range"), ptr("uplo"), ptr("n"), self._a, ptr("lda"), ptr("vl"), ptr("vu"),
                      ptr("il"), ptr("il"), ptr("abstol"), ptr("found"), ptr("values"), self._z, ptr("ldz"),
                      ptr("support"), ptr("work"), ptr("lwork"), ptr("iwork"), ptr("liwork"), ptr("info")]

    def _set_size(self, size: int) -> None:
        for name, value in (("n", size), ("il", size), ("ldz", size), ("lwork", 26 * size), ("liwork", 10 * size)):
            self._args[name] = value

    def __call__(self, matrices: np.ndarray, sizes: Sequence[int], out: np.ndarray) -> None:
        """``out[n, :sizes[n]]`` = the top unit eigenvector of ``matrices[n, :sizes[n], :sizes[n]]`` for every n.

        ``matrices`` [N, q, q] C-contiguous float64, symmetric, overwritten; ``out`` [N, q] (or [N, q, 1])
        C-contiguous float64; ``q <= max_size``."""
        N, q, _ = matrices.shape
        if (q > self.max_size or matrices.dtype != np.float64 or out.dtype != np.float64
                or not (matrices.flags.c_contiguous and out.flags.c_contiguous) or out.size != N * q):
            raise ValueError(f"TopEigenvectors needs C-contiguous float64 [N, q, q] matrices and [N, q] outputs "
                             f"with q <= {self.max_size}; got {matrices.shape}, {out.shape}")
        self._args["lda"] = q
        base, stride, out_base, out_stride = matrices.ctypes.data, q * q * 8, out.ctypes.data, q * 8
        current = None
        for n, size in enumerate(sizes):
            if size != current:
                self._set_size(size)
                current = size
            self._a.value, self._z.value = base + n * stride, out_base + n * out_stride
            _DSYEVR(*self._call)
            if self._args["info"] != 0 or self._args["found"] != 1:
                raise np.linalg.LinAlgError(f"dsyevr did not converge on a {size} x {size} matrix "
                                            f"(info {self._args['info']})")


class ExactPLSRegression:
    """PLS2 regression with ``n_components`` latent components; ``scale=False`` (centring only), with intercept."""

    def __init__(self, n_components: int = 25):
        if n_components < 1:
            raise ValueError(f"n_components must be positive, got {n_components}")
        self.n_components = int(n_components)

    @staticmethod
    def _first_singular_vectors(cross: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First left/right singular vectors of ``cross`` (p x q), sign-fixed as scikit-learn's ``_svd_flip_1d``."""
        v = top_eigenvector(cross.T @ cross)
        u = cross @ v
        norm = np.linalg.norm(u)
        if norm == 0:
            return np.zeros(cross.shape[0]), v
        u /= norm
        sign = np.sign(u[np.argmax(np.abs(u))]) or 1.0
        return u * sign, v * sign

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "ExactPLSRegression":
        """Fit on ``X`` [n, p] and ``Y`` [n, q] (or [n]).

        Deflation is done implicitly: with ``t_k = X_k u_k``, ``p_k = X_k^T t_k / |t_k|^2`` and
        ``q_k = Y_k^T t_k / |t_k|^2``, the deflated matrices satisfy ``X_k u = X u - T_{<k} P_{<k}^T u``,
        ``X_k^T t = X^T t - P_{<k} T_{<k}^T t`` (likewise for Y), and the cross-covariance updates as
        ``C_{k+1} = C_k - |t_k|^2 p_k q_k^T``. This avoids rewriting the n x p matrix for every component
        (about 2 n p operations per component instead of n p q).
        """
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim == 1:
            Y = Y[:, None]
        self.x_mean_, self.y_mean_ = X.mean(axis=0), Y.mean(axis=0)
        Xc, Yc = X - self.x_mean_, Y - self.y_mean_
        n_samples, n_features = Xc.shape
        cross = Xc.T @ Yc
        W = np.zeros((n_features, self.n_components))
        P = np.zeros((n_features, self.n_components))
        Q = np.zeros((Yc.shape[1], self.n_components))
        T = np.zeros((n_samples, self.n_components))
        tolerance = np.finfo(np.float64).eps * max(1.0, float(np.abs(Xc).max())) ** 2 * n_samples
        k = 0
        while k < self.n_components:
            u, _ = self._first_singular_vectors(cross)
            t = Xc @ u - T[:, :k] @ (P[:, :k].T @ u)
            ss = t @ t
            if ss <= tolerance:
                break  # X is exhausted: no further component exists
            overlap = T[:, :k].T @ t
            p = (Xc.T @ t - P[:, :k] @ overlap) / ss
            q = (Yc.T @ t - Q[:, :k] @ overlap) / ss
            cross -= ss * np.outer(p, q)
            W[:, k], P[:, k], Q[:, k], T[:, k] = u, p, q, t
            k += 1
        W, P, Q = W[:, :k], P[:, :k], Q[:, :k]
        self.n_components_ = k
        rotations = W @ np.linalg.pinv(P.T @ W) if k else W
        self.coef_ = rotations @ Q.T  # [p, q]
        self.intercept_ = self.y_mean_ - self.x_mean_ @ self.coef_
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions [n, q] for ``X`` [n, p]: centred with the training mean, plus intercept."""
        return np.asarray(X, dtype=np.float64) @ self.coef_ + self.intercept_


def _usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the platform has one, else the CPU count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@functools.lru_cache(maxsize=None)
def _fold_workers(workers: int) -> ThreadPoolExecutor:
    """The threads that solve :meth:`LeaveOneGroupOutPLS.all_folds`' fold blocks, started once per process
    (starting threads for every call costs milliseconds on a busy machine)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pls-folds")


@functools.lru_cache(maxsize=None)
def _blas_controller() -> ThreadpoolController:
    """threadpoolctl's view of the loaded BLAS libraries, found once (looking them up again costs milliseconds);
    numpy's and scipy's are loaded by the time it is first asked for (this module imports both)."""
    return ThreadpoolController()


def single_threaded_blas():
    """A context in which numpy's and scipy's BLAS run on the calling thread only (threadpoolctl).

    The stacked fits use it throughout (:meth:`LeaveOneGroupOutPLS.all_folds` and the metric's shared
    predictions): their products are small enough that BLAS's own threads gain little (about 20% on the group
    Grams, nothing on the rest), and after every multi-threaded call OpenBLAS's idle threads spin-wait for a
    while, busy, on the core that the next step needs: this package's second fold block, or the model's next
    forward pass. Measured on a 2-core CPU (benchmarks/RESULTS.md): the metric's wall time unchanged, its CPU
    time 0.42 s down to 0.25 s, the end-to-end ``IT-pls`` score 18% faster. The parallel work is done by this
    module's own threads (the fold blocks of :meth:`LeaveOneGroupOutPLS.all_folds`) instead."""
    return _blas_controller().limit(limits=1, user_api="blas")


def stacked_products(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a[g] @ b[g]`` for every g (``a`` [G, m, k], ``b`` [G, k, n], float64), one ``dgemm`` each through scipy's
    BLAS, not ``numpy.matmul``: the same products up to rounding, and on this project's build machines (a VM whose
    CPU numpy 1.26's bundled OpenBLAS does not recognise, so it falls back to its generic SSE3 kernels, while
    scipy's newer OpenBLAS selects its AVX-512 ones) two to three times as fast (benchmarks/RESULTS.md). A
    transposed view is passed as its transpose with the transpose flag set, so nothing is copied."""
    out = np.empty((a.shape[0], a.shape[1], b.shape[2]))
    for g in range(a.shape[0]):
        left, right = a[g], b[g]
        flip_a, flip_b = not left.flags.f_contiguous, not right.flags.f_contiguous
        out[g] = blas.dgemm(1.0, left.T if flip_a else left, right.T if flip_b else right,
                            trans_a=flip_a, trans_b=flip_b)
    return out


def group_products(Xg: np.ndarray, Yg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each group's ``X_g^T X_g`` [G, p, p] and ``X_g^T Y_g`` [G, p, q] (``Xg`` [G, m, p], ``Yg`` [G, m, q]): one
    ``dsyrk`` per group (half the products of a general matrix product: the Gram is symmetric) and
    :func:`stacked_products`, through scipy's BLAS for the reason given there."""
    G, _, p = Xg.shape
    xx = np.empty((G, p, p))
    for g in range(G):
        xx[g] = blas.dsyrk(1.0, Xg[g].T)                        # upper triangle of X_g^T X_g
    lower = np.tril_indices(p, -1)
    xx[:, lower[0], lower[1]] = xx[:, lower[1], lower[0]]
    return xx, stacked_products(Xg.transpose(0, 2, 1), Yg)


class GramProducts:
    """``X^T X r`` for every fold and target set of :func:`stacked_components`: one BLAS ``dgemm`` per fold for
    all S sets, called directly (through ctypes, like :class:`TopEigenvectors`: without the GIL, so the fold
    blocks run at the same time, and with the transposes expressed as strides, so nothing is copied). The same
    products as ``numpy.matmul`` up to rounding. One instance per thread."""

    def __init__(self, xx: np.ndarray, n_sets: int):
        """``xx`` [G, p, p]: each fold's ``X^T X``, C-contiguous float64 (row i of the product is
        ``xx[g, i] @ r``); ``n_sets``: the S of the ``r`` it will be called with."""
        self.xx = np.ascontiguousarray(xx, dtype=np.float64)
        G, p, _ = self.xx.shape
        self.shape = (n_sets, G, p)
        self._args = _Arguments(transa=b"T", transb=b"N", p=p, sets=n_sets, stride=G * p, alpha=1.0, beta=0.0)
        self._a, self._b, self._c = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        ptr = self._args.pointer
        # column-major: out_g (p x S, leading dimension G p) = xx[g] viewed column-major, transposed (= xx[g]),
        # times r_g (p x S, leading dimension G p)
        self._call = [ptr("transa"), ptr("transb"), ptr("p"), ptr("sets"), ptr("p"), ptr("alpha"), self._a,
                      ptr("p"), self._b, ptr("stride"), ptr("beta"), self._c, ptr("stride")]

    def __call__(self, r: np.ndarray, out: np.ndarray) -> None:
        """``out[s, g] = xx[g] @ r[s, g]`` for ``r``, ``out`` [S, G, p], C-contiguous float64."""
        if r.shape != self.shape or out.shape != self.shape or not (
                r.flags.c_contiguous and out.flags.c_contiguous and r.dtype == out.dtype == np.float64):
            raise ValueError(f"GramProducts needs C-contiguous float64 r and out of shape {self.shape}; "
                             f"got {r.shape}, {out.shape}")
        S, G, p = self.shape
        xx, rs, outs, row = self.xx.ctypes.data, r.ctypes.data, out.ctypes.data, p * 8
        for g in range(G):
            self._a.value, self._b.value, self._c.value = xx + g * p * row, rs + g * row, outs + g * row
            _DGEMM(*self._call)


def _basis_coordinates(basis: np.ndarray, size: int, vectors: np.ndarray) -> np.ndarray:
    """Coordinates ``[N, size + 1]`` of ``vectors`` [N, p] in the orthonormal rows ``basis[:, :size]``, after
    appending to it (as row ``size``) each vector's normalised part outside them; the last coordinate is that
    part's norm. Classical Gram-Schmidt, repeated where the part outside is under half the vector (where one pass
    can leave it measurably non-orthogonal), so the rows stay orthonormal to working precision."""
    span = basis[:, :size]
    out = np.zeros((len(vectors), size + 1))
    residual = vectors.copy()
    length = np.linalg.norm(vectors, axis=1)
    for attempt in range(2):
        step = np.matmul(span, residual[:, :, None])
        residual -= np.matmul(step.transpose(0, 2, 1), span)[:, 0]
        out[:, :size] += step[:, :, 0]
        out[:, size] = np.linalg.norm(residual, axis=1)
        if attempt == 0 and not (out[:, size] < 0.5 * length).any():
            break
    # where the part outside is zero (an exhausted fold's zero loading), the new row stays zero: dividing by 1
    # there instead of masking the division (where=, which took half of this function's time)
    np.divide(residual, np.where(out[:, size] > 0, out[:, size], 1.0)[:, None], out=basis[:, size])
    return out


def stacked_components(xx: np.ndarray, cross: np.ndarray, tolerance: np.ndarray, widths: Sequence[int],
                       n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """The PLS coefficients of many folds and target sets at once, in the kernel form of
    :class:`LeaveOneGroupOutPLS` (the steps of :meth:`LeaveOneGroupOutPLS.fold`, as stacked matrices).

    ``xx`` [G, p, p]: each fold's centred ``X^T X``; ``cross`` [S, G, p, q]: each target set's centred ``X^T Y``
    per fold, set s using its first ``widths[s]`` columns (the rest zero); ``tolerance`` [G]: the
    ``|t|^2`` below which a fold's X is exhausted. Returns the coefficients [S, G, p, q] and the components used
    [S, G].

    The savings change the arithmetic by rounding only. ``X^T X r`` is one product per fold for all S sets.
    Everything else lives in an orthonormal basis of the span of ``C_0``'s q columns and the loadings ``p_j``
    (q + k vectors at component k, one more per component): the deflated cross-covariance
    ``C_k = C_0 - sum_j p_j (|t_j|^2 q_j)^T``, the weights ``w_k`` (from ``C_k``), the rotations ``r_k``
    (combinations of the weights) and the loadings. A component then costs (q + k) q for ``C_k^T C_k`` instead of
    p q, and the only feature-space work is ``r_k`` itself, its product with ``X^T X`` and the one new basis
    vector. Where that span is the whole feature space (q + K >= p), the standard basis is kept. Predictions do
    not depend on the sign of a weight vector (every sign change cancels exactly in ``r q^T``), so none is fixed.
    """
    S, G, p, q = cross.shape
    N, K = S * G, n_components
    reduced = q + K < p
    width = q + K if reduced else p
    sizes = np.repeat(np.asarray(widths), G)
    limit = np.tile(tolerance, S)
    first = cross.reshape(N, p, q)
    coords = np.zeros((N, width, q))      # C_k = basis^T @ coords
    if reduced:
        basis = np.zeros((N, width, p))   # orthonormal rows; a row is zero where a loading added nothing new
        orthonormal, coords[:, :q] = np.linalg.qr(first)
        basis[:, :q] = orthonormal.transpose(0, 2, 1)
        start = coords[:, :q].copy()      # C_0 = basis[:, :q]^T @ start
    else:
        coords[:] = first
        start = first
    Rc, Pc = np.zeros((N, K, width)), np.zeros((N, K, width))   # rotations and loadings, in coordinates
    Q = np.zeros((N, K, q))
    active = np.ones(N, dtype=bool)
    used = np.zeros(N, dtype=int)
    top_eigenvectors, gram_products, xx_r = TopEigenvectors(q), GramProducts(xx, S), np.zeros((N, p))
    for k in range(K):
        dim = q + k if reduced else p
        C = coords[:, :dim]
        gram = np.matmul(C.transpose(0, 2, 1), C)
        v = np.zeros((N, q, 1))
        top_eigenvectors(gram, sizes, v)
        w = np.matmul(C, v)[:, :, 0]                                             # C_k v, in coordinates
        norm = np.linalg.norm(w, axis=1)
        w = np.divide(w, norm[:, None], out=np.zeros_like(w), where=norm[:, None] != 0)
        c_r = w - np.matmul(np.matmul(Pc[:, :k, :dim], w[:, :, None]).transpose(0, 2, 1), Rc[:, :k, :dim])[:, 0]
        r = np.matmul(c_r[:, None, :], basis[:, :dim])[:, 0] if reduced else c_r
        gram_products(np.ascontiguousarray(r).reshape(S, G, p), xx_r.reshape(S, G, p))
        ss = np.einsum("np,np->n", r, xx_r)
        active &= ss > limit  # a fold whose X is exhausted stops for good, as fold() breaks
        if not active.any():
            break
        ss = np.where(active, ss, 1.0)
        p_k = np.where(active[:, None], xx_r / ss[:, None], 0.0)
        q_k = np.where(active[:, None], np.matmul(c_r[:, None, :start.shape[1]], start)[:, 0] / ss[:, None], 0.0)
        c_p = _basis_coordinates(basis, dim, p_k) if reduced else p_k
        coords[:, :c_p.shape[1]] -= c_p[:, :, None] * ((ss * active)[:, None] * q_k)[:, None, :]
        Rc[:, k, :dim] = np.where(active[:, None], c_r, 0.0)
        Pc[:, k, :c_p.shape[1]], Q[:, k] = c_p, q_k
        used += active
    coef = np.matmul(Rc.transpose(0, 2, 1), Q)                                     # [N, width, q]
    if reduced:
        coef = np.matmul(basis.transpose(0, 2, 1), coef)
    return coef.reshape(S, G, p, q), used.reshape(S, G)


class LeaveOneGroupOutPLS:
    """Every leave-one-group-out fold of :class:`ExactPLSRegression`, from cross-products shared by all folds.

    The folds' training sets differ by one group (one image: its P grid positions), so each fold's centred
    ``X^T X`` and ``X^T Y`` are the totals minus the held-out group's, corrected for the fold's mean. The kernel
    form of PLS (Dayal & MacGregor 1997) needs nothing else: with rotations ``r_k`` (``t_k = X r_k``),
    ``|t_k|^2 = r_k^T X^T X r_k``, ``p_k = X^T X r_k / |t_k|^2``, ``q_k = (X^T Y)^T r_k / |t_k|^2`` and the same
    deflation of the cross-covariance as :meth:`ExactPLSRegression.fit`. A fold then costs O(p^2) per component
    instead of O(n p): cheaper whenever the features are fewer than the training rows times a small factor
    (:meth:`cheaper_than_refitting`). Same components, coefficients and predictions as refitting each fold, up to
    floating-point rounding (tests: 1e-8 on scores).

    ``Y`` may also be a list of target sets on the same ``X`` (a site's maps and the floor's, two arrays on one
    monkey's images): :meth:`all_folds` fits each set's folds, and everything that depends on ``X`` alone is done
    once for all of them (:meth:`fold` fits the first set).
    """

    def __init__(self, X: np.ndarray, Y: np.ndarray | Sequence[np.ndarray], groups: int):
        """``X`` [groups * m, p], ``Y`` [groups * m, q] (or a list of such), rows grouped consecutively (m rows
        per group)."""
        X = np.asarray(X, dtype=np.float64)
        target_sets = [np.asarray(y, dtype=np.float64) for y in (Y if isinstance(Y, (list, tuple)) else [Y])]
        n, self.p = X.shape
        self.m = n // groups
        self.Xg = X.reshape(groups, self.m, self.p)
        self.sum_x = self.Xg.sum(axis=1)                                         # [G, p]
        self.widths = [y.reshape(n, -1).shape[1] for y in target_sets]
        Yg = np.concatenate([y.reshape(groups, self.m, -1) for y in target_sets], axis=2)
        sum_y = Yg.sum(axis=1)                                                   # [G, sum of q]
        self.xx, xy = group_products(self.Xg, Yg)                               # [G, p, p], [G, p, sum of q]
        self.total_xx = self.xx.sum(axis=0)
        bounds = np.cumsum([0] + self.widths)
        self.sum_ys = [sum_y[:, a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        self.xys = [xy[:, :, a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        self.sum_y, self.xy = self.sum_ys[0], self.xys[0]                        # the first set (fold())
        self.total_xy = self.xy.sum(axis=0)
        self.groups = groups

    @staticmethod
    def cheaper_than_refitting(groups: int, rows_per_group: int, n_features: int, n_targets: int,
                               n_components: int) -> bool:
        """Whether shared cross-products take fewer operations than refitting each fold: G m p^2 once plus
        2 a p^2 per fold, against 4 a n p + 2 n p q per fold (n = (G - 1) m training rows)."""
        n_train = (groups - 1) * rows_per_group
        shared = groups * rows_per_group * n_features ** 2 + groups * 2 * n_components * n_features ** 2
        refit = groups * (4 * n_components * n_train * n_features + 2 * n_train * n_features * n_targets)
        return shared < refit

    #: Largest working memory (bytes, :meth:`stack_bytes`) :meth:`all_folds` uses; beyond it, fit fold by fold.
    MAX_STACK_BYTES = 1 << 30

    @staticmethod
    def stack_bytes(groups: int, n_sets: int, n_features: int, n_targets: int, n_components: int) -> int:
        """The working memory of :meth:`all_folds`: per fold and target set, the cross-covariance, its basis and
        the rotations and loadings in it (:func:`stacked_components`), plus each group's and fold's ``X^T X``."""
        width = min(n_targets + n_components, n_features)
        per_problem = n_features * (2 * n_targets + width) + 2 * n_components * width
        return 8 * (groups * n_sets * per_problem + 2 * groups * n_features ** 2)

    #: The folds are solved in this many fixed blocks of consecutive folds, each on its own thread when the
    #: machine has the cores (the blocks do not depend on the thread count, so neither do the numbers).
    FOLD_BLOCKS = 2

    def all_folds(self, n_components: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Every fold at once, one ``(coef [G, p, q], intercept [G, q], components used [G])`` per target set (all
        its columns), the same numbers as :meth:`fold` for each held-out group up to rounding. The folds'
        components are computed as stacked matrices (:func:`stacked_components`), so the per-component work is a
        few batched operations, not a loop per fold."""
        G, n_train = self.groups, (self.groups - 1) * self.m
        x_mean = (self.sum_x.sum(axis=0)[None] - self.sum_x) / n_train                    # [G, p]
        xx = self.total_xx[None] - self.xx - n_train * x_mean[:, :, None] * x_mean[:, None, :]
        tolerance = np.finfo(np.float64).eps * self.p * np.maximum(1.0, np.trace(xx, axis1=1, axis2=2))
        q_max = max(self.widths)
        y_means, cross = [], np.zeros((len(self.widths), G, self.p, q_max))
        for s, (sum_y, xy) in enumerate(zip(self.sum_ys, self.xys)):
            y_mean = (sum_y.sum(axis=0)[None] - sum_y) / n_train                         # [G, q]
            cross[s, :, :, :sum_y.shape[1]] = (xy.sum(axis=0)[None] - xy
                                               - n_train * x_mean[:, :, None] * y_mean[:, None, :])
            y_means.append(y_mean)
        blocks = np.array_split(np.arange(G), min(self.FOLD_BLOCKS, G))
        workers = max(1, min(len(blocks), _usable_cores()))
        with single_threaded_blas():
            parts = list(_fold_workers(workers).map(lambda b: stacked_components(
                xx[b], cross[:, b], tolerance[b], self.widths, n_components), blocks))
        coef, used = (np.concatenate([part[i] for part in parts], axis=1) for i in range(2))
        results = []
        for s, (width, y_mean) in enumerate(zip(self.widths, y_means)):
            coef_s = np.ascontiguousarray(coef[s, :, :, :width])
            results.append((coef_s, y_mean - np.einsum("gp,gpq->gq", x_mean, coef_s), used[s]))
        return results

    def fold(self, held_out: int, n_components: int, columns: np.ndarray | None = None) -> tuple[np.ndarray,
                                                                                                  np.ndarray, int]:
        """Fit the fold without group ``held_out`` on the target ``columns`` (default all); returns
        (coef [p, q'], intercept [q'], components used), as :meth:`ExactPLSRegression.fit` on the training rows."""
        n_train = (self.groups - 1) * self.m
        sx = self.sum_x.sum(axis=0) - self.sum_x[held_out]
        sy = self.sum_y.sum(axis=0) - self.sum_y[held_out]
        xx = self.total_xx - self.xx[held_out]
        xy = self.total_xy - self.xy[held_out]
        if columns is not None:
            sy, xy = sy[columns], xy[:, columns]
        x_mean, y_mean = sx / n_train, sy / n_train
        xx = xx - n_train * np.outer(x_mean, x_mean)   # centred X^T X of the training rows
        cross = xy - n_train * np.outer(x_mean, y_mean)  # centred X^T Y
        xty = cross.copy()
        R = np.zeros((self.p, n_components))
        P = np.zeros((self.p, n_components))
        Q = np.zeros((cross.shape[1], n_components))
        # X is exhausted when |t|^2 is at the rounding level of r^T (X^T X) r, about eps * p * trace(X^T X) for a
        # unit r (ExactPLSRegression's own test, eps * max|Xc|^2 * n, needs the rows this form never sees).
        tolerance = np.finfo(np.float64).eps * self.p * max(1.0, float(np.trace(xx)))
        k = 0
        while k < n_components:
            w, _ = ExactPLSRegression._first_singular_vectors(cross)
            r = w - R[:, :k] @ (P[:, :k].T @ w)
            xx_r = xx @ r
            ss = float(r @ xx_r)
            if ss <= tolerance:
                break
            p, q = xx_r / ss, (xty.T @ r) / ss
            cross -= ss * np.outer(p, q)
            R[:, k], P[:, k], Q[:, k] = r, p, q
            k += 1
        coef = R[:, :k] @ Q[:, :k].T
        return coef, y_mean - x_mean @ coef, k
