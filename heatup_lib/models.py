"""The embedding networks: LeNet (2-d, MNIST); Inception v1 and a small CPU convnet (benchmarks).

All three map images to *un-normalised* features ``f`` of shape (N, D); the head
(:class:`heatup_lib.heads.NormalizedSoftmax`) normalises them and scores the classes.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from .checks import check_bool, check_int

__all__ = [
    "LeNet",
    "InceptionEmbedder",
    "googlenet_weights_path",
    "load_googlenet_state_dict",
    "INCEPTION_NORMALIZATION",
    "SmallConvEmbedder",
]

logger = logging.getLogger(__name__)

# torchvision's GoogLeNet ImageNet weights were ported from the original TF model, which takes
# inputs scaled to [-1, 1] ("transform_input" in torchvision turns ImageNet mean/std input into
# exactly this). We feed the network directly, so the weights expect (x - 0.5) / 0.5 per channel
# for x in [0, 1] -- the TF-slim convention of the authors' code (SPEC section 5).
INCEPTION_NORMALIZATION: dict[str, tuple[float, float, float]] = {
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
}

_ACTIVATIONS = ("relu", "prelu")


class LeNet(nn.Module):
    """LeNet for 28x28 digits with a low-dimensional embedding (SPEC: conv 32@5x5, pool, conv 64@5x5, pool, fc 500, fc D).

    Convolutions use 'same' padding (28 -> 14 -> 7) as TF-slim's ``lenet``, whose channel counts
    (32, 64) the authors' MNIST network shares; ``activation`` is ReLU (TF-slim's default) or
    PReLU. The last layer has no activation: its output is the feature ``f``.
    Input: float (N, 1, 28, 28); output: (N, embedding_dim).
    """

    def __init__(self, embedding_dim: int = 2, activation: str = "relu") -> None:
        super().__init__()
        if int(embedding_dim) != embedding_dim or embedding_dim < 1:
            raise ValueError(f"embedding_dim must be a positive integer, got {embedding_dim!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
        self.embedding_dim = int(embedding_dim)
        self.activation = activation

        def act(num_channels: int) -> nn.Module:
            return nn.ReLU() if activation == "relu" else nn.PReLU(num_channels)

        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=5, padding=2), act(32), nn.MaxPool2d(2),   # (N, 32, 14, 14)
            nn.Conv2d(32, 64, kernel_size=5, padding=2), act(64), nn.MaxPool2d(2),  # (N, 64, 7, 7)
        )
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 7 * 7, 500), act(500),
            nn.Linear(500, self.embedding_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Map images (N, 1, 28, 28) to features (N, embedding_dim)."""
        if x.dim() != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"LeNet expects input of shape (N, 1, 28, 28), got {tuple(x.shape)}")
        return self.fc(self.features(x))


def googlenet_weights_path() -> Path:
    """Where torch hub caches torchvision's GoogLeNet ImageNet weights (the file may not exist)."""
    from torchvision.models import GoogLeNet_Weights

    filename = os.path.basename(GoogLeNet_Weights.IMAGENET1K_V1.url)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _missing_weights_message(path: Path, reason: str) -> str:
    return (
        f"GoogLeNet ImageNet weights not found ({reason}); expected the file at {path}. "
        "To get it, run on a machine with internet access: "
        "python -c \"import torchvision; torchvision.models.googlenet(weights='IMAGENET1K_V1')\" "
        f"and copy the file it downloads (torch.hub.get_dir()/checkpoints/{path.name}) to {path} "
        "here, or pass its location as pretrained='/path/to/file.pth'. "
        "pretrained=False trains from scratch (the paper's numbers assume ImageNet weights)."
    )


def load_googlenet_state_dict(source: str | os.PathLike | None = None, download: bool = False) -> dict[str, Tensor]:
    """Load a GoogLeNet state dict with ``torch.load(weights_only=True)``: from a file, or from the torch hub cache.

    ``source=None`` means torchvision's IMAGENET1K_V1 weights in the hub cache; with
    ``download=True`` they are fetched the way torchvision fetches them when missing.
    Raises ``FileNotFoundError`` saying where the file is expected and how to get it.
    """
    if source is not None:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(_missing_weights_message(path, f"no file at pretrained={str(source)!r}"))
        return torch.load(path, map_location="cpu", weights_only=True)
    path = googlenet_weights_path()
    if path.is_file():
        logger.info("loading GoogLeNet ImageNet weights from %s", path)
        return torch.load(path, map_location="cpu", weights_only=True)
    if not download:
        raise FileNotFoundError(_missing_weights_message(path, "not in the torch hub cache and download=False"))
    from torchvision.models import GoogLeNet_Weights

    try:
        return torch.hub.load_state_dict_from_url(
            GoogLeNet_Weights.IMAGENET1K_V1.url, map_location="cpu", progress=False,
            check_hash=True, weights_only=True,
        )
    except Exception as exc:  # offline: URLError, socket errors, ...
        raise FileNotFoundError(_missing_weights_message(path, f"download failed: {exc}")) from exc


class InceptionEmbedder(nn.Module):
    """Inception v1 (torchvision GoogLeNet, with batch norm) -> global average pool -> 1x1 conv "bottleneck" 1024 -> D.

    No auxiliary classifiers, no dropout, no activation after the bottleneck (SPEC section 5).
    ``pretrained``: True loads torchvision's ImageNet weights from the torch hub cache (or
    downloads them when ``download=True`` and online), a path loads a GoogLeNet state dict
    from that file, False initialises from scratch (with a warning). ``bottleneck_bias=False``
    for the BN head variant, whose batch norm supplies the shift. Inputs: float (N, 3, H, W)
    normalised with :attr:`input_normalization`; any H, W >= 32 works (224 in the paper).
    """

    input_normalization: dict[str, tuple[float, float, float]] = INCEPTION_NORMALIZATION

    def __init__(
        self,
        embedding_dim: int = 64,
        pretrained: bool | str | os.PathLike = True,
        bottleneck_bias: bool = True,
        download: bool = True,
    ) -> None:
        super().__init__()
        from torchvision.models import GoogLeNet

        if int(embedding_dim) != embedding_dim or embedding_dim < 1:
            raise ValueError(f"embedding_dim must be a positive integer, got {embedding_dim!r}")
        if not isinstance(pretrained, (bool, str, os.PathLike)):
            raise ValueError(f"pretrained must be True, False or a file path, got {pretrained!r}")
        self.embedding_dim = int(embedding_dim)
        from_scratch = pretrained is False
        state = None
        if not from_scratch:
            source = None if pretrained is True else pretrained
            state = load_googlenet_state_dict(source, download=download)
        else:
            warnings.warn(
                "InceptionEmbedder(pretrained=False) trains GoogLeNet from scratch; the paper's "
                "numbers assume ImageNet-pretrained weights.",
                UserWarning,
                stacklevel=2,
            )
        # init_weights=False: PyTorch's default initialisation (torchvision's truncated-normal
        # init is slow and is overwritten anyway when weights are loaded).
        net = GoogLeNet(num_classes=1000, aux_logits=False, transform_input=False,
                        init_weights=False, dropout=0.0)
        if state is not None:
            state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2.", "fc."))}
            missing, unexpected = net.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing or unexpected:
                raise ValueError(
                    f"pretrained={str(pretrained)!r} is not a GoogLeNet state dict: "
                    f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                    f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
                )
        self.backbone = nn.Sequential(
            net.conv1, net.maxpool1, net.conv2, net.conv3, net.maxpool2,
            net.inception3a, net.inception3b, net.maxpool3,
            net.inception4a, net.inception4b, net.inception4c, net.inception4d, net.inception4e,
            net.maxpool4, net.inception5a, net.inception5b,
        )  # (N, 1024, H/32, W/32)
        self.pool = nn.AdaptiveAvgPool2d(1)  # (N, 1024, 1, 1)
        self.bottleneck = nn.Conv2d(1024, self.embedding_dim, kernel_size=1, bias=bottleneck_bias)

    def forward(self, x: Tensor) -> Tensor:
        """Map images (N, 3, H, W) to features (N, embedding_dim)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"InceptionEmbedder expects input of shape (N, 3, H, W), got {tuple(x.shape)}")
        return self.bottleneck(self.pool(self.backbone(x))).flatten(1)


class SmallConvEmbedder(nn.Module):
    """A small convnet for CPUs, ending like :class:`InceptionEmbedder`: global pool -> 1x1 conv to D.

    ``len(widths)`` stages of ``convs_per_stage`` x (3x3 conv, batch norm, ReLU), a 2x2 max-pool
    between stages; then global average pooling and a 1x1 conv "bottleneck" to ``embedding_dim``
    with no activation after it, so the same head (:class:`heatup_lib.heads.NormalizedSoftmax`)
    takes either network. ``bottleneck_bias=False`` for the BN head variant. Trained from
    scratch; inputs float (N, 3, H, W) normalised with :attr:`input_normalization` ([-1, 1], as
    Inception's), any H, W >= 2 ** (len(widths) - 1).
    """

    input_normalization: dict[str, tuple[float, float, float]] = INCEPTION_NORMALIZATION

    def __init__(
        self,
        embedding_dim: int = 64,
        widths: tuple[int, ...] = (16, 32, 64),
        convs_per_stage: int = 2,
        bottleneck_bias: bool = True,
    ) -> None:
        super().__init__()
        self.embedding_dim = check_int("embedding_dim", embedding_dim, min_value=1)
        widths = tuple(widths)
        if not widths:
            raise ValueError(f"widths must be a non-empty sequence of integers >= 1, got {widths!r}")
        self.widths = tuple(check_int("widths[]", w, min_value=1) for w in widths)
        self.convs_per_stage = check_int("convs_per_stage", convs_per_stage, min_value=1)
        check_bool("bottleneck_bias", bottleneck_bias)
        layers: list[nn.Module] = []
        channels = 3
        for i, width in enumerate(self.widths):
            if i > 0:
                layers.append(nn.MaxPool2d(2))  # halve the resolution between stages
            for _ in range(self.convs_per_stage):
                layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False),
                           nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                channels = width
        self.backbone = nn.Sequential(*layers)  # (N, widths[-1], H / 2^(S-1), W / 2^(S-1))
        self.pool = nn.AdaptiveAvgPool2d(1)  # (N, widths[-1], 1, 1)
        self.bottleneck = nn.Conv2d(channels, self.embedding_dim, kernel_size=1,
                                    bias=bottleneck_bias)

    def forward(self, x: Tensor) -> Tensor:
        """Map images (N, 3, H, W) to features (N, embedding_dim)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"SmallConvEmbedder expects input of shape (N, 3, H, W), "
                             f"got {tuple(x.shape)}")
        return self.bottleneck(self.pool(self.backbone(x))).flatten(1)
