"""EASE (Steck 2019) as the paper writes it, in plain numpy/scipy: the bench's reference, not the product's.

Binary interactions (every rated or watched pair counts 1), dense float64 inverse, no pruning.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def fit_reference_ease(history: sp.csr_matrix, l2: float) -> np.ndarray:
    """B = I − P · diag(1/diag(P)) with P = (XᵀX + λI)⁻¹, on the binary history."""
    binary = history.copy()
    binary.data[:] = 1.0
    gram = (binary.T @ binary).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    precision = np.linalg.inv(gram)
    weights = -precision / np.diag(precision)
    np.fill_diagonal(weights, 0.0)
    return weights


def reference_scores(history: sp.csr_matrix, weights: np.ndarray):
    binary = history.copy()
    binary.data[:] = 1.0
    return lambda rows: np.asarray(binary[rows] @ weights)
