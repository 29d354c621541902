"""Embedders (128-d, L2-normalised, shared weights), the PK sampler and the verification pairs."""

import numpy as np
import pytest
import torch

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.base.plugins import load_plugins
from cnnkit.core.base.registry import models
from cnnkit.core.data.sampler import PKSampler
from cnnkit.core.metrics.distances import Scorer
from cnnkit.core.tasks.embed import verification_pairs


@pytest.fixture(autouse=True)
def _plugins():
    load_plugins()


def test_small_embedder_gives_unit_128d_codes_with_shared_weights():
    torch.manual_seed(0)
    model = models.get("siamese-small").create().eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        f = model(x)
        pair = model(torch.cat([x[:1], x[:1]]))  # one network, both inputs: same code for the same image
    assert f.shape == (3, 128)
    assert torch.allclose(f.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(pair[0], pair[1])
    assert not torch.allclose(f[0], f[1])
    assert sum(p.numel() for p in model.parameters()) < 2_000_000  # small enough for a CPU


def test_resnet18_backbone_embedder_comes_from_the_registry():
    torch.manual_seed(0)
    model = models.get("siamese-resnet18").create().eval()
    classifier = models.get("resnet18").create(num_classes=1000)
    # the backbone contract: the registered resnet18 without its classifier, then a 512 -> 128 head
    assert type(model.features.body) is type(classifier) and model.features.out_channels == 512
    trunk = sum(p.numel() for p in model.features.parameters())
    assert trunk == sum(p.numel() for p in classifier.parameters()) - (512 * 1000 + 1000) == 11_176_512
    assert sum(p.numel() for p in model.head.parameters()) == 512 * 128 + 128
    with torch.no_grad():
        f = model(torch.rand(2, 3, 64, 64))
    assert f.shape == (2, 128)
    assert torch.allclose(f.norm(dim=1), torch.ones(2), atol=1e-5)


def test_inception_resnet_embedder_when_the_classify_plugin_provides_it():
    spec = models.get("siamese-inception-resnet")
    if "inception-resnet-v1" not in models:
        with pytest.raises(CnnkitError, match="inception-resnet-v1"):
            spec.create()
        return
    with torch.device("meta"):
        model = spec.create()
    assert model.embedding_dim == 128


def test_embedding_dim_option():
    model = models.get("siamese-small").create(embedding_dim=32).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 32)


def test_pk_sampler_batches_p_identities_times_k_images():
    targets = [i // 5 for i in range(50)] + [10]  # ten identities of five images, one singleton
    sampler = PKSampler(targets, p=4, k=3, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 50 // 12
    for batch in batches:
        labels = [targets[i] for i in batch]
        assert len(batch) == 12
        assert sorted(np.unique(labels, return_counts=True)[1].tolist()) == [3, 3, 3, 3]
        assert 10 not in labels  # a single image cannot make a positive pair
    assert batches == list(PKSampler(targets, p=4, k=3, seed=1))  # deterministic
    assert list(sampler) != batches  # the next epoch draws other batches


def test_pk_sampler_follows_the_training_epoch_for_exact_resume():
    class Clock:
        epoch = 3

    targets = [i // 4 for i in range(40)]
    first = list(PKSampler(targets, p=2, k=2, clock=Clock))
    again = PKSampler(targets, p=2, k=2, clock=Clock)  # a resumed run rebuilds the sampler at epoch 3
    assert list(again) == first == list(again)
    Clock.epoch = 4
    assert list(again) != first


def test_pk_sampler_needs_two_identities_with_two_images():
    with pytest.raises(CnnkitError, match="at least 2 identities"):
        PKSampler([0, 0, 1], p=2, k=2)


def test_verification_pairs_are_balanced_and_labelled():
    targets = [i // 4 for i in range(40)]
    pairs = verification_pairs(targets)
    same = pairs[:, 2].astype(bool)
    assert same.sum() == (~same).sum() == 10 * 6  # every genuine pair, as many impostors
    assert all((targets[i] == targets[j]) == s for i, j, s in pairs)
    assert (verification_pairs(targets) == pairs).all()


def test_scorer_search_agrees_with_pairwise_distances():
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(20, 8)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    query = gallery[3] + 0.01
    query /= np.linalg.norm(query)
    for scorer in (Scorer("l2"), Scorer("similarity", rng.normal(size=8).astype(np.float32), 0.3)):
        d = scorer.search(query, gallery)
        assert np.allclose(d, scorer.pairs(np.repeat(query[None], 20, 0), gallery), atol=1e-3)
    assert int(np.argmin(Scorer("l2").search(query, gallery))) == 3
