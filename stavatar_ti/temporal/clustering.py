"""FLAME-conditioned Temporal Clustering (FTC; method.md Sec. 10.1), with scikit-learn.

Per training frame: expression -> PCA(12), pose [jaw, neck, eyes, rotation] (15) -> PCA(12),
translation (3) raw; each block L2-normalised (norm + 1e-6) and weighted by sqrt(0.3), sqrt(0.6),
sqrt(0.1); k-means (random_state 42, n_init 10 pinned) for K in k_range; the K with the highest
silhouette score wins. Clusters are lists of timesteps, visited in label order.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

WEIGHTS = (0.3, 0.6, 0.1)


def ftc_features(expr: np.ndarray, pose: np.ndarray, translation: np.ndarray, n_components: int = 12,
                 seed: int = 42) -> np.ndarray:
    """[T,E], [T,15], [T,3] -> [T, 2*n_components + 3] clustering features (see module docstring)."""
    blocks = []
    for x, w, reduce in zip((expr, pose, translation), WEIGHTS, (True, True, False)):
        x = np.asarray(x, np.float64)
        if reduce and x.shape[1] > n_components:
            k = min(n_components, x.shape[0])
            x = PCA(n_components=k, random_state=seed).fit_transform(x)
        x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6)
        blocks.append(np.sqrt(w) * x)
    return np.concatenate(blocks, 1)


def ftc_cluster(timesteps: np.ndarray, expr, pose, translation, k_range=range(5, 13), seed: int = 42,
                n_components: int = 12):
    """Cluster training frames; returns (list of sorted timestep arrays in label order, chosen K,
    silhouette scores per K). `n_components` is the PCA size of the expression and pose blocks
    (config densify.pca_components). With fewer frames than K+1 the K values that cannot be scored
    are skipped; with fewer than 3 frames everything is one cluster."""
    timesteps = np.asarray(timesteps)
    feats = ftc_features(expr, pose, translation, n_components=n_components, seed=seed)
    scores, best = {}, None
    for k in k_range:
        if k >= len(timesteps):
            break
        labels = KMeans(n_clusters=k, random_state=seed, n_init=10).fit_predict(feats)
        if len(np.unique(labels)) < 2:
            continue
        scores[k] = float(silhouette_score(feats, labels))
        if best is None or scores[k] > scores[best[0]]:
            best = (k, labels)
    if best is None:
        return [np.sort(timesteps)], 1, scores
    k, labels = best
    return [np.sort(timesteps[labels == c]) for c in range(k) if (labels == c).any()], k, scores
