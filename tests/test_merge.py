"Merging: synthetic frames and aligned faces written as extraction writes them, a tiny swap model, every option."
import copy, sys, warnings
from fractions import Fraction
import numpy as np, pytest, torch
from PIL import Image
from skimage.data import astronaut
from dfl_gan.core import Config, DataError
from dfl_gan.data import FaceSet
from dfl_gan.landmarks import LANDMARKS_68_3D
from dfl_gan.train import Trainer
from dfl_gan.checkpoints import CheckpointError, save_checkpoint, load_face_swapper
from dfl_gan.video import read_frames, video_fps
from dfl_gan.merge import (Merger, MergeSettings, merge_folder, merge_frame, merge_face, frame_mask, swap_face, choose_mask, blursharpen,
                           erode_mask, cv2_gaussian_blur, BLEND_MODES, MASK_MODES, COLOR_TRANSFERS)
from dfl_gan.merge_panel import MergePanel
from dfl_gan.extract import write_aligned

H, W, SIDE = 96, 160, 64                       # frame size, side of the pasted face patch
FACELESS = {'00003.png', '00006.png'}
TWO_FACES = '00005.png'
# the generic 68-point face moved onto the astronaut's face (fitted to dlib's landmarks of skimage's image)
FIT = np.array([[0.639181, -0.035110, 224.029], [0.035110, 0.639181, 127.456]])
PATCH_BOX = (152, 56, 296, 200)                # x0, y0, x1, y1 of the 144-px patch around her face

def frame_with_faces(xs, y=16):
    "An H×W frame (a gradient) with the astronaut's face pasted at each x of `xs`; its (68, 2) landmarks per face."
    gx, gy = np.meshgrid(np.linspace(30, 200, W), np.linspace(60, 160, H))
    frame = np.stack([gx, gy, np.full((H, W), 90.)], -1).astype(np.uint8)
    x0, y0, x1, y1 = PATCH_BOX
    patch = np.asarray(Image.fromarray(astronaut()[y0:y1, x0:x1]).resize((SIDE, SIDE), Image.BICUBIC))
    generic = LANDMARKS_68_3D[:, :2].double().numpy() @ FIT[:, :2].T + FIT[:, 2]
    lms = []
    for x in xs:
        frame[y:y + SIDE, x:x + SIDE] = patch
        lms.append((generic - (x0, y0)) * SIDE / (x1 - x0) + (x, y))
    return frame, lms

@pytest.fixture(scope='module')
def footage(tmp_path_factory):
    "7 frames: the face moving right, two faceless frames, one frame with two faces."
    root = tmp_path_factory.mktemp('footage')
    frames, aligned = root / 'frames', root / 'frames' / 'aligned'
    aligned.mkdir(parents=True)
    for k in range(7):
        name = f'{k + 1:05d}.png'
        frame, lms = frame_with_faces([0, 92] if name == TWO_FACES else [6 * k])
        Image.fromarray(frame).save(frames / name)
        if name not in FACELESS:
            for i, lm in enumerate(lms): write_aligned(aligned, name, frame, lm, i)
    return frames, aligned

@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('run')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # random tensors have no masks
        t = Trainer(Config.tiny('swap', **{'data.batch_size': 2}), src=FaceSet.from_tensor(torch.rand(4, 3, 32, 32)),
                    dst=FaceSet.from_tensor(torch.rand(4, 3, 32, 32)))
        t.fit(2, progress=False)
    save_checkpoint(t, d)
    return d

@pytest.fixture(scope='module')
def merger(run_dir, footage):
    return Merger(run_dir, *footage, device='cpu')

def face_box(k):
    "Rows and columns around the face of frame k (0-based)."
    return slice(24, 72), slice(6 * k + 14, 6 * k + 50)

def test_folder_merge_keeps_frames_and_copies_faceless_ones(run_dir, footage, tmp_path):
    frames, aligned = footage
    r = merge_folder(run_dir, frames, aligned, tmp_path / 'out', video=tmp_path / 'out.mp4', device='cpu', progress=False)
    names = sorted(p.name for p in frames.glob('*.png'))
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == names
    assert (r.frames, r.merged, r.copied, r.faces, r.skipped) == (7, 5, 2, 6, {})
    for k, n in enumerate(names):
        a, b = np.asarray(Image.open(frames / n)).astype(int), np.asarray(Image.open(tmp_path / 'out' / n)).astype(int)
        assert a.shape == b.shape == (H, W, 3)
        if n in FACELESS: assert (frames / n).read_bytes() == (tmp_path / 'out' / n).read_bytes()
        elif n != TWO_FACES:
            changed = np.abs(a - b).max(-1) > 2
            assert changed[face_box(k)].mean() > 0.5, n
            assert not changed[:, 6 * k + 64 + 8:].any() and not changed[88:].any(), n   # untouched away from the face
    back = list(read_frames(tmp_path / 'out.mp4'))
    assert len(back) == 7 and back[0][1].shape == (H, W, 3)
    assert video_fps(tmp_path / 'out.mp4') == 25

def test_two_faces_in_a_frame_are_both_swapped(merger, footage):
    k = int(TWO_FACES[:5]) - 1
    frame, out = merger.read(k).astype(int), merger.merge(k).astype(int)
    changed = np.abs(frame - out).max(-1) > 2
    assert changed[24:72, 14:50].mean() > 0.5 and changed[24:72, 106:142].mean() > 0.5
    t = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    f1, f2 = [(f.landmarks, f.face_type, None) for f in merger.faces_of(k)]
    both, s = merge_frame(merger.G, t, [f1, f2], MergeSettings()), MergeSettings()
    alone = lambda f: merge_face(merger.G, t, f[0], f[1], s)[0]
    assert torch.allclose(both[..., :80], alone(f1)[..., :80], atol=1e-6)   # each face as it comes out alone
    assert torch.allclose(both[..., 80:], alone(f2)[..., 80:], atol=1e-6)

def test_frame_rate_from_extraction(run_dir, footage, tmp_path):
    frames, aligned = footage
    (frames / 'extract.json').write_text('{"source": "clip.mp4", "fps": "30000/1001", "frames": 7}')
    try: Merger(run_dir, frames, aligned, 'cpu').run(tmp_path / 'o', video=tmp_path / 'v.mp4', progress=False)
    finally: (frames / 'extract.json').unlink()
    assert video_fps(tmp_path / 'v.mp4') == Fraction(30000, 1001)

def test_mask_modes(merger):
    out = {m: merger.merge(0, MergeSettings(mask_mode=m, color_transfer_mode='none')).astype(int) for m in MASK_MODES}
    for a, b in [('full', 'hull'), ('hull', 'learned-prd'), ('hull', 'learned-dst'),   # an untrained model's two
                 ('learned-prd', 'learned-prd*learned-dst'), ('learned-prd*learned-dst', 'learned-prd+learned-dst')]:  # masks are alike
        assert np.abs(out[a] - out[b]).max() > 3, (a, b)
    assert (out['xseg'] == out['hull']).all()                       # no XSeg mask stored: the hull
    assert np.abs(out['learned-prd*learned-dst*xseg'] - out['learned-prd*learned-dst']).max() > 3   # × the hull
    changed = lambda o: (np.abs(o - merger.read(0).astype(int)).max(-1) > 2).sum()
    assert changed(out['full']) > changed(out['hull'])              # the whole square vs the face's hull

def test_each_mask_mode_combines_the_right_masks():
    c = lambda v: torch.full((1, 1, 4, 4), float(v))
    face = dict(prd_mask=c(0.2), dst_mask=c(0.6), hull=c(0.5), xseg=c(0.9))
    want = {'full': 1, 'hull': 0.5, 'learned-prd': 0.2, 'learned-dst': 0.6, 'learned-prd*learned-dst': 0.12,
            'learned-prd+learned-dst': 0.8, 'xseg': 0.9, 'learned-prd*learned-dst*xseg': 0.108}
    for mode, v in want.items(): assert torch.allclose(choose_mask(mode, face), c(v)), mode
    assert torch.allclose(choose_mask('xseg', dict(face, xseg=None)), c(0.5))          # no XSeg mask: the hull
    assert MergeSettings(mask_mode='dst').mask_mode == 'hull' and MergeSettings(mask_mode='XSeg-dst').mask_mode == 'xseg'

def test_xseg_mask_is_used(run_dir, footage, tmp_path):
    frames, _ = footage
    aligned = tmp_path / 'aligned'; aligned.mkdir()
    frame, (lm,) = frame_with_faces([0])
    disc = (np.hypot(*np.mgrid[-32:32, -32:32]) < 10).astype(np.uint8) * 255
    png = tmp_path / 'm.png'; Image.fromarray(disc).save(png)
    write_aligned(aligned, '00001.png', frame, lm, xseg_mask=np.frombuffer(png.read_bytes(), np.uint8))
    m = Merger(run_dir, frames, aligned, 'cpu')
    assert m.faces_of(0)[0].has_xseg
    changed = lambda mode: (np.abs(m.merge(0, MergeSettings(mask_mode=mode)).astype(int) - m.read(0)).max(-1) > 2).sum()
    assert 0 < changed('xseg') < 0.6 * changed('hull')              # a small disc, not the hull

def test_blend_modes(merger):
    frame = merger.read(0)
    out = {m: merger.merge(0, MergeSettings(mode=m, mask_mode='hull')).astype(int) for m in BLEND_MODES}
    assert (out['original'] == frame).all()
    for a in BLEND_MODES:
        for b in BLEND_MODES:
            if a < b: assert np.abs(out[a] - out[b]).max() > 3, (a, b)
    plain = lambda m: merger.merge(0, MergeSettings(mode=m, mask_mode='hull', color_transfer_mode='none')).astype(int)
    assert np.abs(plain('seamless') - plain('overlay')).max() > 3                     # the Poisson blend itself

def test_color_transfers(merger):
    out = {c: merger.merge(0, MergeSettings(mask_mode='hull', color_transfer_mode=c)).astype(int) for c in COLOR_TRANSFERS}
    for c in COLOR_TRANSFERS[1:]: assert np.abs(out[c] - out['none']).max() > 3, c
    for c in ('mkl', 'idt', 'sot'): assert np.abs(out[c + '-m'] - out[c]).max() > 3, c
    again = merger.merge(0, MergeSettings(mask_mode='hull', color_transfer_mode='sot-m')).astype(int)
    assert (again == out['sot-m']).all()                             # seeded: the preview is what gets written

def test_erode_shrinks_and_blur_softens_the_mask(merger):
    G, face = merger.G, merger.faces_of(0)[0]
    frame = torch.from_numpy(merger.read(0).copy()).permute(2, 0, 1)[None].float() / 255
    hull = choose_mask('hull', swap_face(G, frame, face.landmarks, 'full_face'))
    mask = lambda **kw: frame_mask(hull, face.landmarks, 'full_face', MergeSettings(**kw), (H, W))[1]
    area, soft = lambda m: float(m.sum()), lambda m: int(((m > 0.02) & (m < 0.98)).sum())
    base = mask()
    assert area(mask(erode_mask_modifier=30)) < 0.75 * area(base)
    assert area(mask(erode_mask_modifier=-30)) > 1.25 * area(base)
    assert soft(mask(blur_mask_modifier=60)) > 3 * soft(base)
    assert abs(area(mask(blur_mask_modifier=20)) / area(base) - 1) < 0.1
    assert abs(area(mask(output_face_scale=25)) / area(base) - 1 / 1.25 ** 2) < 0.05   # a smaller face
    changed = lambda **kw: (np.abs(merger.merge(0, MergeSettings(mask_mode='hull', **kw)).astype(int) - merger.read(0)).max(-1) > 2).sum()
    assert changed(erode_mask_modifier=40) < changed() < changed(erode_mask_modifier=-40)

def test_sharpen_and_blur_of_the_face(merger):
    base = merger.merge(0, MergeSettings(mask_mode='hull')).astype(int)
    for mode, amount in (('box', 5), ('gaussian', 5), ('none', -30)):
        assert np.abs(merger.merge(0, MergeSettings(mask_mode='hull', sharpen_mode=mode, blursharpen_amount=amount)) - base).max() > 3
    assert (merger.merge(0, MergeSettings(mask_mode='hull', sharpen_mode='none', blursharpen_amount=30)) == base).all()

def test_morphology_and_filters_match_opencv():
    cv2 = pytest.importorskip('cv2')
    rng = np.random.default_rng(0)
    m = (rng.random((60, 70)) ** 3).astype(np.float32)
    for k in (1, 2, 5, 8, 33):
        e = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        assert np.abs(erode_mask(torch.from_numpy(m)[None, None], k)[0, 0].numpy() - cv2.erode(m, e)).max() < 1e-6
        assert np.abs(erode_mask(torch.from_numpy(m)[None, None], -k)[0, 0].numpy() - cv2.dilate(m, e)).max() < 1e-6
    for k in (3, 9, 31):
        assert np.abs(cv2_gaussian_blur(torch.from_numpy(m)[None, None], k)[0, 0].numpy() - cv2.GaussianBlur(m, (k, k), 0)).max() < 1e-5
    img = rng.random((30, 40, 3)).astype(np.float32)
    t = torch.from_numpy(img).permute(2, 0, 1)[None]
    ours = lambda mode, a: blursharpen(t, mode, a)[0].permute(1, 2, 0).numpy()
    box = np.zeros((3, 3), np.float32); box[1, 1] = 1; box = box + (box - 1 / 9) * 4
    assert np.abs(ours('box', 4) - cv2.filter2D(img, -1, box)).max() < 1e-4
    assert np.abs(ours('gaussian', 4) - cv2.addWeighted(img, 3, cv2.GaussianBlur(img, (3, 3), 0), -2, 0)).max() < 1e-4
    assert np.abs(ours('none', -10) - cv2.medianBlur(img, 5)).max() < 1e-6

def test_seamless_without_opencv_names_the_extra(merger, monkeypatch):
    monkeypatch.setitem(sys.modules, 'cv2', None)
    with pytest.raises(ImportError, match=r'pip install "dfl_gan\[merge\]"'): merger.merge(0, MergeSettings(mode='seamless'))

def test_face_type_as_extracted(run_dir, footage):
    G, cfg = load_face_swapper(run_dir)
    as_extracted = copy.deepcopy(cfg); as_extracted.data.face_type = ''
    m = Merger((G, as_extracted), *footage, device='cpu')
    assert m.faces_of(0)[0].face_type == 'whole_face'
    full = Merger((G, cfg), *footage, device='cpu')
    assert full.faces_of(0)[0].face_type == 'full_face'
    assert np.abs(m.merge(0).astype(int) - full.merge(0)).max() > 3

def test_bad_inputs(run_dir, footage, tmp_path):
    frames, aligned = footage
    bad = tmp_path / 'aligned'; bad.mkdir()
    for f in aligned.glob('*.jpg'): (bad / f.name).write_bytes(f.read_bytes())
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(bad / 'no_meta.jpg')
    frame, (lm,) = frame_with_faces([0])
    write_aligned(bad, '09999.png', frame, lm)
    (bad / 'broken.jpg').write_bytes(b'\xff\xd8 not really')
    with pytest.warns(UserWarning, match='aligned files not used'):
        r = merge_folder(run_dir, frames, bad, tmp_path / 'out', device='cpu', progress=False)
    assert r.frames == 7 and r.faces == 6 and set(r.skipped) == {'no_meta.jpg', '09999_0.jpg', 'broken.jpg'}
    assert 'no DeepFaceLab metadata' in r.skipped['no_meta.jpg'] and '09999.png is not in the frames folder' in r.skipped['09999_0.jpg']
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DataError, match='empty: no images in this folder'): merge_folder(run_dir, tmp_path / 'empty', aligned, tmp_path / 'o2')
    with pytest.raises(DataError, match='nope: no such folder of aligned faces'): merge_folder(run_dir, frames, tmp_path / 'nope', tmp_path / 'o3')
    ae = tmp_path / 'ae'
    save_checkpoint(Trainer(Config.tiny('ae')), ae)
    with pytest.raises(CheckpointError, match=r"ae/checkpoint.*'ae' model, not a face-swap model"): merge_folder(ae, frames, aligned, tmp_path / 'o4')
    with pytest.raises(ValueError, match='erode_mask_modifier must be an integer in -400..400'): MergeSettings(erode_mask_modifier=500)
    with pytest.raises(ValueError, match="mode must be one of \\['original'"): MergeSettings(mode='poisson')
    with pytest.raises(DataError, match='is the frames folder'): Merger(run_dir, frames, aligned, 'cpu').run(frames, progress=False)

def test_panel_redraws_and_merges_all(merger, tmp_path):
    p = MergePanel(merger, out=tmp_path / 'merged', video=tmp_path / 'm.mp4')
    first = p.image.value
    assert first[:4] == b'\x89PNG' and '00001.png: 1 face' in p.frame_info.value
    p.controls['mode'].value = 'original'; assert p.image.value != first
    p.controls['mode'].value = 'overlay'; assert p.image.value == first
    p.controls['blur_mask_modifier'].value = 80; assert p.image.value != first
    p.controls['color_transfer_mode'].value = 'lct'
    assert p.settings == MergeSettings(blur_mask_modifier=80, color_transfer_mode='lct')
    p.frame.value = 4; assert '00005.png: 2 faces' in p.frame_info.value
    p.apply_btn.click()
    assert (p.progress.value, p.progress.max) == (7, 7) and not p.apply_btn.disabled
    assert len(list((tmp_path / 'merged').glob('*.png'))) == 7 and '7 frames written' in p.status.value
    assert len(list(read_frames(tmp_path / 'm.mp4'))) == 7
