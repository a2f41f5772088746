"""Does the GAN make the swapped faces more realistic? One face-swap state trained further with and without it.

    python benchmarks/bench_quality.py                # writes the 'quality' section of BENCHMARKS.md
    python benchmarks/bench_quality.py --quick        # smoke run on the demo faces, nothing written

Face swap on the two GRID clips of the development data (`../shared/data/videos-dev`, CC BY 4.0, see its README),
extracted as `bench_pipeline.py` does: the aligned `faces-dev/grid-sA|sB` folders carry no landmarks, so they would
train without face masks. A share of each face set is held out (`data.holdout`); training never sees it.
One trainer runs `--warm` steps without the GAN; its state then continues `--steps` more steps twice, with the same
seed: GAN off, and GAN on with DeepFaceLab's gan_power 0.1 (`loss.lambda_adv`, SAEHD's U-Net D with gan_dims 16 and
patch size resolution/8). For the shared start and both arms, on the held-out faces: SSIM, PSNR, MS-SSIM and
sharpness of the src→src and dst→dst reconstructions inside the face mask (LPIPS where VGG16 weights exist), the
sharpness of the swapped dst→src faces over that of real src faces (FID/KID where Inception weights exist), and D's
statistics over the GAN arm.
"""
from __future__ import annotations
import argparse, copy, json, re, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Contention, command, load_average, machine, md_table, write_section
from dfl_gan.core import Config, DataError
from dfl_gan.data import FaceSet, demo_faces
from dfl_gan.extract import extract
from dfl_gan.metrics import holdout_metrics, laplacian_energy
from dfl_gan.train import Trainer

CLIPS = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'videos-dev'
D_KEYS = ('d_real', 'd_fake', 'acc_real', 'acc_fake', 'd_loss', 'g_adv')

def face_sets(quick:bool, cfg:Config, work:Path) -> tuple:
    "(src, dst) faces: the GRID clips extracted with landmark masks, or slices of the demo faces with --quick."
    if quick:
        demo = demo_faces(cfg.model.resolution)
        return FaceSet.from_tensor(demo.images[:40], name='demo lfw'), FaceSet.from_tensor(demo.images[100:], name='demo astronaut')
    if not CLIPS.is_dir(): raise DataError(f'{CLIPS}: the GRID dev clips are missing; run with --quick')
    for side, clip in (('src', 'swiz3n.mpg'), ('dst', 'lbbc2a.mpg')): extract(CLIPS / clip, work / side, 'whole_face', 128, progress=False)
    return tuple(FaceSet(work / s / 'aligned', cfg.model.resolution, face_type=cfg.data.face_type) for s in ('src', 'dst'))

def config(quick:bool, device:str, seed:int, holdout:float) -> Config:
    "bench_pipeline's small liae-ud at 64 px (Config.tiny's 32 px with --quick), GAN off, `holdout` of the faces set aside."
    common = {'run.device': device, 'run.seed': seed, 'data.holdout': holdout}
    if quick: return Config.tiny('swap', **common)
    return Config.swap(**common, **{'model.resolution': 64, 'model.ae_dims': 128, 'model.e_dims': 32, 'model.d_dims': 32,
                          'model.d_mask_dims': 12, 'data.batch_size': 8})

def progress(every:int, t0:float, tag:str):
    "A callback printing steps done and seconds so far every `every` steps (the log of a long run)."
    def f(tr, rec):
        if (tr.step_count % every) == 0: print(f'{tag}: step {tr.step_count}, {time.perf_counter() - t0:.0f} s', flush=True)
    return f

def run(cfg:Config, src:FaceSet, dst:FaceSet, steps:int, state:dict|None=None, tag:str='', every:int=100) -> tuple:
    "(trainer, seconds) after `steps` steps from `state` (or from scratch)."
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')                   # the demo faces have no masks: said once per face set
        tr = Trainer(cfg, src=src, dst=dst)
    if state is not None: tr.load_state_dict(copy.deepcopy(state))
    t0 = time.perf_counter()
    tr.fit(steps, cbs=progress(every, t0, tag), progress=False)
    return tr, time.perf_counter() - t0

@torch.no_grad()
def evaluate(tr:Trainer) -> dict:
    "metrics.json's quality part on the held-out faces, plus the swap's sharpness over that of the real held-out src faces."
    out, held, nets = holdout_metrics(tr), tr.task.held_out, tr.inference_nets()
    (s, ms), (d, md) = [(held[k].images.float().div(255).to(tr.device), held[k].masks.float().div(255).to(tr.device)) for k in ('src', 'dst')]
    swapped = tr.task.evaluate(nets, 'dst', d)['src→dst'][0].float().clamp(0, 1)
    real_src = laplacian_energy(s, ms).mean()
    out['swap_over_src'] = float(laplacian_energy(swapped, md).mean() / real_src)   # 1 = as sharp as the real src faces
    out['real_dst_over_src'] = float(laplacian_energy(d, md).mean() / real_src)     # where the dst footage itself stands
    return out | dict(step=tr.step_count)

def d_summary(tr:Trainer, start:int, power:float, frac:float=0.1) -> dict:
    "Mean D statistics (and G's adversarial share) over the first and the last `frac` of the GAN arm's steps."
    rows = [r for r in tr.history.rows if r['step'] >= start]
    k = max(1, round(len(rows) * frac))
    mean = lambda rs, key: float(np.nanmean([r[key] for r in rs]))
    return {part: {key: mean(rs, key) for key in D_KEYS} | dict(adv_share=mean(rs, 'g_adv') * power / mean(rs, 'g_total'),
                                                                 d_updated=mean(rs, 'd_updated'))
            for part, rs in (('first', rows[:k]), ('last', rows[-k:]))}

ROWS = (('ssim', 'SSIM', '.4f'), ('psnr', 'PSNR (dB)', '.2f'), ('ms_ssim', 'MS-SSIM', '.4f'), ('sharpness', 'sharpness', '.3f'),
        ('lpips', 'LPIPS', '.4f'), ('fid', 'FID', '.2f'), ('kid', 'KID', '.4f'))
ARMS = ('start', 'no_gan', 'gan')

def metric_rows(m:dict) -> list:
    "Table rows of the metrics `m` (arm → evaluate's dict): start, GAN off, GAN on, on − off; a row per missing ruler."
    rows = []
    for label, got in m['start']['measured'].items():
        for k, name, f in ROWS:
            if k in got: rows.append([f'{label} {name}'] + [format(m[a]['measured'][label][k], f) for a in ARMS]
                                     + [format(m['gan']['measured'][label][k] - m['no_gan']['measured'][label][k], '+' + f)])
    rows.append(['src→dst sharpness over real src'] + [format(m[a]['swap_over_src'], '.3f') for a in ARMS]
                + [format(m['gan']['swap_over_src'] - m['no_gan']['swap_over_src'], '+.3f')])
    short = lambda why: re.sub(r'/\S*/', '', why.split('. ')[0])   # the first sentence, file names without folders
    return rows + [[k, short(why), '', '', ''] for k, why in m['start']['not_measured'].items()]

def report(out:dict, device:torch.device, section:str):
    "Write `section` of BENCHMARKS.md."
    w, n, m, sps = out['warm'], out['steps'], out['metrics'], out['steps_per_s']
    d = [[k] + [format(out['d'][part][k], '.3f') for part in ('first', 'last')] for k in D_KEYS + ('adv_share', 'd_updated')] if out['d'] else []
    extra = ''.join(f', `{k}` = {v}' for k, v in out['gan_set'].items())
    faces = ', '.join(f'{v} {k}' for k, v in m['start']['faces'].items())
    write_section(section, '\n'.join([
        '## Quality: the same face-swap state trained further with and without the GAN',
        '', f'Machine: {machine(device)}; load average {load_average()}; another task waited for a CPU during '
        f'{out["contention"]:.0%} of the wall time. Command: `{command()}`.', '',
        f'Footage: {out["footage"]} (`swiz3n.mpg` as src, `lbbc2a.mpg` as dst, 75 frames each), extracted as whole_face and '
        f'trained as full_face at 64 px, with face masks from the landmarks. Held out (`data.holdout` = {out["holdout"]}): {faces} '
        'faces, which training never sees; they are frames of the same two clips, so close to frames it trains on.',
        f'Model: `Config.swap` liae-ud with ae 128, e 32, d 32, mask 12, batch 8, AdaBelief 5e-5 for G and D, G first. '
        f'{w} steps without the GAN, then the same state and seed for {n} more steps twice: GAN off, and GAN on '
        f'(`loss.lambda_adv` = {out["gan_power"]}, DeepFaceLab\'s gan_power{extra}; the U-Net D with gan_dims 16 and patch size '
        f'resolution/8). D updates: {out["d_updates"]["no_gan"]} in the GAN-off arm, {out["d_updates"]["gan"]} in the GAN-on arm.',
        f'Speed: {sps["warm"]:.2f} steps/s without the GAN (warm-up), {sps["no_gan"]:.2f} in the GAN-off arm, {sps["gan"]:.2f} '
        f'in the GAN-on arm; wall time {out["wall"] / 60:.1f} min.', '',
        'Metrics of `holdout_metrics` (what `metrics.json` reports) on the held-out faces: src→src and dst→dst rebuild their '
        'own faces, measured inside the face mask; src→dst (dst faces drawn as src, DeepFaceLab\'s name) has no true face, so '
        'its sharpness is over the dst faces it was made from. Sharpness: Laplacian energy over that of the real faces, '
        '1 = as sharp as real. The last metric row puts the swapped faces over the real held-out src faces (the real dst '
        f'faces score {m["start"]["real_dst_over_src"]:.3f} on that ruler).', '',
        md_table(['metric', f'start (step {w})', f'GAN off (step {w + n})', f'GAN on (step {w + n})', 'on − off'], metric_rows(m)), '',
        f'D in the GAN-on arm, mean over its first and last 10 % of steps (D(·): mean sigmoid of the centre head; acc: share '
        f'judged right; adv_share: {out["gan_power"]}·g_adv over the whole generator loss):', '',
        md_table(['statistic', 'first 10 %', 'last 10 %'], d) if d else '(no GAN: `--gan-power` 0)']))

def setting(text:str) -> tuple:
    "NAME=VALUE as (name, value), the value read as JSON where it is JSON (numbers, true/false), else as text."
    name, eq, value = text.partition('=')
    if not eq: raise argparse.ArgumentTypeError(f'expected NAME=VALUE, got {text!r}')
    try: return name, json.loads(value)
    except json.JSONDecodeError: return name, value

def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--warm', type=int, default=800, help='steps without the GAN before the arms split')
    p.add_argument('--steps', type=int, default=400, help='steps of each arm after the split')
    p.add_argument('--holdout', type=float, default=0.2, help='share of each face set held out (data.holdout)')
    p.add_argument('--seed', type=int, default=42, help='seed of the run and of the hold-out split')
    p.add_argument('--gan-power', type=float, default=0.1, help="loss.lambda_adv of the GAN arm (DeepFaceLab's gan_power)")
    p.add_argument('--gan-set', type=setting, nargs='*', default=[], metavar='NAME=VALUE',
                   help='more settings of the GAN arm only, e.g. optim.lr_d=2e-4')
    p.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads (0 = torch\'s default); on a shared CPU one thread '
                   'beats two that wait for each other (measured here: 0.9 against 5.0 s a step)')
    p.add_argument('--section', help="section of BENCHMARKS.md to write (default 'quality', 'quality-cuda' on a GPU)")
    p.add_argument('--quick', action='store_true', help='demo faces at 32 px, a few steps, nothing written')
    a = p.parse_args(argv)
    a.gan_set = dict(a.gan_set)
    if a.threads: torch.set_num_threads(a.threads)
    warm, steps = (3, 2) if a.quick else (a.warm, a.steps)
    cfg, t_start = config(a.quick, a.device, a.seed, a.holdout), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix='bench-quality-') as work: src, dst = face_sets(a.quick, cfg, Path(work))
    with Contention() as busy:
        tr, t_warm = run(cfg.copy(), src, dst, warm, tag='warm')
        state, res, seconds, updates, d = tr.state_dict(), dict(start=evaluate(tr)), dict(warm=t_warm), {}, None
        for arm, power in (('no_gan', 0.0), ('gan', a.gan_power)):
            c = cfg.copy(); c.set_many({'loss.lambda_adv': power, 'optim.gan_start_step': warm} | (a.gan_set if power else {}))
            tr, seconds[arm] = run(c, src, dst, steps, state, tag=arm)
            res[arm] = evaluate(tr)
            updates[arm] = int(sum(r['d_updated'] for r in tr.history.rows[warm:]))
            if arm == 'gan' and a.gan_power: d = d_summary(tr, warm, a.gan_power)
    out = dict(footage='demo faces' if a.quick else 'GRID dev clips', warm=warm, steps=steps, holdout=a.holdout, gan_power=a.gan_power,
               gan_set=a.gan_set, metrics=res, d=d, d_updates=updates,
               seconds=seconds, steps_per_s={k: (warm if k == 'warm' else steps) / v for k, v in seconds.items()},
               wall=time.perf_counter() - t_start, contention=busy.share)
    if not a.quick: report(out, torch.device(a.device), a.section or ('quality' if a.device == 'cpu' else f'quality-{a.device}'))
    return out

if __name__ == '__main__': print(json.dumps(main(), indent=1, default=str))
