"""Online ridge regression with the inverse kept by Sherman–Morrison (O(d²) per update)."""

from __future__ import annotations

import numpy as np


class RidgeModel:
    """θ = A⁻¹b with A = λI + Σxxᵀ and b = Σx·y, updated one observation at a time."""

    def __init__(self, dim: int, lam: float = 1.0) -> None:
        if dim < 1 or lam <= 0:
            raise ValueError(f"ridge model needs dim >= 1 and lam > 0, got dim={dim}, lam={lam}")
        self.dim = dim
        self.lam = float(lam)
        self.reset()

    def reset(self, prior: np.ndarray | None = None) -> None:
        """Forget every observation; the estimate falls back to ``prior`` (zero by default)."""
        self.a_inv = np.eye(self.dim) / self.lam
        self.b = np.zeros(self.dim) if prior is None else self.lam * np.asarray(prior, dtype=np.float64)
        self.theta = self.a_inv @ self.b
        self.n = 0

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Mean estimate for each row of ``x`` (or one vector)."""
        return x @ self.theta

    def widths(self, x: np.ndarray) -> np.ndarray:
        """‖x‖ in the A⁻¹ norm for each row of ``x``: the confidence width before scaling.

        Clipped at zero: with badly scaled features, rounding can make xᵀA⁻¹x negative.
        """
        q = np.einsum("ij,ij->i", x @ self.a_inv, x)
        return np.sqrt(np.maximum(q, 0.0))


    def update(self, x: np.ndarray, y: float) -> None:
        ax = self.a_inv @ x
        self.a_inv -= (ax / (1.0 + float(x @ ax)))[:, None] * ax
        self.b += y * x
        self.theta = self.a_inv @ self.b
        self.n += 1

    def state(self) -> dict:
        return {"dim": self.dim, "lam": self.lam, "a_inv": self.a_inv.tolist(), "b": self.b.tolist(), "n": self.n}

    def load_state(self, state: dict) -> None:
        a_inv = np.asarray(state["a_inv"], dtype=np.float64)
        b = np.asarray(state["b"], dtype=np.float64)
        if a_inv.shape != (self.dim, self.dim) or b.shape != (self.dim,):
            raise ValueError(f"ridge state has shape {a_inv.shape}/{b.shape}, expected dim {self.dim}")
        if not (np.all(np.isfinite(a_inv)) and np.all(np.isfinite(b))):
            raise ValueError("ridge state holds non-finite numbers")
        self.a_inv, self.b, self.n = a_inv, b, int(state["n"])
        self.theta = self.a_inv @ self.b
