"""heatup: Heated-Up Softmax Embedding (Zhang et al., 2018), a thin library behind an executable book."""

__version__ = "0.1.0"
