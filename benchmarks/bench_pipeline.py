"""The user's whole path on real footage: two clips → extract → train → merge (frames + video) → export.

    python benchmarks/bench_pipeline.py              # writes the 'pipeline' section of BENCHMARKS.md + a contact sheet
    python benchmarks/bench_pipeline.py --quick      # smoke run on synthetic clips, nothing written

The footage is the two GRID clips of the development data (`../shared/data/videos-dev`, CC BY 4.0, see its README);
without them (or with --quick) two synthetic clips of the astronaut portrait stand in. Reported: faces found per
clip, seconds per stage, what merge wrote (frames, faceless frames passed through, video frames read back), the
export's onnxruntime-vs-PyTorch difference, and a contact sheet of dst frames over merged frames in
`nbs/images/merge_contact_sheet.jpg`.
"""
from __future__ import annotations
import argparse, json, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np, torch
from PIL import Image
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command, load_average, machine, md_table, write_section
from dfl_gan.core import Config
from dfl_gan.train import Trainer
from dfl_gan.checkpoints import save_checkpoint
from dfl_gan.extract import extract, astronaut_frame
from dfl_gan.merge import MergeSettings, merge_folder
from dfl_gan.export import export_dfm
from dfl_gan.video import read_frames, write_video

CLIPS = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'videos-dev'
SHEET = Path(__file__).resolve().parents[1] / 'nbs' / 'images' / 'merge_contact_sheet.jpg'

def synthetic_clips(folder:Path) -> tuple[Path, Path]:
    "Two short clips of the astronaut panning (dst) and recoloured (src), for runs without the dev footage."
    make = lambda f: [np.ascontiguousarray(f(astronaut_frame(3 * i)[0])) for i in range(12)]
    write_video(make(lambda x: x[..., ::-1]), folder / 'src.mp4'); write_video(make(lambda x: x), folder / 'dst.mp4')
    return folder / 'src.mp4', folder / 'dst.mp4'

def contact_sheet(frames:Path, merged:Path, n:int=6) -> Image.Image:
    "`n` evenly spaced dst frames (top row) over the same merged frames (bottom row)."
    names = sorted(p.name for p in merged.glob('*.png'))
    pick = [names[round(i * (len(names) - 1) / (n - 1))] for i in range(n)]
    rows = [np.concatenate([np.asarray(Image.open(d / p).convert('RGB')) for p in pick], 1) for d in (frames, merged)]
    return Image.fromarray(np.concatenate(rows, 0))

def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=2000, help='training steps')
    p.add_argument('--quick', action='store_true', help='synthetic clips, a few steps, nothing written')
    a = p.parse_args(argv)
    work, t, r = Path(tempfile.mkdtemp(prefix='bench-pipeline-')), {}, {}
    real = CLIPS.is_dir() and not a.quick
    src_clip, dst_clip = (CLIPS / 'swiz3n.mpg', CLIPS / 'lbbc2a.mpg') if real else synthetic_clips(work)
    steps = 4 if a.quick else a.steps
    t0 = time.perf_counter()
    for side, clip in (('src', src_clip), ('dst', dst_clip)):
        r[side] = extract(clip, work / side, 'whole_face', 128, progress=False)
    t['extract'] = time.perf_counter() - t0
    cfg = Config.swap(**{'data.src': str(work / 'src' / 'aligned'), 'data.dst': str(work / 'dst' / 'aligned'),
                         'model.resolution': 64, 'model.ae_dims': 128, 'model.e_dims': 32, 'model.d_dims': 32,
                         'model.d_mask_dims': 12, 'data.batch_size': 8, 'run.device': 'cpu'})
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        tr = Trainer(cfg); tr.fit(steps, progress=False)
    run = save_checkpoint(tr, work / 'run').parent
    t['train'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = merge_folder(run, work / 'dst', work / 'dst' / 'aligned', work / 'merged',
                     MergeSettings(erode_mask_modifier=20, blur_mask_modifier=40), video=work / 'merged.mp4', progress=False)
    t['merge'] = time.perf_counter() - t0
    frames_back = sum(1 for _ in read_frames(work / 'merged.mp4'))
    t0 = time.perf_counter()
    diff = export_dfm(run, work / 'model.dfm')
    t['export'] = time.perf_counter() - t0
    res = dict(footage='GRID dev clips' if real else 'synthetic', steps=steps, seconds=t, merged=m.frames, copied=m.copied,
               video_frames=frames_back, export_diff=diff, src=r['src'].to_json(), dst=r['dst'].to_json())
    if a.quick: return res
    contact_sheet(work / 'dst', work / 'merged').save(SHEET, quality=90)
    rows = [[s, f"{r[s].frames}", f"{r[s].frames - len(r[s].no_face)} ({(r[s].frames - len(r[s].no_face)) / r[s].frames:.0%})",
             f"{r[s].seconds / r[s].frames:.3f}"] for s in ('src', 'dst')]
    write_section('pipeline', '\n'.join([
        '## Pipeline: two clips → extract → train → merge → export',
        '', f'Machine: {machine(torch.device("cpu"))}; load average {load_average()}. Command: `{command()}`.',
        f'Footage: {res["footage"]} (`swiz3n.mpg` as src, `lbbc2a.mpg` as dst: 75 frames each, 360×288, 25 fps).', '',
        md_table(['clip', 'frames', 'frames with a face', 's/frame (extract)'], rows), '',
        f'Training: liae-ud at 64 px with small dims (ae 128, e 32, d 32), batch 8, {steps} steps in {t["train"]:.0f} s. '
        f'Merge: {m.frames} frames written ({m.merged} merged, {m.copied} passed through), {t["merge"]:.1f} s, the video '
        f'reads back with {frames_back} frames. Export: `model.dfm` checked with onnxruntime, max |diff| {diff:.1e}, '
        f'{t["export"]:.1f} s. Extraction of both clips: {t["extract"]:.1f} s.', '',
        f'Contact sheet (dst frames above, merged frames below): `{SHEET.relative_to(SHEET.parents[2])}`.']))
    return res

if __name__ == '__main__': print(json.dumps(main(), indent=1, default=str))
