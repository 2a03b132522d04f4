"""Temporal ADC (method.md Sec. 10): FTC clustering, fused perceptual error gathering, sparse
per-(cluster, Gaussian) statistics and the cluster-scheduled densifier."""

from .clustering import ftc_cluster, ftc_features
from .densifier import TemporalADC, clone_with_noise, halve_opacity_logit
from .error import gather_gaussian_error
from .stats import SparseDensityStats

__all__ = ["SparseDensityStats", "TemporalADC", "clone_with_noise", "ftc_cluster", "ftc_features",
           "gather_gaussian_error", "halve_opacity_logit"]
