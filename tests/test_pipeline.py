"""The user's path on the command line: two clips → `dfl-gan extract` → `dfl-gan train` → `dfl-gan merge` (frames and a
video) → `dfl-gan export`, on footage the test makes from the astronaut portrait, and the commands' one-line errors."""
import json
import numpy as np, pytest
from PIL import Image
from dfl_gan import cli
from dfl_gan.extract import astronaut_frame
from dfl_gan.video import read_frames, write_video

FACELESS = (2, 5)   # frames of the dst clip with the face covered

def clip(path, n:int, recolour:bool=False, faceless=()):
    "A camera panning across the astronaut; `recolour` swaps red and blue (another 'person'); `faceless` frames are grey."
    frames = []
    for i in range(n):
        f = astronaut_frame(3 * i)[0]
        f = f[..., ::-1] if recolour else f
        frames.append(np.full_like(f, 120) if i in faceless else np.ascontiguousarray(f))
    write_video(frames, path, fps=25)
    return path

def run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err

@pytest.fixture(scope='module')
def pipeline(tmp_path_factory):
    "Extract both clips, train a tiny model, merge the dst clip and export the model, all through `dfl-gan`."
    d = tmp_path_factory.mktemp('pipeline')
    steps = [['extract', '--input', clip(d / 'src.mp4', 8, recolour=True), '--out', d / 'src', '--res', 64, '--no-progress'],
             ['extract', '--input', clip(d / 'dst.mp4', 8, faceless=FACELESS), '--out', d / 'dst', '--res', 64, '--no-progress'],
             ['train', '--src', d / 'src' / 'aligned', '--dst', d / 'dst' / 'aligned', '--out', d / 'run', '--steps', 3,
              '--res', 32, '--model.ae_dims', 32, '--model.e_dims', 16, '--model.d_dims', 16, '--model.d_mask_dims', 8,
              '--data.batch_size', 2, '--data.holdout', 0.25, '--no-progress'],
             ['merge', '--model', d / 'run', '--frames', d / 'dst', '--out', d / 'merged', '--video', d / 'merged.mp4',
              '--erode-mask-modifier', 10, '--blur-mask-modifier', 20, '--no-progress'],
             ['export', '--model', d / 'run', '--out', d / 'model.dfm']]
    for argv in steps:
        rc = cli.main([str(a) for a in argv])
        assert rc == 0, argv
    return d

def test_swap_run_measures_held_out_faces(pipeline):
    "metrics.json of a face-swap run: src and dst rebuilt and dst swapped, on the faces training never saw."
    q = json.loads((pipeline / 'run' / 'metrics.json').read_text())['quality']
    assert (q['split'], q['faces']) == ('held out (data.holdout)', {'src': 2, 'dst': 2})
    m = q['measured']
    assert set(m['src→src']) >= {'ssim', 'psnr', 'ms_ssim', 'sharpness'} and set(m['dst→dst']) == set(m['src→src'])
    assert set(m['src→dst']) == {'sharpness'} and m['src→dst']['sharpness'] > 0
    assert 'fid_kid' in q['not_measured']   # no Inception weights on a test machine, and it says so

def test_extract_finds_the_faces_and_says_what_it_did(pipeline):
    d = pipeline
    src, dst = (json.loads((d / s / 'extract.json').read_text()) for s in ('src', 'dst'))
    assert (src['frames'], src['frames_with_face'], src['fps']) == (8, 8, '25/1')
    assert (dst['frames'], dst['no_face'], dst['no_face_frames']) == (8, 2, ['00003.png', '00006.png'])
    assert len(list((d / 'dst' / 'aligned').glob('*.jpg'))) == 6

def test_merge_keeps_every_frame_and_passes_faceless_ones_through(pipeline):
    d = pipeline
    frames, merged = sorted((d / 'dst').glob('*.png')), sorted((d / 'merged').glob('*.png'))
    assert [f.name for f in merged] == [f.name for f in frames]
    for i, (a, b) in enumerate(zip(frames, merged)):
        if i in FACELESS: assert a.read_bytes() == b.read_bytes()            # untouched, byte for byte
        else:
            x, y = (np.asarray(Image.open(p), np.int16) for p in (a, b))
            assert x.shape == y.shape and np.abs(x - y).max() > 30         # the face was replaced
    video = list(read_frames(d / 'merged.mp4'))
    assert len(video) == len(frames) and video[0][1].shape == np.asarray(Image.open(frames[0])).shape

def test_export_writes_a_checked_dfm(pipeline):
    import onnx
    d = pipeline
    m = onnx.load(d / 'model.dfm')
    assert [i.name for i in m.graph.input] == ['in_face:0']
    assert [o.name for o in m.graph.output] == ['out_face_mask:0', 'out_celeb_face:0', 'out_celeb_face_mask:0']

@pytest.mark.parametrize('argv, says', [
    (['extract', '--input', '{d}/notes.mp4', '--out', '{d}/x'], 'notes.mp4: not a readable video'),
    (['extract', '--input', '{d}/empty', '--out', '{d}/x'], 'empty: no images in this folder'),
    (['merge', '--model', '{d}/ae', '--frames', '{d}/empty', '--out', '{d}/m'], "not a face-swap model"),
    (['merge', '--model', '{run}', '--frames', '{d}/empty', '--out', '{d}/m'], 'empty: no images in this folder'),
    (['merge', '--model', '{run}', '--frames', '{frames}', '--out', '{d}/m', '--erode-mask-modifier', '999'], 'erode_mask_modifier must be an integer in -400..400'),
    (['export', '--model', '{run}', '--out', '{d}/model.onnx'], 'DeepFaceLive lists only files ending in .dfm'),
])
def test_bad_input_is_one_line(pipeline, tmp_path, capsys, argv, says):
    from dfl_gan.all import Trainer, Config, save_checkpoint
    d = pipeline
    (tmp_path / 'notes.mp4').write_text('not a video'); (tmp_path / 'empty').mkdir()
    save_checkpoint(Trainer(Config.tiny('ae')), tmp_path / 'ae')
    fill = dict(d=tmp_path, run=d / 'run', frames=d / 'dst')
    rc, out, err = run(capsys, *[a.format(**fill) for a in argv])
    assert rc == 2 and says in err and len(err.strip().splitlines()) == 1 and 'Traceback' not in err, err
