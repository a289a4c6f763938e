"""Datasets: MNIST (offline first), the three metric-learning benchmarks, the image cache and batches."""

from ._common import CorruptImageError, DatasetNotFoundError, DownloadError, ListFileError, UnsafeArchiveError
from .augment import CachedBatches
from .cache import DATASETS, CacheError, ImageCache, prepare_dataset
from .cars import Cars196
from .cub import CUB200
from .mnist import MNIST, load_mnist
from .sop import StanfordOnlineProducts

__all__ = [
    "MNIST", "load_mnist", "CUB200", "Cars196", "StanfordOnlineProducts", "DATASETS", "prepare_dataset",
    "ImageCache", "CacheError", "CachedBatches", "DatasetNotFoundError", "ListFileError", "CorruptImageError",
    "DownloadError", "UnsafeArchiveError",
]
