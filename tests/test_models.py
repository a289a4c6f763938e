"""LeNet and the Inception embedder: shapes, weights loading from the hub cache or a file, clear errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from heatup_lib import models
from heatup_lib.models import INCEPTION_NORMALIZATION, InceptionEmbedder, LeNet


@pytest.mark.parametrize("dim,activation", [(2, "relu"), (3, "prelu")])
def test_lenet_shapes_and_layers(dim, activation):
    net = LeNet(dim, activation=activation)
    out = net(torch.randn(5, 1, 28, 28))
    assert out.shape == (5, dim)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(32, (5, 5)), (64, (5, 5))]
    assert [(l.in_features, l.out_features) for l in linears] == [(64 * 7 * 7, 500), (500, dim)]
    # the embedding is the last linear layer's output: no activation after it
    assert isinstance(net.fc[-1], nn.Linear)
    acts = nn.PReLU if activation == "prelu" else nn.ReLU
    assert sum(isinstance(m, acts) for m in net.modules()) == 3


def test_lenet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="activation"):
        LeNet(2, activation="tanh")
    with pytest.raises(ValueError, match="embedding_dim"):
        LeNet(0)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        LeNet()(torch.randn(2, 28, 28))


@pytest.fixture(scope="module")
def scratch_embedder():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return InceptionEmbedder(16, pretrained=False)


def test_inception_shapes_small_inputs_and_channels_last(scratch_embedder):
    net = scratch_embedder.eval()
    X = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = net(X)
        assert out.shape == (2, 16)
        assert net(torch.randn(1, 3, 32, 32)).shape == (1, 16)
        net_cl = net.to(memory_format=torch.channels_last)
        out_cl = net_cl(X.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out_cl, out, rtol=1e-4, atol=1e-4)
    net.to(memory_format=torch.contiguous_format)
    # no auxiliary heads, no dropout, no classifier: only the backbone, the pool and the 1x1 bottleneck
    names = {n.split(".")[0] for n, _ in net.named_modules() if n}
    assert names == {"backbone", "pool", "bottleneck"}
    assert not any(isinstance(m, nn.Dropout) for m in net.modules())
    assert net.bottleneck.in_channels == 1024 and net.bottleneck.kernel_size == (1, 1)
    assert net.input_normalization == INCEPTION_NORMALIZATION
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        net(torch.randn(2, 1, 64, 64))


def test_pretrained_false_warns_and_bottleneck_bias_option(scratch_embedder):
    with pytest.warns(UserWarning, match="ImageNet"):
        net = InceptionEmbedder(8, pretrained=False, bottleneck_bias=False)
    assert net.bottleneck.bias is None
    assert scratch_embedder.bottleneck.bias is not None


def test_missing_hub_weights_give_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    expected = tmp_path / "hub" / "checkpoints" / "googlenet-1378be20.pth"
    assert models.googlenet_weights_path() == expected
    with pytest.raises(FileNotFoundError) as info:
        InceptionEmbedder(8, pretrained=True, download=False)
    message = str(info.value)
    assert str(expected) in message and "IMAGENET1K_V1" in message and "pretrained=False" in message
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        InceptionEmbedder(8, pretrained=str(tmp_path / "nowhere.pth"))


def _googlenet_state(seed: int) -> dict[str, torch.Tensor]:
    from torchvision.models import GoogLeNet

    torch.manual_seed(seed)
    # aux_logits=True, as in torchvision's checkpoint file: the embedder must drop those keys
    return GoogLeNet(aux_logits=True, init_weights=False).state_dict()


def test_load_weights_from_path_and_hub_cache(tmp_path, monkeypatch):
    state = _googlenet_state(3)
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    net = InceptionEmbedder(8, pretrained=path)
    loaded = net.backbone.state_dict()
    # backbone index 0 is conv1, 5 is inception3a: compare against the saved tensors
    assert torch.equal(loaded["0.conv.weight"], state["conv1.conv.weight"])
    assert torch.equal(loaded["5.branch1.conv.weight"], state["inception3a.branch1.conv.weight"])
    assert torch.equal(loaded["15.branch4.1.bn.running_var"], state["inception5b.branch4.1.bn.running_var"])
    # the same file found in the torch hub cache ("the real way")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cached = models.googlenet_weights_path()
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    net2 = InceptionEmbedder(8, pretrained=True, download=False)
    assert torch.equal(net2.backbone.state_dict()["0.conv.weight"], state["conv1.conv.weight"])


def test_weights_are_loaded_with_weights_only(tmp_path, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    path = tmp_path / "weights.pth"
    torch.save(_googlenet_state(0), path)
    InceptionEmbedder(8, pretrained=path)
    assert calls == [True]
    # a pickle that is not plain tensors is refused by weights_only loading
    evil = tmp_path / "evil.pth"
    torch.save({"conv1.conv.weight": _Opaque()}, evil)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        InceptionEmbedder(8, pretrained=evil)


class _Opaque:
    """An arbitrary Python object: weights_only loading must not unpickle it."""


def test_wrong_state_dict_is_rejected(tmp_path):
    path = tmp_path / "lenet.pth"
    torch.save(LeNet().state_dict(), path)
    with pytest.raises(ValueError, match="not a GoogLeNet state dict"):
        InceptionEmbedder(8, pretrained=path)
