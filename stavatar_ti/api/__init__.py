"""The public API of a trained avatar: `Avatar` (load, pose, render, reenact, export)."""

from .avatar import Avatar, Mesh

__all__ = ["Avatar", "Mesh"]
