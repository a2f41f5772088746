"""Export to DeepFaceLive (`.dfm`) and plain ONNX: `dfl_gan.export` end to end.

Tiny face-swap runs (LIAE and DF, 32 px, two steps) are trained and saved here, exported, and the files run with
onnxruntime the way DeepFaceLive's `DFMModel` runs them. Their generators' weights are doubled after training: an
untrained SAEHD gives nearly the same grey face whatever it is shown (outputs move by ~1e-4), which would let a
swapped channel or a wrong output slip under the 1e-4 tolerance; doubled, a swapped channel moves them by ~0.05.
"""
import sys, warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import dfl_gan.export as E
from dfl_gan.all import Config, FaceSet, Trainer
from dfl_gan.checkpoints import CheckpointError, load_face_swapper, save_checkpoint
from dfl_gan.export import DFM_INPUT, DFM_OUTPUTS, ONNX_INPUT, ONNX_OUTPUTS, ExportError, export_dfm, export_onnx

R = 32
ARCHIS = ['liae-ud', 'df-ud']


def faces(n, seed):
    return torch.rand(n, 3, R, R, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope='module', params=ARCHIS)
def run(request, tmp_path_factory):
    "A run folder holding a two-step face-swap checkpoint of `archi`, its generator's weights doubled."
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # random faces have no masks
        t = Trainer(Config.tiny('swap', **{'data.batch_size': 2, 'model.archi': request.param}),
                    src=FaceSet.from_tensor(faces(4, 0)), dst=FaceSet.from_tensor(faces(4, 1)))
    t.fit(2, progress=False)
    with torch.no_grad():
        for p in t.nets['G'].parameters():
            if p.dim() > 1: p.mul_(2.0)
    d = tmp_path_factory.mktemp(request.param)
    save_checkpoint(t, d)
    return d


def session(path):
    return ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])


def swap_parts(run, rgb):
    G, _ = load_face_swapper(run)
    with torch.no_grad(): return [t.numpy() for t in G.swap_parts(rgb)]


def test_dfm_interface(run, tmp_path):
    "Names, order, shapes and dtypes DeepFaceLive reads; a free batch; opset and IR version its onnxruntime 1.15 loads."
    diff = export_dfm(run, tmp_path / 'm.dfm')
    assert 0 <= diff <= 1e-4
    s = session(tmp_path / 'm.dfm')
    (inp,) = s.get_inputs()
    assert inp.name == 'in_face:0' and inp.type == 'tensor(float)'
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [R, R, 3]   # DFMModel reads H, W from shape[1:3]
    outs = s.get_outputs()
    assert [o.name for o in outs] == ['out_face_mask:0', 'out_celeb_face:0', 'out_celeb_face_mask:0'] == list(DFM_OUTPUTS)
    assert [o.shape[1:] for o in outs] == [[R, R, 1], [R, R, 3], [R, R, 1]]
    assert all(o.type == 'tensor(float)' and isinstance(o.shape[0], str) for o in outs)
    m = onnx.load(str(tmp_path / 'm.dfm'))
    assert [o.version for o in m.opset_import if o.domain in ('', 'ai.onnx')] == [13] and m.ir_version <= 9


def test_dfm_matches_pytorch_in_bgr(run, tmp_path):
    "A batch of 3 BGR NHWC faces with distinct channels: outputs equal swap_parts on the RGB faces; RGB fed in does not."
    export_dfm(run, tmp_path / 'm.dfm')
    rgb = (torch.tensor([0.9, 0.5, 0.1])[:, None, None] + 0.1 * faces(3, 2)).clamp(0, 1)
    nhwc = rgb.permute(0, 2, 3, 1).numpy()
    face, mask, dst_mask = swap_parts(run, rgb)
    s = session(tmp_path / 'm.dfm')
    out_face_mask, out_celeb, out_celeb_mask = s.run(None, {DFM_INPUT: np.ascontiguousarray(nhwc[..., ::-1])})
    assert out_celeb.shape == (3, R, R, 3) and out_celeb.dtype == np.float32
    np.testing.assert_allclose(out_celeb, face.transpose(0, 2, 3, 1)[..., ::-1], atol=1e-4, rtol=0)
    np.testing.assert_allclose(out_celeb_mask, mask.transpose(0, 2, 3, 1), atol=1e-4, rtol=0)
    np.testing.assert_allclose(out_face_mask, dst_mask.transpose(0, 2, 3, 1), atol=1e-4, rtol=0)
    wrong = s.run(None, {DFM_INPUT: nhwc})[1]   # the same face in RGB order is another face to the model
    assert np.abs(wrong - out_celeb).max() > 0.01
    assert np.abs(out_celeb[..., ::-1] - out_celeb).max() > 0.01   # so a face returned in RGB would fail above


def test_onnx_matches_pytorch(run, tmp_path):
    "The plain graph: NCHW RGB in, swap_parts' outputs in its order, for a batch of 3."
    assert export_onnx(run, tmp_path / 'm.onnx') <= 1e-4
    s = session(tmp_path / 'm.onnx')
    assert [i.name for i in s.get_inputs()] == [ONNX_INPUT] == ['face']
    assert [o.name for o in s.get_outputs()] == list(ONNX_OUTPUTS) == ['swapped_face', 'swapped_mask', 'face_mask']
    x = faces(3, 3)
    got = s.run(None, {'face': x.numpy()})
    assert [g.shape for g in got] == [(3, 3, R, R), (3, 1, R, R), (3, 1, R, R)]
    for g, w in zip(got, swap_parts(run, x)): np.testing.assert_allclose(g, w, atol=1e-4, rtol=0)


def test_metadata(run, tmp_path):
    "The DFM carries the model's architecture, resolution and face type."
    export_dfm(run, tmp_path / 'm.dfm')
    props = {p.key: p.value for p in onnx.load(str(tmp_path / 'm.dfm')).metadata_props}
    _, cfg = load_face_swapper(run)
    assert (props['archi'], props['resolution'], props['face_type']) == (cfg.model.archi, str(R), cfg.data.face_type)


def test_failed_write_keeps_old_file(run, tmp_path, monkeypatch):
    "A write that fails (disk full at fsync) leaves the previous .dfm whole and no temporary file."
    out = tmp_path / 'm.dfm'
    out.write_bytes(b'previous model')
    def full(fd): raise OSError(28, 'No space left on device')
    monkeypatch.setattr(E.os, 'fsync', full)
    with pytest.raises(OSError, match='No space left'): export_dfm(run, out)
    assert out.read_bytes() == b'previous model' and [p.name for p in tmp_path.iterdir()] == ['m.dfm']


def test_failed_check_writes_nothing(run, tmp_path, monkeypatch):
    "A graph that fails the onnxruntime check is an ExportError naming the file, and nothing is written."
    monkeypatch.setattr(E, 'MAX_DIFF', -1.0)
    with pytest.raises(ExportError, match=r'm\.dfm: the exported graph differs from the PyTorch model by up to .*nothing was written'):
        export_dfm(run, tmp_path / 'm.dfm')
    assert list(tmp_path.iterdir()) == []
    assert export_dfm(run, tmp_path / 'm.dfm', verify=False) is None and (tmp_path / 'm.dfm').stat().st_size > 0


def test_not_a_face_swapper(tmp_path):
    "An autoencoder checkpoint is a one-line CheckpointError naming the file; nothing is written."
    save_checkpoint(Trainer(Config.tiny('ae')), tmp_path / 'ae')
    with pytest.raises(CheckpointError) as e: export_dfm(tmp_path / 'ae', tmp_path / 'm.dfm')
    msg = str(e.value)
    assert '\n' not in msg and str(tmp_path / 'ae') in msg and "a checkpoint of a 'ae' model, not a face-swap model" in msg
    assert not (tmp_path / 'm.dfm').exists()


def test_bad_output_paths(run, tmp_path):
    "A DFM must end in .dfm (DeepFaceLive lists no other files); a folder is not a file."
    with pytest.raises(ExportError, match=r'm\.onnx: DeepFaceLive lists only files ending in \.dfm'): export_dfm(run, tmp_path / 'm.onnx')
    with pytest.raises(ExportError, match='is a folder'): export_onnx(run, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('missing', ['onnx', 'onnxruntime'])
def test_missing_extra(missing, tmp_path, monkeypatch):
    "Without onnx or onnxruntime: an ImportError naming the extra, before any checkpoint is read."
    monkeypatch.setitem(sys.modules, missing, None)
    for export in (export_dfm, export_onnx):
        with pytest.raises(ImportError, match=r'pip install "dfl_gan\[export\]"'): export(tmp_path / 'nothing-here', tmp_path / 'm.dfm')
