"""Datasets: MNIST (offline first) and the three metric-learning benchmarks, plus the image cache."""

from .mnist import MNIST, load_mnist

__all__ = ["MNIST", "load_mnist"]
