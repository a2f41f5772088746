"""Bad input for `dfl_gan.data`: every broken, odd or hostile file gets a clear outcome.

The corpus is generated here, in `tmp_path`. Each case ends in one of three ways:
loaded correctly (checked pixel by pixel), skipped with a named reason (and `on_error='raise'`
turns the same reason into a `DataError` naming the file), or a `DataError` naming the folder.
"""
import builtins, io, os, struct, tempfile, uuid, warnings, zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dfl_gan.data as D
from dfl_gan.core import DataError
from dfl_gan.data import FaceSet, UnsafeMetadataError, read_dfl_metadata, write_dfl_metadata

R = 32
MARKER = Path(tempfile.gettempdir()) / f'PWNED_{uuid.uuid4().hex}'


# ---------------------------------------------------------------- file makers (each writes `path`)

def save(im, path, fmt=None, **kw):
    im.save(path, fmt, **kw)

def noise(size=64, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))

def truncated(fmt):
    def make(path):
        b = io.BytesIO(); noise().save(b, fmt)
        path.write_bytes(b.getvalue()[: len(b.getvalue()) // 2])
    return make

def png_chunk(tag, data):
    return struct.pack('>I', len(data)) + tag + data + struct.pack('>I', zlib.crc32(tag + data))

def bomb_png(w, h):
    "A PNG whose IHDR claims w×h RGB pixels, with a tiny IDAT: a few hundred bytes on disk."
    def make(path):
        path.write_bytes(b'\x89PNG\r\n\x1a\n' + png_chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0))
                         + png_chunk(b'IDAT', zlib.compress(b'\0' * 64)) + png_chunk(b'IEND', b''))
    return make

class Evil:
    "Pickles as a call of `fn(arg)`: what a hostile DFLJPG would carry."
    def __init__(self, fn, arg): self.fn, self.arg = fn, arg
    def __reduce__(self): return (self.fn, (self.arg,))

def dfljpg(meta):
    def make(path):
        Image.new('RGB', (64, 64), (120, 90, 60)).save(path, 'JPEG', quality=95)
        write_dfl_metadata(path, meta)
    return make

def app15_span(data):
    return [(s, e) for m, s, e in D._header_segments(data) if m == 0xEF][0]

def cut_app15(path):
    dfljpg(dict(face_type='whole_face', landmarks=np.zeros((68, 2), np.float32)))(path)
    data = path.read_bytes(); s, _ = app15_span(data)
    path.write_bytes(data[: s + 20])

def junk_pickle(path):
    dfljpg(dict(face_type='whole_face'))(path)
    data = path.read_bytes(); s, e = app15_span(data)
    path.write_bytes(data[: s + 4] + b'\x80\x03}q\x00(X' + b'\xff' * (e - s - 11) + data[e:])

def write(content):
    return lambda path: path.write_bytes(content)


# ---------------------------------------------------------------- files that are skipped with a reason

SKIPPED = [
    pytest.param('zero.jpg', write(b''), 'empty file (0 bytes)', id='zero-byte'),
    pytest.param('cut.jpg', truncated('JPEG'), 'corrupt or truncated image data', id='truncated-jpeg'),
    pytest.param('cut.png', truncated('PNG'), 'corrupt or truncated image data', id='truncated-png'),
    pytest.param('notes.jpg', write(b'these are not pixels\n' * 20), 'not an image Pillow can read', id='text-named-jpg'),
    pytest.param('anim.png', lambda p: save(Image.new('RGB', (32, 32)), p, 'GIF'), 'not an image Pillow can read', id='gif-named-png'),
    pytest.param('scan.jpg', lambda p: save(Image.new('RGB', (32, 32)), p, 'TIFF'), 'not an image Pillow can read', id='tiff-named-jpg'),
    pytest.param('dot.png', lambda p: save(Image.new('RGB', (1, 1), (255, 0, 0)), p), 'too small: 1×1 pixels', id='1x1'),
    pytest.param('thin.png', lambda p: save(Image.new('RGB', (64, 7)), p), 'too small: 64×7 pixels', id='7px-high'),
    pytest.param('bomb.png', bomb_png(30000, 30000), 'decompression bomb refused', id='bomb-30000x30000'),
    pytest.param('bomb_warn.png', bomb_png(10000, 10000), 'decompression bomb refused', id='bomb-10000x10000-pillow-warning'),
    pytest.param('big.png', bomb_png(9000, 9000), 'decompression bomb refused: 9000×9000', id='over-our-64-megapixel-limit'),
    pytest.param('evil.jpg', dfljpg(dict(landmarks=Evil(os.system, f'touch {MARKER}'))),
                 f"its pickle asks for '{os.system.__module__}.system'", id='dfljpg-os-system'),
    pytest.param('evil_eval.jpg', dfljpg(dict(face_type=Evil(builtins.eval, f"open({str(MARKER)!r}, 'w')"))),
                 "its pickle asks for 'builtins.eval'", id='dfljpg-builtins-eval'),
    pytest.param('cut_app15.jpg', cut_app15, 'truncated APP15 (DeepFaceLab metadata) segment', id='dfljpg-truncated-app15'),
    pytest.param('junk.jpg', junk_pickle, 'APP15) is not a valid pickle', id='dfljpg-corrupt-pickle'),
    pytest.param('lm.jpg', dfljpg(dict(landmarks=np.zeros((5, 2), np.float32))), 'landmarks must be a finite (68, 2) array', id='dfljpg-bad-landmarks'),
    pytest.param('xs.jpg', dfljpg(dict(xseg_mask=np.frombuffer(b'not a png', np.uint8))), 'xseg_mask cannot be decoded', id='dfljpg-bad-xseg'),
]

@pytest.fixture
def folder(tmp_path):
    d = tmp_path / 'faces'; d.mkdir()
    Image.new('RGB', (48, 48), (10, 200, 30)).save(d / 'good.png')
    return d

@pytest.mark.parametrize('name,make,reason', SKIPPED)
def test_unusable_file_is_skipped_with_its_reason(folder, name, make, reason):
    make(folder / name)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter('always')
        fs = FaceSet(folder, R)
    assert [p.name for p in fs.files] == ['good.png'] and len(fs) == 1
    assert [p.name for p, _ in fs.skipped] == [name]
    assert reason in fs.skipped[0][1], fs.skipped
    ours = [w for w in rec if 'skipped' in str(w.message)]
    assert len(ours) == 1 and 'skipped 1 of 2 files' in str(ours[0].message) and name in str(ours[0].message)
    assert len(rec) == 1, [str(w.message) for w in rec]  # nothing else leaks (e.g. Pillow's DecompressionBombWarning)
    assert not MARKER.exists()

@pytest.mark.parametrize('name,make,reason', SKIPPED)
def test_unusable_file_with_on_error_raise_is_a_named_data_error(folder, name, make, reason):
    make(folder / name)
    with pytest.raises(DataError) as ei: FaceSet(folder, R, on_error='raise')
    msg = str(ei.value)
    assert msg.startswith(f'{folder / name}: ') and reason in msg, msg
    assert ei.value.__cause__ is None and ei.value.__suppress_context__  # no PIL traceback chained on
    assert not MARKER.exists()

def test_malicious_pickle_is_an_unsafe_metadata_error_and_nothing_runs(tmp_path):
    p = tmp_path / 'evil.jpg'
    dfljpg(dict(landmarks=Evil(os.system, f'touch {MARKER}')))(p)
    with pytest.raises(UnsafeMetadataError, match=f"{p}: DeepFaceLab metadata refused: its pickle asks for '{os.system.__module__}.system'"):
        read_dfl_metadata(p)
    with pytest.raises(UnsafeMetadataError): FaceSet(tmp_path, R, on_error='raise')
    assert not MARKER.exists()

def test_one_warning_summarises_many_skips(folder):
    for i in range(5): (folder / f'bad{i}.jpg').write_bytes(b'')
    with pytest.warns(UserWarning) as rec: fs = FaceSet(folder, R)
    assert len(rec) == 1 and len(fs.skipped) == 5
    msg = str(rec[0].message)
    assert str(folder) in msg and 'skipped 5 of 6 files' in msg and 'bad0.jpg (empty file (0 bytes))' in msg
    assert 'bad2.jpg' in msg and 'bad3.jpg' not in msg and '…' in msg


# ---------------------------------------------------------------- files that load, with their pixels checked

def centre(fs, i=0, y=R // 2, x=R // 2):
    return fs.images[i, :, y, x].int().tolist()

def load_one(tmp_path, name, make):
    d = tmp_path / 'one'; d.mkdir()
    make(d / name)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # a file that loads must load silently
        fs = FaceSet(d, R, on_error='raise')
    assert fs.images.shape == (1, 3, R, R) and fs.images.dtype.is_floating_point is False
    return fs

def close(a, b, tol): return all(abs(x - y) <= tol for x, y in zip(a, b))

def test_cmyk_jpeg(tmp_path):
    fs = load_one(tmp_path, 'cmyk.jpg', lambda p: Image.new('RGB', (40, 40), (200, 30, 40)).convert('CMYK').save(p, 'JPEG', quality=95))
    assert Image.open(tmp_path / 'one' / 'cmyk.jpg').mode == 'CMYK'
    assert close(centre(fs), [200, 30, 40], 8), centre(fs)

def test_16bit_png(tmp_path):
    fs = load_one(tmp_path, 'deep.png', lambda p: Image.fromarray(np.full((40, 40), 40000, np.uint16)).save(p))
    assert Image.open(tmp_path / 'one' / 'deep.png').mode.startswith('I')
    assert centre(fs) == [156, 156, 156]  # 40000 / 257

def test_rgba_png_is_composited_on_black(tmp_path):
    a = np.zeros((40, 40, 4), np.uint8); a[..., :3] = (200, 100, 50)
    a[:, :20, 3] = 255; a[:, 20:, 3] = 128
    a[:4, :, 3] = 0                                      # fully transparent top rows: black whatever colour lies under
    fs = load_one(tmp_path, 'alpha.png', lambda p: Image.fromarray(a, 'RGBA').save(p))
    assert close(centre(fs, x=6), [200, 100, 50], 1)
    assert close(centre(fs, x=26), [100, 50, 25], 1)
    assert fs.images[0, :, 0, 10:22].max() <= 3

def test_la_png(tmp_path):
    fs = load_one(tmp_path, 'la.png', lambda p: Image.fromarray(np.dstack([np.full((40, 40), 200, np.uint8), np.full((40, 40), 128, np.uint8)]), 'LA').save(p))
    assert close(centre(fs), [100, 100, 100], 1)

def test_palette_png(tmp_path):
    fs = load_one(tmp_path, 'pal.png', lambda p: Image.new('RGB', (40, 40), (10, 200, 30)).convert('P', palette=Image.Palette.ADAPTIVE).save(p))
    assert Image.open(tmp_path / 'one' / 'pal.png').mode == 'P'
    assert centre(fs) == [10, 200, 30]

def test_palette_png_with_transparent_index(tmp_path):
    def make(p):
        im = Image.new('P', (40, 40), 0); im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
        im.paste(1, (20, 0, 40, 40)); im.save(p, transparency=1)
    fs = load_one(tmp_path, 'ptrans.png', make)
    assert close(centre(fs, x=6), [255, 0, 0], 1) and close(centre(fs, x=26), [0, 0, 0], 1)

def test_grayscale(tmp_path):
    fs = load_one(tmp_path, 'grey.jpg', lambda p: Image.new('L', (40, 40), 77).save(p, quality=95))
    assert close(centre(fs), [77, 77, 77], 2)
    assert (fs.images[0, 0] == fs.images[0, 1]).all() and (fs.images[0, 1] == fs.images[0, 2]).all()

@pytest.mark.parametrize('size', [(60, 40), (40, 60)], ids=['wide', 'tall'])
def test_non_square_is_centre_cropped(tmp_path, size):
    def make(p):
        a = np.zeros((size[1], size[0], 3), np.uint8); a[:] = (255, 0, 0)   # red margins
        w, h = size; s = min(w, h); x0, y0 = (w - s) // 2, (h - s) // 2
        a[y0:y0 + s, x0:x0 + s] = (0, 255, 0)                               # green centre square
        Image.fromarray(a).save(p)
    fs = load_one(tmp_path, 'rect.png', make)
    assert fs.images[0, 0].max() <= 2 and fs.images[0, 1].min() >= 253   # no red left, all green

def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    a = np.full((64, 64, 3), 128, np.uint8); a[:24, :24] = (255, 0, 0)   # marker in the stored top-left corner
    def make(p):
        exif = Image.Exif(); exif[0x0112] = 6                              # display rotated 90° clockwise
        Image.fromarray(a).save(p, 'JPEG', quality=95, exif=exif)
    fs = load_one(tmp_path, 'phone.jpg', make)
    # rotated clockwise, the stored top-left corner is displayed at the top right
    assert close(centre(fs, y=4, x=R - 5), [255, 0, 0], 12), centre(fs, y=4, x=R - 5)
    assert close(centre(fs, y=4, x=4), [128, 128, 128], 12), centre(fs, y=4, x=4)

def test_mixed_sizes_and_extensions(tmp_path):
    d = tmp_path / 'mixed'; d.mkdir()
    Image.new('RGB', (20, 20), (255, 0, 0)).save(d / 'small.png')
    Image.new('RGB', (100, 100), (0, 255, 0)).save(d / 'large.JPG', quality=95)
    Image.new('RGB', (37, 53), (0, 0, 255)).save(d / 'odd.bmp')
    if 'WEBP' in Image.OPEN: Image.new('RGB', (50, 50), (255, 255, 0)).save(d / 'modern.webp', lossless=True)
    fs = FaceSet(d, R, on_error='raise')
    assert fs.images.shape == (len(fs.files), 3, R, R) and not fs.skipped
    colours = {p.name: centre(fs, i) for i, p in enumerate(fs.files)}
    assert close(colours['small.png'], [255, 0, 0], 1) and close(colours['large.JPG'], [0, 255, 0], 3)
    assert close(colours['odd.bmp'], [0, 0, 255], 1)
    if 'WEBP' in Image.OPEN: assert close(colours['modern.webp'], [255, 255, 0], 1)

def test_dfljpg_with_xseg_mask_and_landmarks(tmp_path):
    lm = np.stack(np.meshgrid(np.linspace(16, 48, 17), np.linspace(16, 48, 4)), -1).reshape(-1, 2)[:68].astype(np.float32)
    xs = np.zeros((64, 64), np.uint8); xs[:, 32:] = 255
    b = io.BytesIO(); Image.fromarray(xs).save(b, 'PNG')
    fs = load_one(tmp_path, 'dfl.jpg', dfljpg(dict(face_type='whole_face', landmarks=lm, xseg_mask=np.frombuffer(b.getvalue(), np.uint8).reshape(-1, 1))))
    assert fs.mask_source == ['xseg'] and fs.masks[0, 0, :, :12].max() == 0 and fs.masks[0, 0, :, 20:].min() == 255
    np.testing.assert_allclose(fs.landmarks[0].numpy(), lm / 2, atol=1e-5)


# ---------------------------------------------------------------- permissions

def test_unreadable_file_is_skipped(folder, monkeypatch):
    p = folder / 'locked.jpg'
    Image.new('RGB', (40, 40)).save(p)
    p.chmod(0)
    try:
        if os.access(p, os.R_OK):  # root reads through chmod 000: simulate the refusal at the open() the loader uses
            real_open = builtins.open
            def deny(f, *a, **k):
                if Path(f).name == 'locked.jpg': raise PermissionError(13, 'Permission denied', str(f))
                return real_open(f, *a, **k)
            monkeypatch.setattr(D, 'open', deny, raising=False)
        with pytest.warns(UserWarning, match='skipped 1 of 2 files'): fs = FaceSet(folder, R)
        assert fs.skipped == [(p, 'permission denied: the file cannot be opened for reading')]
        with pytest.raises(DataError, match=f'{p}: permission denied'): FaceSet(folder, R, on_error='raise')
    finally: p.chmod(0o644)


# ---------------------------------------------------------------- folders

EXPECTED_EXTS = '(.png, .jpg, .jpeg, .webp, .bmp)'

def test_missing_folder(tmp_path):
    with pytest.raises(DataError) as ei: FaceSet(tmp_path / 'nowhere')
    assert str(tmp_path / 'nowhere') in str(ei.value) and 'does not exist' in str(ei.value) and EXPECTED_EXTS in str(ei.value)

def test_file_instead_of_folder(folder):
    with pytest.raises(DataError, match='is a file; expected a folder of aligned face images'): FaceSet(folder / 'good.png')

def test_empty_folder(tmp_path):
    with pytest.raises(DataError) as ei: FaceSet(tmp_path)
    msg = str(ei.value)
    assert msg.startswith(f'no images in {tmp_path}: it is empty') and EXPECTED_EXTS in msg

def test_folder_of_non_images(tmp_path):
    (tmp_path / 'a.txt').write_text('x'); (tmp_path / 'b.csv').write_text('y'); (tmp_path / 'sub.png').mkdir()
    with pytest.raises(DataError) as ei: FaceSet(tmp_path)
    msg = str(ei.value)
    assert f'no images in {tmp_path}: it holds 3 other entries' in msg and 'a.txt' in msg and EXPECTED_EXTS in msg

def test_folder_with_nothing_usable(tmp_path):
    (tmp_path / 'a.jpg').write_bytes(b''); (tmp_path / 'b.png').write_text('no')
    with pytest.raises(DataError) as ei: FaceSet(tmp_path)
    msg = str(ei.value)
    assert f'no usable images in {tmp_path}: all 2 files were skipped' in msg and 'a.jpg: empty file' in msg


def test_marker_never_created():
    assert not MARKER.exists()
