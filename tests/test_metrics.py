"""Quality metrics (`dfl_gan.metrics`) against hand computations and independent NumPy/SciPy references.

Nothing is downloaded: the Inception-v3, VGG16 and LPIPS weights are random ones this file makes, saved in the
formats the real files have, and loaded through the same paths (a file, the torch hub cache, the `lpips` package).
"""
import json, math, sys

import numpy as np
import pytest
import scipy.linalg
import skimage.data
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from scipy import ndimage
from skimage.metrics import structural_similarity

from dfl_gan.core import DataError
from dfl_gan.losses import WeightsNotFoundError, dssim
from dfl_gan.data import holdout_split
from dfl_gan.metrics import (INCEPTION_WEIGHTS, LPIPS, MS_SSIM_WEIGHTS, PSNR_CAP, distribution_metrics, fid_from_features,
                             inception_features, kid_from_features, laplacian_energy, load_inception,
                             lpips_weights_file, ms_ssim, ms_ssim_scales, psnr, reconstruction_metrics, sharpness, ssim)

LPIPS_CHANNELS = (64, 128, 256, 512, 512)


def astronaut(size, grey=False):
    "scikit-image's astronaut as (1,3,size,size) (or (1,1,…) grey) in [0, 1]."
    x = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(size, size), mode='area')
    return x.mean(1, keepdim=True) if grey else x


def blur(x, sigma):
    return torchvision.transforms.functional.gaussian_blur(x, 2 * math.ceil(3 * sigma) + 1, sigma)


def noisy(x, std, seed=0):
    return (x + std * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)


# --- reconstruction metrics -------------------------------------------------------------------------------------

def test_ssim_identical_reference_and_loss():
    x = astronaut(64)
    y = noisy(blur(x, 1.0), 0.05)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    ref = structural_similarity(y[0].permute(1, 2, 0).double().numpy(), x[0].permute(1, 2, 0).double().numpy(), channel_axis=-1,
                                gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    assert ssim(y, x).item() == pytest.approx(ref, abs=1e-5)
    assert ssim(y, x).item() == pytest.approx(1 - 2 * dssim(y, x, filter_size=11).item(), abs=1e-6)


def test_psnr_hand_computed_and_capped():
    x = astronaut(32).expand(3, -1, -1, -1).contiguous()
    y = torch.stack([noisy(x[i], s, seed=i) for i, s in enumerate((0.02, 0.05, 0.1))])
    d = (y.double().numpy() - x.double().numpy()) ** 2
    by_hand = np.mean([10 * np.log10(1 / d[i].mean()) for i in range(3)])
    assert psnr(y, x).item() == pytest.approx(by_hand, abs=1e-3)
    assert psnr(x, x).item() == PSNR_CAP                                  # identical: the cap, not inf
    both = psnr(torch.cat([x[:1], y[:1]]), torch.cat([x[:1], x[:1]])).item()
    assert both == pytest.approx((PSNR_CAP + 10 * np.log10(1 / d[0].mean())) / 2, abs=1e-3)


def _ms_ssim_numpy(x, y, weights):
    "MS-SSIM of two single-channel float64 images, written out with scipy.ndimage (11-px Gaussian, valid positions)."
    def stats(a, b):
        f = lambda z: ndimage.gaussian_filter(z, 1.5, truncate=3.5)[5:-5, 5:-5]   # radius 5: the 11-px window
        ma, mb = f(a), f(b)
        va, vb, cov = f(a * a) - ma**2, f(b * b) - mb**2, f(a * b) - ma * mb
        cs = (2 * cov + 9e-4) / (va + vb + 9e-4)
        return ((2 * ma * mb + 1e-4) / (ma**2 + mb**2 + 1e-4) * cs).mean(), cs.mean()
    out = 1.0
    for i, w in enumerate(weights):
        if i: x, y = [z.reshape(z.shape[0] // 2, 2, z.shape[1] // 2, 2).mean((1, 3)) for z in (x, y)]
        s, cs = stats(x, y)
        out *= max(s if i == len(weights) - 1 else cs, 0) ** w
    return out


def test_ms_ssim_reference_and_renormalised_weights():
    for size, n in ((32, 2), (64, 3)):
        x = astronaut(size, grey=True)
        y = noisy(blur(x, 0.8), 0.03)
        assert ms_ssim_scales(size, size) == n
        w = np.array(MS_SSIM_WEIGHTS[:n]) / sum(MS_SSIM_WEIGHTS[:n])
        ref = _ms_ssim_numpy(y[0, 0].double().numpy(), x[0, 0].double().numpy(), w)
        assert ms_ssim(y, x).item() == pytest.approx(ref, abs=1e-5)


def test_ms_ssim_identical_and_monotone():
    x = astronaut(192)                                                    # five scales
    assert [ms_ssim_scales(s, s) for s in (11, 21, 22, 43, 44, 64, 128, 175, 176, 192)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert ms_ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    by_blur = [ms_ssim(blur(x, s), x).item() for s in (0.5, 1, 2, 4)]
    by_noise = [ms_ssim(noisy(x, s), x).item() for s in (0.02, 0.05, 0.1, 0.2)]
    for scores in (by_blur, by_noise):
        assert all(a > b for a, b in zip([1.0] + scores, scores)), scores
    with pytest.raises(ValueError, match='smaller than the 11-px window'): ms_ssim(x[..., :10, :10], x[..., :10, :10])


def test_sharpness_blur_falls_and_identity_is_one():
    x = astronaut(64)
    assert sharpness(x, x).item() == pytest.approx(1.0, abs=1e-6)
    scores = [sharpness(blur(x, s), x).item() for s in (0.5, 1, 2, 3)]
    assert 1 > scores[0] > scores[1] > scores[2] > scores[3] > 0, scores
    board = (torch.arange(12)[:, None] + torch.arange(12)).remainder(2).float().expand(2, 3, 12, 12)
    assert laplacian_energy(board).tolist() == pytest.approx([16.0, 16.0])  # Laplacian ±4 everywhere
    mask = torch.zeros(1, 1, 64, 64); mask[..., :32, :] = 1
    bottom_blurred = torch.cat([x[..., :40, :], blur(x, 2)[..., 40:, :]], -2)
    assert sharpness(bottom_blurred, x, mask).item() == pytest.approx(1.0, abs=1e-6)
    assert sharpness(bottom_blurred, x).item() < 0.9


def test_reconstruction_metrics_are_json_floats():
    x = astronaut(64).expand(2, -1, -1, -1)
    same = reconstruction_metrics(x, x)
    assert same == dict(ssim=pytest.approx(1.0), psnr=PSNR_CAP, ms_ssim=pytest.approx(1.0), sharpness=pytest.approx(1.0))
    m = reconstruction_metrics(blur(x, 1), x, mask=torch.ones(2, 1, 64, 64))
    assert list(m) == ['ssim', 'psnr', 'ms_ssim', 'sharpness'] and all(type(v) is float for v in m.values())
    json.dumps(same, allow_nan=False); json.dumps(m, allow_nan=False)
    assert m['sharpness'] < 1 and m['ssim'] < 1
    with pytest.raises(ValueError, match=r'pred: values must be in \[0, 1\]'): reconstruction_metrics(x * 255, x)


# --- FID and KID formulas -----------------------------------------------------------------------------------------

def _fid_numpy(a, b):
    "pytorch-fid's formula: scipy's sqrtm of Σ1Σ2."
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real)


def _kid_numpy(x, y):
    "Unbiased MMD² with the kernel (x·y/d + 1)³, with explicit sums."
    m, d = len(x), x.shape[1]
    k = lambda u, v: (u @ v / d + 1) ** 3
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return (xx + yy) / (m * (m - 1)) - 2 * xy / m**2


def test_fid_against_numpy_reference():
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(6, 6))
    a, b = rng.normal(size=(200, 6)) @ mix, rng.normal(size=(150, 6)) @ mix * 1.3 + 0.4   # many images: eigen route
    assert fid_from_features(a, b) == pytest.approx(_fid_numpy(a, b), rel=1e-8)
    a, b = rng.normal(size=(8, 64)), rng.normal(size=(6, 64)) * 0.7 + 0.2               # few images: singular values
    assert fid_from_features(a, b) == pytest.approx(_fid_numpy(a, b), rel=1e-6)
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-9)
    assert fid_from_features(a, b) == pytest.approx(fid_from_features(b, a), rel=1e-9)
    with pytest.raises(ValueError, match='64-d features but fake has 6-d'): fid_from_features(a, a[:, :6])


def test_kid_against_numpy_reference():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 5)), rng.normal(size=(20, 5)) + 0.5
    kid, std = kid_from_features(x, y, subsets=4)                          # subset = whole set: every draw the same
    assert kid == pytest.approx(_kid_numpy(x, y), rel=1e-9) and std == pytest.approx(0.0, abs=1e-12)
    assert kid_from_features(y, x, subsets=4)[0] == pytest.approx(kid, rel=1e-9)
    many_x, many_y = rng.normal(size=(300, 5)), rng.normal(size=(300, 5))
    same, same_std = kid_from_features(many_x, many_y, subsets=50, subset_size=100)
    shifted = kid_from_features(many_x, many_y + 0.5, subsets=50, subset_size=100)[0]
    assert abs(same) < 3 * same_std + 1e-3 and shifted > 10 * abs(same) and same_std > 0


# --- Inception-v3 plumbing ----------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def faces():
    x = astronaut(80)
    return torch.cat([x, x.flip(-1), x.roll(6, -1), x.roll(-6, -2)])


@pytest.fixture(scope='module')
def inception_file(tmp_path_factory, faces):
    "torchvision's Inception-v3 (with its auxiliary classifier) with random weights, batch norm fitted to `faces`."
    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d): m.momentum = None
    with torch.no_grad(): net.train()(F.interpolate(faces, size=(299, 299), mode='bilinear') * 2 - 1)
    path = tmp_path_factory.mktemp('inception') / 'inception.pth'
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture
def no_downloads(monkeypatch):
    def refuse(*a, **k): raise AssertionError('metrics must not download')
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', refuse)
    monkeypatch.setattr(torch.hub, 'download_url_to_file', refuse)


def test_fid_kid_through_inception(inception_file, faces):
    model = load_inception(inception_file)
    feats = inception_features(faces, model, batch_size=3)
    assert feats.shape == (4, 2048) and feats.dtype == torch.float64 and feats.std(0).mean() > 1e-3
    shifted = [inception_features((faces + s).clamp(0, 1), model) for s in (0.1, 0.3)]
    fids = [fid_from_features(feats, f) for f in shifted]
    kids = [kid_from_features(feats, f)[0] for f in shifted]
    assert fid_from_features(feats, feats) == pytest.approx(0.0, abs=1e-9 * fids[0])
    assert 0 < fids[0] < fids[1] and 0 < kids[0] < kids[1]
    assert fid_from_features(shifted[0], feats) == pytest.approx(fids[0], rel=1e-6)   # symmetric
    assert kid_from_features(shifted[0], feats)[0] == pytest.approx(kids[0], rel=1e-9)
    self_kid = kid_from_features(feats, feats)[0]
    assert -0.1 * kids[0] < self_kid <= 0                                   # -(2/m)(diagonal − off-diagonal mean)
    batches = inception_features(iter([faces[:1], faces[1:]]), model)       # an iterable of batches: same features
    assert torch.allclose(batches, feats, rtol=1e-4, atol=1e-6 * feats.abs().max())


def test_inception_from_hub_cache_and_missing(inception_file, faces, tmp_path, monkeypatch, no_downloads):
    hub = tmp_path / 'hub'
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(hub))
    expected = hub / 'checkpoints' / 'inception_v3_google-0cc3c7bd.pth'
    with pytest.raises(WeightsNotFoundError) as e: distribution_metrics(faces, faces)
    for part in (str(expected), INCEPTION_WEIGHTS.url, 'weights=PATH', 'never downloads'): assert part in str(e.value)
    expected.parent.mkdir(parents=True)
    expected.symlink_to(inception_file)
    m = distribution_metrics(faces, faces.flip(-2))
    assert set(m) == {'fid', 'kid', 'kid_std'} and all(type(v) is float for v in m.values()) and m['fid'] > 0
    assert distribution_metrics(faces, faces.flip(-2), weights=inception_file) == m


def test_inception_bad_files(tmp_path):
    with pytest.raises(WeightsNotFoundError, match='nope.pth does not exist'): load_inception(tmp_path / 'nope.pth')
    torch.save(nn.Linear(2, 2), tmp_path / 'module.pth')
    with pytest.raises(DataError, match='module.pth cannot be read'): load_inception(tmp_path / 'module.pth')
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / 'linear.pth')
    with pytest.raises(DataError, match='linear.pth does not hold Inception-v3 weights'): load_inception(tmp_path / 'linear.pth')
    torch.save({'fc.weight': torch.zeros(1008, 2048)}, tmp_path / 'pt_inception.pth')
    with pytest.raises(DataError, match="pytorch-fid's TF-Inception port"): load_inception(tmp_path / 'pt_inception.pth')


# --- LPIPS --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def lpips_files(tmp_path_factory):
    "A random VGG16 `features` state dict and random lpips linear layers, in the formats of the real files."
    d = tmp_path_factory.mktemp('lpips')
    g = torch.Generator().manual_seed(0)
    with torch.device('meta'): shapes = torchvision.models.vgg16().features.state_dict()
    torch.save({f'features.{k}': torch.randn(v.shape, generator=g) * (0.05 if v.ndim > 1 else 0.01) for k, v in shapes.items()}, d / 'vgg16.pth')
    torch.save({f'lin{k}.model.1.weight': torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(LPIPS_CHANNELS)}, d / 'lin.pth')
    return d / 'vgg16.pth', d / 'lin.pth'


def test_lpips_zero_symmetric_and_growing(lpips_files):
    lp = LPIPS(*lpips_files)
    x = astronaut(32).expand(2, -1, -1, -1)
    assert lp(x, x).tolist() == [0.0, 0.0]
    d = [lp(blur(x, s), x).mean().item() for s in (0.5, 1, 2)]
    assert 0 < d[0] < d[1] < d[2], d
    y = noisy(x, 0.1)
    assert torch.allclose(lp(x, y), lp(y, x), rtol=1e-6)
    m = reconstruction_metrics(y, x, lpips=lp)
    assert m['lpips'] == pytest.approx(lp(y, x).mean().item(), rel=1e-6)
    # the formula of lpips.LPIPS(net='vgg', version='0.1') written out: unit-length features, weighted squared difference
    lin = torch.load(lpips_files[1], weights_only=True)
    shift, scale = torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1), torch.tensor([.458, .448, .450]).view(1, 3, 1, 1)
    unit = lambda f: f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    a, b, by_hand = (2 * y - 1 - shift) / scale, (2 * x - 1 - shift) / scale, 0
    for k, relu in enumerate((3, 8, 15, 22, 29)):
        by_hand = by_hand + ((unit(lp.vgg[:relu + 1](a)) - unit(lp.vgg[:relu + 1](b)))**2 * lin[f'lin{k}.model.1.weight']).sum(1).mean((1, 2))
    assert torch.allclose(lp(y, x), by_hand, rtol=1e-5)


def test_lpips_linear_weights_from_the_package(lpips_files, tmp_path, monkeypatch, no_downloads):
    "The packaged file is found without importing the package; without the package the error names the extra."
    vgg, lin = lpips_files
    pkg = tmp_path / 'site' / 'lpips'
    (pkg / 'weights' / 'v0.1').mkdir(parents=True)
    (pkg / '__init__.py').write_text("raise ImportError('dfl_gan must not import the lpips package')\n")
    (pkg / 'weights' / 'v0.1' / 'vgg.pth').write_bytes(lin.read_bytes())
    monkeypatch.delitem(sys.modules, 'lpips', raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / 'site'))
    assert lpips_weights_file() == pkg / 'weights' / 'v0.1' / 'vgg.pth'
    x = astronaut(32)
    assert LPIPS(vgg)(blur(x, 1), x).item() == pytest.approx(LPIPS(vgg, lin)(blur(x, 1), x).item(), rel=1e-6)
    assert 'lpips' not in sys.modules
    monkeypatch.setattr('importlib.util.find_spec', lambda name, *a: None)
    with pytest.raises(ImportError, match=r'pip install "dfl_gan\[metrics\]"'): LPIPS(vgg)


def test_lpips_missing_and_bad_weights(lpips_files, tmp_path, monkeypatch, no_downloads):
    vgg, lin = lpips_files
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'empty_hub'))
    with pytest.raises(WeightsNotFoundError, match=r'vgg16-397923af.pth.*LPIPS\(vgg_weights=PATH\)'): LPIPS('imagenet', lin)
    torch.save({'lin0.model.1.weight': torch.rand(1, 64, 1, 1)}, tmp_path / 'short.pth')
    with pytest.raises(DataError, match='short.pth does not hold lpips VGG linear layers'): LPIPS(vgg, tmp_path / 'short.pth')


def test_lpips_matches_the_lpips_package(lpips_files):
    "Where the `metrics` extra is installed: the same number as lpips.LPIPS(net='vgg') given the same trunk."
    lpips = pytest.importorskip('lpips', reason='the metrics extra (lpips) is not installed')
    torch.manual_seed(0)
    ref = lpips.LPIPS(net='vgg', pnet_rand=True, verbose=False)
    trunk = {k: v for s in range(1, 6) for k, v in getattr(ref.net, f'slice{s}').state_dict().items()}
    feats = torchvision.models.vgg16().features
    feats.load_state_dict(trunk, strict=False)
    x = astronaut(64).expand(2, -1, -1, -1)
    y = noisy(x, 0.1)
    with torch.no_grad(): want = ref(x, y, normalize=True).flatten()
    assert torch.allclose(LPIPS(feats)(x, y), want, rtol=1e-5, atol=1e-7)


# --- hold-out split -------------------------------------------------------------------------------------------------

def test_holdout_split():
    train, hold = holdout_split(20, 0.25, seed=3)
    assert (len(train), len(hold)) == (15, 5)
    assert sorted(train + hold) == list(range(20)) and not set(train) & set(hold)
    assert train == sorted(train) and hold == sorted(hold)
    assert holdout_split(20, 0.25, seed=3) == (train, hold)                 # reproducible
    assert hold == [0, 5, 6, 9, 15]                                         # and pinned: Random(seed).random() is stable across Pythons
    assert holdout_split(20, 0.25, seed=4)[1] != hold
    assert [len(holdout_split(n, f)[1]) for n, f in ((2, 0.01), (5, 0.05), (3, 0.5), (1, 0.5), (0, 0.2), (9, 0.0))] == [1, 1, 1, 0, 0, 0]
    for bad in (-0.1, 0.51, 1.0):
        with pytest.raises(ValueError, match=rf'\[0, 0.5\], got {bad}'): holdout_split(10, bad)
