"""Extraction end to end on synthetic footage made here from scikit-image's astronaut.

Her face is cut out of `skimage.data.astronaut()` and pasted into plain frames at known places, scales and small
rotations; some frames have no face, one has two, one a face below `min_face`. The same frames are extracted from a
folder (with a corrupt PNG added) and from an H.264 video. The aligned faces are read back with a reader written here
to DeepFaceLab's own `DFLJPG.load` (JPEG chunks → APP15 → `pickle.loads`, on files this test made).
"""
import io, json, math, pickle, struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.data import astronaut

import dfl_gan.extract as X
from dfl_gan.align import face_transform_mat
from dfl_gan.core import DataError
from dfl_gan.extract import extract, find_faces
from dfl_gan.video import write_video

FACE, CROP = np.array([225, 118]), 180   # the face's centre in astronaut(), and the side of the square pasted
R = 96                                   # side of the aligned faces
SCENES = {   # frame → background colour and pasted faces: (centre, scale, degrees counter-clockwise)
    'f01': ((70, 110, 140), [((110, 110), 1.0, 0)]),
    'f02': ((40, 90, 60), [((210, 120), 0.7, 12)]),
    'f03': ((150, 150, 160), [((150, 115), 0.85, -10)]),
    'f04': ((70, 110, 140), []),
    'f05': ((120, 100, 80), [((250, 150), 0.5, 0), ((95, 110), 0.8, 0)]),   # two faces, the smaller pasted first
    'f06': ((20, 20, 20), []),
    'f07': ((70, 110, 140), [((160, 120), 0.3, 0)]),                         # box ~36 px: under min_face 40
    'f08': ((200, 180, 150), [((160, 110), 0.6, -15)]),
}
FOUND = {'f01': 1, 'f02': 1, 'f03': 1, 'f05': 2, 'f08': 1}   # aligned faces expected per frame
META_TYPES = {'face_type': str, 'landmarks': list, 'source_filename': str, 'source_rect': np.ndarray,
              'source_landmarks': list, 'image_to_face_mat': np.ndarray}


def paste(frame, centre, scale, angle):
    x, y = FACE
    side = round(CROP * scale)
    crop = Image.fromarray(astronaut()).crop((x - CROP // 2, y - CROP // 2, x + CROP // 2, y + CROP // 2))
    crop = crop.resize((side, side), Image.LANCZOS).rotate(angle, Image.BICUBIC)
    alpha = Image.new('L', (side, side), 255).rotate(angle, Image.BICUBIC)   # no black corners
    im = Image.fromarray(frame)
    im.paste(crop, (round(centre[0] - side / 2), round(centre[1] - side / 2)), alpha)
    return np.asarray(im)

def where(points, centre, scale, angle):
    "Where astronaut() `points` land in a frame after `paste`."
    a = math.radians(angle)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    return (np.asarray(points) - FACE) @ rot.T * (round(CROP * scale) / CROP) + centre

def scene(name):
    colour, faces = SCENES[name]
    frame = np.zeros((240, 320, 3), np.uint8); frame[:] = colour
    for face in faces: frame = paste(frame, *face)
    return frame


def dfl_load(path):
    "DeepFaceLab's `DFLJPG.load`: walk the JPEG's chunks, check APP0 is JFIF, read SOF's shape, unpickle APP15."
    data, pos, shape, meta = Path(path).read_bytes(), 0, None, {}
    while pos < len(data):
        lo, hi = struct.unpack('BB', data[pos:pos + 2]); pos += 2
        assert lo == 0xFF, f'no marker at {pos - 2}'
        size = 0 if 0xD0 <= hi <= 0xD9 else 2 if hi == 0xDD else None   # RSTn, SOI, EOI; DRI
        if size is None: size = struct.unpack('>H', data[pos:pos + 2])[0] - 2; pos += 2
        chunk = data[pos:pos + size]; pos += size
        if hi == 0xDA:   # SOS: entropy-coded data up to EOI
            while pos < len(data) and not (data[pos] == 0xFF and data[pos + 1] == 0xD9): pos += 1
        if hi == 0xE0: assert chunk[:5] == b'JFIF\0', 'DeepFaceLab only reads JFIF'
        if hi in (0xC0, 0xC2): _, h, w = struct.unpack('>BHH', chunk[:5]); shape = (h, w, 3)
        if hi == 0xEF: meta = pickle.loads(chunk)
    return shape, meta

def jpeg(image, quality=90):
    "`image` after a round trip through a JPEG file of `quality`."
    buf = io.BytesIO(); Image.fromarray(image).save(buf, 'JPEG', quality=quality)
    return np.asarray(Image.open(buf), np.float64)

def bilinear_warp(frame, mat, size):
    "cv2.warpAffine(frame, mat, (size, size)) in numpy: bilinear, black outside."
    inv = np.linalg.inv(np.vstack([mat, [0, 0, 1]]))[:2]
    ys, xs = np.mgrid[:size, :size]
    sx, sy = np.einsum('ij,jhw->ihw', inv, np.stack([xs, ys, np.ones_like(xs)]).astype(np.float64))
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    out = np.zeros((size, size, 3))
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        x, y = x0 + dx, y0 + dy
        w = (1 - np.abs(sx - x)) * (1 - np.abs(sy - y))
        ok = (x >= 0) & (y >= 0) & (x < frame.shape[1]) & (y < frame.shape[0])
        out += np.where(ok, w, 0)[..., None] * frame[y.clip(0, frame.shape[0] - 1), x.clip(0, frame.shape[1] - 1)]
    return out


@pytest.fixture(scope='module')
def truth():
    "The astronaut's 68 landmarks in her own photo."
    return find_faces(astronaut())[0][0].landmarks

@pytest.fixture(scope='module')
def from_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp('folder')
    (d / 'frames').mkdir()
    for name in SCENES: Image.fromarray(scene(name)).save(d / 'frames' / f'{name}.png', compress_level=9)   # not Pillow's default
    (d / 'frames' / 'f09.png').write_bytes((d / 'frames' / 'f01.png').read_bytes()[:500])   # cut short
    return d, extract(d / 'frames', d / 'out', 'whole_face', R, progress=False)

@pytest.fixture(scope='module')
def from_video(tmp_path_factory):
    d = tmp_path_factory.mktemp('video')
    write_video((scene(n) for n in SCENES), d / 'clip.mp4', fps=Fraction(30000, 1001))
    return d, extract(d / 'clip.mp4', d / 'out', 'full_face', R, progress=False)


def test_folder_counts_and_files(from_folder):
    d, rep = from_folder
    assert (rep.frames, rep.faces, rep.tiny_faces, rep.misplaced_faces) == (8, 6, 1, 0)
    assert rep.no_face == ['f04.png', 'f06.png', 'f07.png'] and rep.multi_face == ['f05.png']
    assert [s.split(': ')[0] for s in rep.skipped] == ['f09.png'] and 'unreadable image' in rep.skipped[0]
    assert sorted(p.name for p in (d / 'out' / 'aligned').iterdir()) == \
        sorted(f'{n}_{i}.jpg' for n, k in FOUND.items() for i in range(k))
    for name in SCENES: assert (d / 'out' / f'{name}.png').read_bytes() == (d / 'frames' / f'{name}.png').read_bytes()
    assert not (d / 'out' / 'f09.png').exists()
    js = json.loads((d / 'out' / 'extract.json').read_text())
    assert js['source'] == str((d / 'frames').resolve()) and js['fps'] == '25/1'
    assert (js['frames'], js['faces'], js['frames_with_face'], js['no_face'], js['multi_face'], js['tiny_faces'], js['skipped']) \
        == (8, 6, 5, 3, 1, 1, 1)
    assert js['no_face_frames'] == rep.no_face and js['face_type'] == 'whole_face' and js['resolution'] == R


@pytest.mark.parametrize('footage', ['from_folder', 'from_video'])
def test_faces_found_where_pasted(footage, truth, request):
    d, rep = request.getfixturevalue(footage)
    for n, (name, (_, pasted)) in enumerate(SCENES.items()):
        frame_name = f'{name}.png' if footage == 'from_folder' else f'{n + 1:05d}.png'
        metas = [dfl_load(d / 'out' / 'aligned' / f'{Path(frame_name).stem}_{i}.jpg')[1] for i in range(FOUND.get(name, 0))]
        expected = sorted(pasted, key=lambda p: -p[1])[:len(metas)]   # largest first
        for meta, face in zip(metas, expected):
            err = np.linalg.norm(np.array(meta['source_landmarks']) - where(truth, *face), axis=1)
            assert err.mean() < 3, (name, err.mean())
            assert meta['source_filename'] == frame_name
    if footage == 'from_video':
        assert rep.frames == 8 and rep.fps == Fraction(30000, 1001) and rep.faces == 6
        assert json.loads((d / 'out' / 'extract.json').read_text())['fps'] == '30000/1001'
        assert sorted(p.name for p in (d / 'out').glob('*.png')) == [f'{i:05d}.png' for i in range(1, 9)]
        assert {'00004.png', '00006.png', '00007.png'} <= set(rep.no_face) and rep.multi_face == ['00005.png']


def test_metadata_as_deepfacelab_reads_it(from_folder):
    d, _ = from_folder
    for f in sorted((d / 'out' / 'aligned').iterdir()):
        shape, meta = dfl_load(f)
        assert shape == (R, R, 3)
        assert {k: type(v) for k, v in meta.items()} == META_TYPES
        assert meta['face_type'] == 'whole_face' and meta['source_filename'] == f.name.split('_')[0] + '.png'
        assert meta['source_rect'].shape == (4,) and meta['source_rect'].dtype.kind == 'i'
        assert meta['image_to_face_mat'].shape == (2, 3) and meta['image_to_face_mat'].dtype == np.float64
        for key in ('landmarks', 'source_landmarks'):
            assert len(meta[key]) == 68 and all(len(p) == 2 and all(type(c) is float for c in p) for p in meta[key])


def test_matrix_and_aligned_image(from_folder):
    "`image_to_face_mat` takes the frame's landmarks to the face's, the face is the frame warped by it, and every face lands on the same spot."
    d, _ = from_folder
    eyes = []
    for f in sorted((d / 'out' / 'aligned').iterdir()):
        _, meta = dfl_load(f)
        mat, src = meta['image_to_face_mat'], np.array(meta['source_landmarks'])
        assert np.allclose(mat, face_transform_mat(src, R, 'whole_face'))   # DeepFaceLab's get_transform_mat
        assert np.abs(np.c_[src, np.ones(68)] @ mat.T - np.array(meta['landmarks'])).max() < 1
        frame = np.asarray(Image.open(d / 'out' / meta['source_filename']).convert('RGB'))
        expected = jpeg(bilinear_warp(frame, mat, R).round().clip(0, 255).astype(np.uint8))   # as saved: JPEG 90
        assert np.abs(expected - np.asarray(Image.open(f).convert('RGB'), np.float64)).mean() < 0.1, f.name   # 0.1 px off: ~2
        eyes.append(np.array(meta['landmarks'])[36:48].mean(0))
    assert np.ptp(np.array(eyes), axis=0).max() < 0.05 * R   # aligned: eyes in the same place whatever the paste


def test_options_tiny_and_max_faces(tmp_path):
    (tmp_path / 'in').mkdir()
    Image.fromarray(scene('f05')).save(tmp_path / 'in' / 'two.png')
    rep = extract(tmp_path / 'in', tmp_path / 'one', 'f', 64, max_faces=1, progress=False)
    assert rep.faces == 1 and rep.multi_face == []
    assert dfl_load(tmp_path / 'one' / 'aligned' / 'two_0.jpg')[1]['source_rect'][2] < 160   # the larger, on the left
    rep = extract(tmp_path / 'in', tmp_path / 'big', 'f', 64, min_face=60, progress=False)   # boxes of ~44 and ~76 px
    assert (rep.faces, rep.tiny_faces, rep.multi_face) == (1, 1, [])


def test_bad_input(tmp_path):
    (tmp_path / 'fake.mp4').write_text('not a video')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DataError, match='fake.mp4: not a readable video'): extract(tmp_path / 'fake.mp4', tmp_path / 'o1')
    with pytest.raises(DataError, match='empty: no images in this folder'): extract(tmp_path / 'empty', tmp_path / 'o2')
    with pytest.raises(DataError, match='nope: no such video or folder'): extract(tmp_path / 'nope', tmp_path / 'o3')
    assert not any((tmp_path / o).exists() for o in ('o1', 'o2', 'o3'))
    Image.fromarray(scene('f04')).save(tmp_path / 'empty' / 'a.png')
    extract(tmp_path / 'empty', tmp_path / 'o4', progress=False)
    with pytest.raises(DataError, match='o4: holds 2 files of an earlier extraction'): extract(tmp_path / 'empty', tmp_path / 'o4')
    assert extract(tmp_path / 'empty', tmp_path / 'o4', overwrite=True, progress=False).frames == 1


def test_frames_in_place_and_video_failing_midway(tmp_path, monkeypatch):
    "Extracting into the frame folder itself keeps its frames; a video that stops decoding keeps what it gave."
    Image.fromarray(scene('f01')).save(tmp_path / 'a.png')
    before = (tmp_path / 'a.png').read_bytes()
    assert extract(tmp_path, tmp_path, progress=False).faces == 1 and (tmp_path / 'a.png').read_bytes() == before
    def broken(path):
        yield '00001.png', scene('f01'); yield '00002.png', scene('f04')
        raise DataError(f'{path}: not a readable video (Invalid data)')
    monkeypatch.setattr(X, 'read_frames', broken)
    monkeypatch.setattr(X, 'video_fps', lambda p: Fraction(25))
    (tmp_path / 'v.mp4').write_bytes(b'')
    rep = extract(tmp_path / 'v.mp4', tmp_path / 'vout', progress=False)
    assert (rep.frames, rep.faces, rep.no_face) == (2, 1, ['00002.png'])
    assert rep.skipped == ['frames after 00002.png: the rest of the video could not be decoded '
                           f'({tmp_path / "v.mp4"}: not a readable video (Invalid data))']


def test_cnn_detector():
    "dlib's CNN (MMOD) detector finds a face rolled 50°, which HOG misses (at their native scale: min_face 80)."
    frame = np.zeros((240, 320, 3), np.uint8); frame[:] = (70, 110, 140)
    frame = paste(frame, (160, 120), 1.0, 50)
    assert find_faces(frame, 'hog', min_face=80) == ([], 0)
    (face,), tiny = find_faces(frame, 'cnn', min_face=80)
    l, t, r, b = face.rect
    assert tiny == 0 and l < 160 < r and t < 120 < b
