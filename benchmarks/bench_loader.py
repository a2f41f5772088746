"""The data path: is it ever what training waits for?

    python benchmarks/bench_loader.py            # writes the 'loader-cpu' section of BENCHMARKS.md
    python benchmarks/bench_loader.py --quick    # smoke run, nothing written

Three numbers, on the device that trains (`--device`):

1. loading a face folder: `FaceSet` decoding with one thread vs its default pool (one thread per core), on a folder of
   aligned 256 px DFLJPG faces with landmarks, made from the dev faces (or synthetic faces if they are absent);
2. drawing batches: `Batches` (index + copy to the device + uint8→float) followed by `Augment` (random warp, affine,
   flip), in images/s, for the autoencoder (images only) and face swap (src and dst, with masks) at 128 px;
3. what a training step consumes: the optimised liae-ud 128 step (the heaviest common 128 px model) in images/s,
   measured here, in the same run, so that (2) / (3) says how many times faster the loader is than the step.
"""
from __future__ import annotations
import argparse, shutil, statistics, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np, torch
from PIL import Image
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command, load_average, machine, md_table, sync, write_section
from dfl_gan.augment import Augment
from dfl_gan.core import Config, DataConfig
from dfl_gan.data import Batches, FaceSet, write_dfl_metadata
from dfl_gan.train import Trainer

DEV_FACES = Path('/work/shared/data/faces-dev')

def make_folder(n:int, side:int=256) -> Path:
    "`n` aligned faces as JPEG (quality 95) with DeepFaceLab metadata (68 landmarks), from the dev faces if present."
    src = sorted(DEV_FACES.rglob('*.jpg')) if DEV_FACES.is_dir() else []
    out, rng = Path(tempfile.mkdtemp(prefix='faces-')), np.random.default_rng(0)
    lms = (rng.random((68, 2)) * side * 0.6 + side * 0.2).astype(np.float32)
    for i in range(n):
        if src: im = Image.open(src[i % len(src)]).convert('RGB').resize((side, side), Image.Resampling.BICUBIC)
        else: im = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        p = out / f'{i:05d}.jpg'; im.save(p, 'JPEG', quality=95)
        write_dfl_metadata(p, dict(face_type='whole_face', landmarks=lms))
    return out

def alternate(fns:dict, repeats:int) -> dict:
    "Median seconds of each zero-argument function, called in alternating order."
    times = {k: [] for k in fns}
    for r in range(repeats):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            t0 = time.perf_counter(); fns[k](); times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}

def loader_rate(fs:FaceSet, batch:int, device, swap:bool, seconds:float) -> float:
    "Images/s of Batches + Augment (swap: a src and a dst batch per draw, src recoloured towards dst)."
    aug, b = Augment(DataConfig()), Batches(fs, batch, device, seed=0)
    def draw():
        x = next(b); a = aug(x['image'], x['mask'])
        if swap: y = next(b); aug(y['image'], y['mask'], ref=x['image'])
        return a
    draw(); sync(device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds: draw(); n += 1
    sync(device)
    return n * batch * (2 if swap else 1) / (time.perf_counter() - t0)

def step_rate(fs:FaceSet, batch:int, device, steps:int) -> tuple:
    "(images/s, s/step) of the optimised liae-ud 128 training step (GAN on), src and dst from `fs`."
    c = Config.swap(**{'model.resolution': fs.resolution, 'data.batch_size': batch, 'loss.lambda_adv': 0.1,
                       'run.device': device.type})
    t = Trainer(c, src=fs, dst=fs)
    t.step(); sync(device)
    t0 = time.perf_counter()
    t.fit(steps, progress=False)
    t.history.rows; sync(device)
    s = (time.perf_counter() - t0) / steps
    return 2 * batch / s, s

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--files', type=int, default=400, help='faces in the folder that is decoded')
    ap.add_argument('--no-write', action='store_true')
    a = ap.parse_args(argv)
    device, q = torch.device(a.device), a.quick
    res, files = (64 if q else 128), (40 if q else a.files)
    batch = 4 if device.type == 'cpu' else 16
    log = lambda s: print(s, flush=True)
    log(f'{machine(device)}; load average {load_average()}')
    folder = make_folder(files)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            dec = alternate({'1 thread': lambda: FaceSet(folder, res, workers=1),
                             'default pool': lambda: FaceSet(folder, res)}, 1 if q else 3)
        fs = FaceSet(folder, res)
    finally: shutil.rmtree(folder, ignore_errors=True)
    log(f'decode {files} files: ' + ', '.join(f'{k} {v:.2f} s' for k, v in dec.items()))
    secs = 1.0 if q else 5.0
    ae = loader_rate(fs, 16, device, False, secs)
    sw = loader_rate(fs, batch, device, True, secs)
    step_ips, step_s = step_rate(fs, batch, device, 1 if q else 3)
    log(f'loader: ae {ae:.0f} img/s, swap {sw:.0f} img/s; liae-ud {res} step {step_s:.2f} s = {step_ips:.1f} img/s')
    if q or a.no_write: return
    load_share = 2 * batch / sw / step_s
    text = '\n'.join([
        f'## Data path, {device.type.upper()}', '',
        f'- machine: {machine(device)}',
        f'- command: `{command()}` (load average at the end {load_average()})',
        f'- folder: {files} aligned 256 px JPEG faces (quality 95) with DeepFaceLab metadata (68 landmarks → hull masks), '
        f'made from the dev faces; loaded at {res} px', '',
        md_table(['what', 'time', 'rate'], [
            [f'FaceSet decode, 1 thread (`workers=1`)', f'{dec["1 thread"]:.2f} s', f'{files / dec["1 thread"]:.0f} files/s'],
            [f'FaceSet decode, default pool (`workers=0`: {__import__("os").cpu_count()} threads)', f'{dec["default pool"]:.2f} s',
             f'{files / dec["default pool"]:.0f} files/s (**{dec["1 thread"] / dec["default pool"]:.2f}×**)'],
            [f'Batches + Augment, autoencoder (batch 16, warp + affine + flip)', '', f'{ae:.0f} images/s'],
            [f'Batches + Augment, face swap (src + dst batch {batch}, masks, warp + affine + flip)', '', f'{sw:.0f} images/s'],
            [f'training step, optimised liae-ud {res} + U-Net GAN (src + dst batch {batch})', f'{step_s * 1e3:.0f} ms/step',
             f'{step_ips:.1f} images/s'],
        ]), '',
        f'The loader delivers face-swap batches **{sw / step_ips:.0f}×** faster than the liae-ud step consumes them: '
        f'drawing and augmenting one step\'s batches takes {100 * load_share:.1f} % of the step. On the CPU the loader '
        'runs in the training thread, so that share is added to the step time (it is included in every training '
        'number above); on a GPU the batch is drawn on the device (a face set up to 1 GiB is kept there, `Batches(cache_bytes=...)`) '
        'and the augmentation runs there as batched kernels.', ''])
    log(f'wrote section loader-{device.type} of {write_section(f"loader-{device.type}", text)}')

if __name__ == '__main__': main()
