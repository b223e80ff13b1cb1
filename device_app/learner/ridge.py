"""Online ridge regression over a fixed set of arms, with A⁻¹ kept by Sherman–Morrison.

Every model sees the same K arms (the splits) through its own feature vectors, so each
update also refreshes every arm's mean and confidence width: choosing a split then costs
no matrix work. Several independent models (the network and edge parts of the delay)
live side by side in one bank and are updated in one vectorised step, which matters
more than flops at these sizes: numpy's per-call overhead dominates.
"""

from __future__ import annotations

import numpy as np


class ArmRidge:
    """B independent ridge models θ_b = A_b⁻¹ b_b with A_b = λI + Σxxᵀ, b_b = Σx·y.

    ``arms`` has shape (B, K, d): model b's feature vector of arm k is ``arms[b, k]``
    (pad with zeros to share d). ``mean[b, k]`` is the estimate and ``width[b, k]`` is
    ‖x‖ in the A_b⁻¹ norm, both current after every update. ``theta[b]`` is a (d, 1) column.
    """

    def __init__(self, arms: np.ndarray, lam: float = 1.0) -> None:
        arms = np.asarray(arms, dtype=np.float64)
        if arms.ndim != 3 or lam <= 0:
            raise ValueError(f"need arms of shape (models, arms, features) and lam > 0, got {arms.shape}, {lam}")
        self.arms = arms
        self.lam = float(lam)
        n_models, _, dim = arms.shape
        self.arms_col, self.arms_row = arms[:, :, :, None], arms[:, :, None, :]
        self.gram = np.repeat(np.eye(dim)[None] * self.lam, n_models, axis=0)  # A, to recover A⁻¹ from
        self.a_inv = np.repeat(np.eye(dim)[None] / self.lam, n_models, axis=0)
        self.b = np.zeros((n_models, dim, 1))  # column vectors: matmul needs no reshaping
        self.theta = np.zeros((n_models, dim, 1))
        self.n = [0] * n_models  # observations per model (a list: cheaper to bump than an array)
        self._refresh()

    @property
    def dim(self) -> int:
        return self.arms.shape[2]

    def reset(self, model: int, prior: np.ndarray | None = None) -> None:
        """Forget model ``model``'s observations; its estimate falls back to ``prior`` (zero by default)."""
        self.gram[model] = np.eye(self.dim) * self.lam
        self.a_inv[model] = np.eye(self.dim) / self.lam
        self.b[model, :, 0] = 0.0 if prior is None else self.lam * np.asarray(prior, dtype=np.float64)
        self.theta[model] = self.a_inv[model] @ self.b[model]
        self.n[model] = 0
        self._refresh()

    def update(self, arm: int, y: np.ndarray, models: slice = slice(None)) -> None:
        """One observation of ``arm`` for each selected model (``y`` has one value per model)."""
        x = self.arms_col[models, arm]  # (m, d, 1)
        gram = self.gram[models]  # views: slices of the bank
        gram += x * x.transpose(0, 2, 1)
        a_inv = self.a_inv[models]
        u = a_inv @ x
        q = self.arms_row[models, arm] @ u
        if q.min() >= 0.0:
            u /= np.sqrt(1.0 + q)  # A⁻¹x / sqrt(1 + xᵀA⁻¹x)
            a_inv -= u * u.transpose(0, 2, 1)
        else:
            # xᵀA⁻¹x < 0 cannot happen in exact arithmetic: rounding has broken A⁻¹ (the paper's
            # raw features reach 1e10). Start again from A itself.
            a_inv[...] = np.linalg.pinv(gram)
        b = self.b[models]
        b += np.asarray(y, dtype=np.float64)[:, None, None] * x
        self.theta[models] = a_inv @ b
        for i in range(*models.indices(len(self.n))):
            self.n[i] += 1
        self._refresh()

    def _refresh(self) -> None:
        self.mean = (self.arms @ self.theta)[:, :, 0]
        # Clipped at zero: with badly scaled features, rounding can make xᵀA⁻¹x negative.
        q = ((self.arms @ self.a_inv) * self.arms).sum(axis=2)
        self.width = np.sqrt(np.maximum(q, 0.0))

    def soften(self, factor: float) -> None:
        """Keep every model's estimate but weigh the observations behind it ``factor`` times less
        (a prior, not the truth): the data part of each A is divided by it, b is set so that θ
        stays, widths grow, and the next observations move the estimates as much as ``1/factor``
        of the old ones did."""
        eye = np.eye(self.dim) * self.lam
        self.gram = eye + (self.gram - eye) / factor
        self.a_inv = np.linalg.inv(self.gram)
        self.b = self.gram @ self.theta
        self._refresh()

    def state(self, model: int) -> dict:
        return {"a_inv": self.a_inv[model].tolist(), "b": self.b[model, :, 0].tolist(), "n": int(self.n[model])}

    def load_state(self, model: int, state: dict) -> None:
        a_inv = np.asarray(state["a_inv"], dtype=np.float64)
        b = np.asarray(state["b"], dtype=np.float64)
        if a_inv.shape != (self.dim, self.dim) or b.shape != (self.dim,):
            raise ValueError(f"ridge state has shape {a_inv.shape}/{b.shape}, expected dimension {self.dim}")
        if not (np.all(np.isfinite(a_inv)) and np.all(np.isfinite(b))):
            raise ValueError("ridge state holds non-finite numbers")
        self.a_inv[model], self.b[model, :, 0], self.n[model] = a_inv, b, int(state["n"])
        self.gram[model] = np.linalg.pinv(a_inv)
        self.theta[model] = a_inv @ self.b[model]
        self._refresh()
