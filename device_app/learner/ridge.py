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
    ‖x‖ in the A_b⁻¹ norm, both current after every update.
    """

    def __init__(self, arms: np.ndarray, lam: float = 1.0) -> None:
        arms = np.asarray(arms, dtype=np.float64)
        if arms.ndim != 3 or lam <= 0:
            raise ValueError(f"need arms of shape (models, arms, features) and lam > 0, got {arms.shape}, {lam}")
        self.arms = arms
        self.lam = float(lam)
        n_models, _, dim = arms.shape
        self.a_inv = np.repeat(np.eye(dim)[None] / self.lam, n_models, axis=0)
        self.b = np.zeros((n_models, dim))
        self.theta = np.zeros((n_models, dim))
        self.n = np.zeros(n_models, dtype=np.int64)
        self._refresh()

    @property
    def dim(self) -> int:
        return self.arms.shape[2]

    def reset(self, model: int, prior: np.ndarray | None = None) -> None:
        """Forget model ``model``'s observations; its estimate falls back to ``prior`` (zero by default)."""
        self.a_inv[model] = np.eye(self.dim) / self.lam
        self.b[model] = 0.0 if prior is None else self.lam * np.asarray(prior, dtype=np.float64)
        self.theta[model] = self.a_inv[model] @ self.b[model]
        self.n[model] = 0
        self._refresh()

    def update(self, arm: int, y: np.ndarray, models: slice = slice(None)) -> None:
        """One observation of ``arm`` for each selected model (``y`` has one value per model)."""
        x = self.arms[models, arm]  # (m, d)
        a_inv = self.a_inv[models]  # a view: slices of the bank
        ax = (a_inv @ x[:, :, None])[:, :, 0]
        ax /= np.sqrt(1.0 + np.einsum("md,md->m", x, ax))[:, None]
        a_inv -= ax[:, :, None] * ax[:, None, :]
        self.b[models] += np.asarray(y, dtype=np.float64)[:, None] * x
        self.theta[models] = (a_inv @ self.b[models][:, :, None])[:, :, 0]
        self.n[models] += 1
        self._refresh()

    def _refresh(self) -> None:
        self.mean = np.einsum("bkd,bd->bk", self.arms, self.theta)
        # Clipped at zero: with badly scaled features, rounding can make xᵀA⁻¹x negative.
        q = np.einsum("bkd,bkd->bk", self.arms @ self.a_inv, self.arms)
        self.width = np.sqrt(np.maximum(q, 0.0))

    def state(self, model: int) -> dict:
        return {"a_inv": self.a_inv[model].tolist(), "b": self.b[model].tolist(), "n": int(self.n[model])}

    def load_state(self, model: int, state: dict) -> None:
        a_inv = np.asarray(state["a_inv"], dtype=np.float64)
        b = np.asarray(state["b"], dtype=np.float64)
        if a_inv.shape != (self.dim, self.dim) or b.shape != (self.dim,):
            raise ValueError(f"ridge state has shape {a_inv.shape}/{b.shape}, expected dimension {self.dim}")
        if not (np.all(np.isfinite(a_inv)) and np.all(np.isfinite(b))):
            raise ValueError("ridge state holds non-finite numbers")
        self.a_inv[model], self.b[model], self.n[model] = a_inv, b, int(state["n"])
        self.theta[model] = a_inv @ b
        self._refresh()
