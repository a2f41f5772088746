"""Time `Trainer.step()`: the optimised path against a plain path of the same model and batch, in one run.

    python benchmarks/bench_train.py                 # CPU: every config, writes the 'train-cpu' section of BENCHMARKS.md
    python benchmarks/bench_train.py --quick         # smoke run: small models, one repeat, nothing written
    python benchmarks/bench_train.py --device cuda   # GPU: bf16 autocast, channels_last, torch.compile, + bf16 matmul peak
    python benchmarks/bench_train.py --ablate ae64 liae-ud-128   # each switch alone on top of the plain path

The plain path is what a straightforward PyTorch loop does: fp32, eager, NCHW, the per-tensor (non-fused) optimisers,
a `.item()` for every number of the record every step (a fit callback that logs them), and, for face swap, the
src→dst decode every step as the model did before training learned to skip it. The optimised path is RunConfig's
defaults for the device (CPU: fp32, NCHW, fused Adam/AdamW, the per-tensor AdaBelief, NaN flags read every step,
which costs nothing there; CUDA: bf16 autocast, channels_last, fused Adam/AdamW or foreach AdaBelief with the NaN
skip decided on the device and its flags read every 50 steps) plus torch.compile on CUDA and the package's own
choices (statistics read in bulk, no src→dst in training). Both are
built from the same config and seed, warmed up, then timed in alternation (plain, optimised, optimised, plain, ...) so
that load on a shared machine hits both; the medians are compared.
"""
from __future__ import annotations
import argparse, contextlib, json, statistics, sys, tempfile, time
from dataclasses import asdict, dataclass, field
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HERE, Contention, PeakMemory, command, fmt_bytes, load_average, machine, md_table, sync, write_section
from dfl_gan.core import Config, RunConfig
from dfl_gan.data import FaceSet, demo_faces
from dfl_gan.train import Trainer

# --- what is benchmarked ------------------------------------------------------------------------------------------
# name → (kind, resolution, dotted overrides, batch on CPU, batch on CUDA)
CONFIGS = {
    'gan64':       ('gan', 64, {}, 16, 128),
    'ae64':        ('ae', 64, {}, 16, 128),
    'ae128':       ('ae', 128, {}, 8, 64),
    'gan128':      ('gan', 128, {}, 8, 64),
    'ae64-perc':   ('ae', 64, {'loss.lambda_perc': 1.0}, 16, 128),
    'ae128-perc':  ('ae', 128, {'loss.lambda_perc': 1.0}, 8, 64),
    'liae-ud-128': ('swap', 128, {'model.archi': 'liae-ud'}, 4, 16),
    'df-ud-128':   ('swap', 128, {'model.archi': 'df-ud'}, 4, 16),
    'liae-ud-256': ('swap', 256, {'model.archi': 'liae-ud'}, 2, 16),
    'df-ud-256':   ('swap', 256, {'model.archi': 'df-ud'}, 2, 16),
    'liae-ud-128-perc': ('swap', 128, {'model.archi': 'liae-ud', 'loss.lambda_perc': 1.0}, 4, 16),
    'liae-ud-256-perc': ('swap', 256, {'model.archi': 'liae-ud', 'loss.lambda_perc': 1.0}, 2, 16),
}
# --quick: the same kinds, small enough for a smoke run in a minute on two cores
QUICK = {
    'ae32':        ('ae', 32, {'model.g_width': 64, 'model.d_width': 16}, 8, 8),
    'ae32-perc':   ('ae', 32, {'model.g_width': 64, 'model.d_width': 16, 'loss.lambda_perc': 1.0,
                               'loss.perc_layers': ['relu1_2', 'relu2_2'], 'loss.perc_layer_weights': [1.0, 1.0]}, 4, 4),
    'gan32':       ('gan', 32, {'model.g_width': 64, 'model.d_width': 16}, 8, 8),
    'liae-ud-64s': ('swap', 64, {'model.archi': 'liae-ud', 'model.ae_dims': 64, 'model.e_dims': 16, 'model.d_dims': 16,
                                 'model.d_mask_dims': 8}, 2, 2),
    'df-ud-64s':   ('swap', 64, {'model.archi': 'df-ud', 'model.ae_dims': 64, 'model.e_dims': 16, 'model.d_dims': 16,
                                 'model.d_mask_dims': 8}, 2, 2),
}

@dataclass
class Variant:
    "One way of running the same training step."
    name: str
    run: dict = field(default_factory=dict)  # run.* settings
    item_sync: bool = False                  # read every number of the record with .item() after each step
    full_swap: bool = False                  # face swap: decode src→dst every step (what the model did before)

def plain() -> Variant:
    run = dict(precision='fp32', compile=False, channels_last='off', fast_optim=False, nan_check_every=1)
    return Variant('plain', run, item_sync=True, full_swap=True)

def optimised(device:torch.device, compile_mode:str='default') -> Variant:
    "RunConfig's defaults (auto precision, channels_last and NaN-guard interval, fused/foreach optimisers), + torch.compile on CUDA."
    run = dict(precision='auto', channels_last='auto', fast_optim=True, nan_check_every=0, compile=device.type == 'cuda')
    if device.type == 'cuda': run['compile_mode'] = compile_mode
    return Variant('optimised', run)

def ablations(device:torch.device, kind:str, compile:bool) -> list[Variant]:
    "Each switch of the optimised path alone, added to the plain path."
    p, out = plain(), []
    def one(name, **kw):
        v = Variant(f'plain + {name}', dict(p.run), p.item_sync, p.full_swap)
        for k, x in kw.items():
            if k in ('item_sync', 'full_swap'): setattr(v, k, x)
            else: v.run[k] = x
        out.append(v)
    one('fused/foreach optimiser', fast_optim=True)
    one('no per-step .item()', item_sync=False)
    if kind == 'swap': one('no src→dst in training', full_swap=False)
    one('channels_last', channels_last='on')
    one('NaN flags read every 50 steps', nan_check_every=50)
    if device.type == 'cuda': one('bf16 autocast', precision='bf16')
    if compile: one('torch.compile', compile=True)
    return out

# --- building ---------------------------------------------------------------------------------------------------------
_VGG = None
def vgg_weights() -> str:
    "A random VGG16 `features` state dict in a temp file (the machine is offline; timing does not need real weights)."
    global _VGG
    if _VGG is None:
        import torchvision
        torch.manual_seed(0)
        f = Path(tempfile.mkdtemp()) / 'vgg16_random_features.pth'
        torch.save(torchvision.models.vgg16(weights=None).features.state_dict(), f)
        _VGG = str(f)
    return _VGG

_DATA = {}
def faces(kind:str, res:int):
    "Demo faces (gan/ae) or random src/dst face sets with a centred mask (swap), cached per resolution."
    key = (kind == 'swap', res)
    if key not in _DATA:
        if kind != 'swap': _DATA[key] = demo_faces(res)
        else:
            g = torch.Generator().manual_seed(res)
            m = torch.zeros(32, 1, res, res, dtype=torch.uint8); m[..., res // 8:-res // 8, res // 8:-res // 8] = 255
            mk = lambda: FaceSet.from_tensor(torch.randint(0, 256, (32, 3, res, res), dtype=torch.uint8, generator=g), m)
            _DATA[key] = (mk(), mk())
    return _DATA[key]

def build(name:str, spec:tuple, v:Variant, device:torch.device):
    kind, res, over, b_cpu, b_cuda = spec
    over = {'model.resolution': res, 'data.batch_size': b_cuda if device.type == 'cuda' else b_cpu,
            'run.device': device.type, **over, **{f'run.{k}': x for k, x in v.run.items()}}
    if 'loss.lambda_perc' in over: over['loss.vgg_weights'] = vgg_weights()
    if kind == 'swap':
        c = Config.swap(**{'loss.lambda_adv': 0.1, **over})
        src, dst = faces(kind, res)
        t = Trainer(c, src=src, dst=dst)
        if v.full_swap:
            G = t.nets['G']; fwd = G.forward
            G.forward = lambda s, d, swap=True: fwd(s, d, swap=True)
        return t
    return Trainer(Config().set_many({'model.mode': kind, **over}), data=faces(kind, res))

def images_per_step(t) -> int:
    "Faces that go through the generator per step (swap: the src and the dst batch)."
    return t.cfg.data.batch_size * (2 if t.cfg.model.mode == 'swap' else 1)

# --- measuring --------------------------------------------------------------------------------------------------------
def run_steps(t, v:Variant, n:int) -> float:
    "Seconds per step over `n` steps, synchronised at the end (and every step for the plain path's `.item()`)."
    read_each = lambda tr, record: [x.item() for x in record.values() if torch.is_tensor(x)]
    sync(t.device); t0 = time.perf_counter()
    t.fit(n, cbs=[read_each] if v.item_sync else [], progress=False)
    t.history.rows  # the optimised path reads its statistics once, here
    sync(t.device)
    return (time.perf_counter() - t0) / n

def count_step(t) -> tuple:
    "(matmul/conv FLOPs, peak memory, memory delta) of one step, eager even where the networks are compiled."
    from torch.utils.flop_counter import FlopCounterMode
    fc = FlopCounterMode(display=False)
    stance = torch.compiler.set_stance('force_eager') if t.cfg.run.compile else contextlib.nullcontext()
    with stance, fc: t.step()
    with PeakMemory(t.device) as pm: t.step(); t.history.rows; sync(t.device)
    return fc.get_total_flops(), pm.peak, pm.delta

def matmul_peak(device:torch.device, trials:int=3) -> tuple:
    "(FLOP/s, what) of a big matmul, best of `trials`: 8192³ bf16 on CUDA, 2048³ fp32 on CPU; the ceiling for % of peak."
    n, dt, it = (8192, torch.bfloat16, 20) if device.type == 'cuda' else (2048, torch.float32, 4)
    a, b = torch.randn(n, n, device=device, dtype=dt), torch.randn(n, n, device=device, dtype=dt)
    for _ in range(2): a @ b
    best = 0.0
    for _ in range(trials):
        sync(device); t0 = time.perf_counter()
        for _ in range(it): a @ b
        sync(device); best = max(best, 2 * n ** 3 * it / (time.perf_counter() - t0))
    return best, f'{n}³ {str(dt).split(".")[1]} matmul'

@dataclass
class Result:
    config: str; variant: str; batch: int; images: int; times: list
    flops: float = 0.0; peak: float = 0.0; delta: float = 0.0; warmup: float = 0.0
    contention: float = 0.0; discarded: int = 0; when: str = ''; command: str = ''
    @property
    def ms(self) -> float: return statistics.median(self.times) * 1e3
    @property
    def ips(self) -> float: return self.images / (self.ms / 1e3)
    @property
    def tflops(self) -> float: return self.flops / (self.ms / 1e3) / 1e12

def bench(name:str, spec:tuple, variants:list, device:torch.device, repeats:int, block_s:float, budget_s:float, log,
          max_contention:float=0.1) -> list:
    "Warm each variant up, count FLOPs and memory, then time them in alternation; one Result per variant."
    trainers, warmups = [], []
    for v in variants:
        t0 = time.perf_counter(); t = build(name, spec, v, device)
        t.step(); sync(t.device)                   # first step: lazy optimiser state, compilation
        if v.run.get('compile', t.cfg.run.compile): t.step(); t.step()
        t.history.rows
        trainers.append(t); warmups.append(time.perf_counter() - t0)
        log(f'  {name} {v.name}: built and warmed up in {warmups[-1]:.1f} s')
    warm = run_steps(trainers[0], variants[0], 1)
    if warm < 2: warm = min(warm, run_steps(trainers[0], variants[0], 1))
    n = max(1, min(50, round(block_s / warm)))
    repeats = max(2, min(repeats, int(budget_s / (n * warm * len(variants)))))  # heavy configs: fewer, longer-step blocks
    res = [Result(name, v.name, t.cfg.data.batch_size, images_per_step(t), [], warmup=w)
           for v, t, w in zip(variants, trainers, warmups)]
    for r, t in zip(res, trainers): r.flops, r.peak, r.delta = count_step(t)
    clean, dirty, tries = [], [], 0
    while len(clean) < repeats and tries < 3 * repeats:   # one repeat = one block per variant, in alternating order
        order = list(range(len(variants)))[::(-1 if tries % 2 else 1)]
        with Contention() as c: block = {i: run_steps(trainers[i], variants[i], n) for i in order}
        tries += 1
        (clean if c.share <= max_contention else dirty).append((block, c.share))
        if c.share > max_contention: log(f'  {name}: other processes took the CPU {100 * c.share:.0f} % of a block: repeating it')
    kept = clean or dirty
    for i, r in enumerate(res):
        r.times = [b[i] for b, _ in kept]
        r.contention, r.discarded, r.when = max(sh for _, sh in kept), len(dirty) if clean else 0, time.strftime('%Y-%m-%d %H:%M')
        r.command = command()
    log(f'  {name}: {n} step(s) per block × {repeats} repeats: ' + ', '.join(f'{r.variant} {r.ms:.0f} ms' for r in res))
    return res

# --- reporting ------------------------------------------------------------------------------------------------------
def table(results:list, peak:float) -> str:
    rows, base, base_min = [], {}, {}
    for r in results:
        if r.variant == 'plain': base[r.config], base_min[r.config] = r.ms, min(r.times)
        spread = f'{min(r.times) * 1e3:.0f}–{max(r.times) * 1e3:.0f} ({len(r.times)}; {100 * r.contention:.0f} %)'
        ratio = '' if r.variant == 'plain' else f'**{base[r.config] / r.ms:.2f}×** ({base_min[r.config] / min(r.times):.2f}×)'
        rows.append([r.config, r.variant, r.batch, f'{r.ms:.1f}', spread, f'{r.ips:.1f}', fmt_bytes(r.peak),
                     fmt_bytes(r.delta), f'{r.flops / 1e9:.1f}', f'{r.tflops:.3f}', f'{100 * r.tflops * 1e12 / peak:.1f} %',
                     f'{r.warmup:.0f}', ratio])
    return md_table(['config', 'path', 'batch', 'ms/step (median)', 'range (blocks; CPU taken by others)', 'images/s', 'peak mem', 'step mem Δ',
                     'GFLOP/step', 'TFLOP/s', '% of peak', 'build + warm-up s', 'speed-up vs plain: medians (fastest blocks)'], rows)

def merge(section:str, results:list, peak:float, wall:float, order:list) -> tuple:
    "Store these results in results/SECTION.json (one entry per config, replacing an older one) and return all of them."
    f = HERE / 'results' / f'{section}.json'
    store = json.loads(f.read_text()) if f.exists() else dict(configs={}, peak=0.0, wall=0.0)
    for c in {r.config for r in results}: store['configs'][c] = [asdict(r) for r in results if r.config == c]
    store['peak'], store['wall'] = max(store['peak'], peak), store['wall'] + wall
    f.parent.mkdir(exist_ok=True); f.write_text(json.dumps(store, indent=1))
    merged = [Result(**d) for c in order if c in store['configs'] for d in store['configs'][c]]
    return merged, store['peak'], store['wall']

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    ap.add_argument('--quick', action='store_true', help='small models, 1 repeat, nothing written: a smoke run')
    ap.add_argument('--configs', nargs='*', help=f'subset of {list(CONFIGS)}')
    ap.add_argument('--ablate', nargs='*', metavar='CONFIG', help='time each switch alone on these configs instead')
    ap.add_argument('--repeats', type=int, default=3, help='timed blocks per path (alternating)')
    ap.add_argument('--block-seconds', type=float, default=None, help='aim for blocks this long (CPU 3 s, CUDA 2 s)')
    ap.add_argument('--compile-mode', default='default', choices=('default', 'reduce-overhead', 'max-autotune'))
    ap.add_argument('--budget-seconds', type=float, default=None, help='timed seconds per config at most (CPU 60, CUDA 60)')
    ap.add_argument('--ablate-compile', action='store_true', help='CPU: include torch.compile in --ablate (minutes of compiling)')
    ap.add_argument('--no-write', action='store_true', help='print the tables, leave BENCHMARKS.md alone')
    ap.add_argument('--report', action='store_true', help='measure nothing: rewrite the section from benchmarks/results/')
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    if device.type == 'cuda' and not torch.cuda.is_available(): sys.exit('--device cuda: no CUDA device here')
    table_cfgs = QUICK if a.quick else CONFIGS
    names = a.ablate if a.ablate else (a.configs or list(table_cfgs))
    unknown = [n for n in names if n not in {**CONFIGS, **QUICK}]
    if unknown: sys.exit(f'unknown config(s) {unknown}; choose from {list(CONFIGS)} or (quick) {list(QUICK)}')
    repeats = 1 if a.quick else a.repeats
    block_s = a.block_seconds or (0.5 if a.quick else 2.0 if device.type == 'cuda' else 3.0)
    budget_s = a.budget_seconds or (5.0 if a.quick else 60.0)
    log = lambda s: print(s, flush=True)
    log(f'{machine(device)}; load average {load_average()}')
    peak, peak_what = (0.0, '') if a.report else matmul_peak(device)
    peak_what = peak_what or ('8192³ bfloat16 matmul' if device.type == 'cuda' else '2048³ float32 matmul')
    log(f'peak: {peak / 1e12:.3f} TFLOP/s ({peak_what})')
    t_start, results = time.perf_counter(), []
    for n in ([] if a.report else names):
        spec = {**CONFIGS, **QUICK}[n]
        comp = device.type == 'cuda' or a.ablate_compile
        variants = [plain()] + (ablations(device, spec[0], comp) if a.ablate else [optimised(device, a.compile_mode)])
        results += bench(n, spec, variants, device, repeats, block_s, budget_s, log)
    wall = time.perf_counter() - t_start
    if not a.report: peak = max(peak, matmul_peak(device)[0])  # measured again at the end: the better of the two
    print('\n' + table(results, peak) + f'\n\nwall time {wall:.0f} s, load average {load_average()}')
    if a.quick or a.no_write: return results
    section = f'train-ablation-{device.type}-{"-".join(names)}' if a.ablate else f'train-{device.type}'
    results, peak, wall = merge(section, results, peak, wall, names if a.ablate else list(CONFIGS))
    tab = table(results, peak)
    opt = optimised(device, a.compile_mode)
    text = '\n'.join([
        f'## Training step{" — each switch alone on " + ", ".join(names) if a.ablate else ""}, {device.type.upper()}', '',
        f'- machine: {machine(device)}',
        f'- peak for "% of peak": {peak / 1e12:.3f} TFLOP/s, the best {peak_what} measured at the start and end of each run',
        '- commands (each config keeps the result of the last command that ran it, in `benchmarks/results/`; '
        f'{wall / 60:.1f} min of benchmarking in all):',
        *[f'  - `{c}`: {", ".join(r.config for r in results if r.command == c and r.variant == "plain")} '
          f'({next(r.when for r in results if r.command == c)})' for c in dict.fromkeys(r.command for r in results)],
        '- a block during which other processes kept the CPU busy more than 10 % of the time (Linux PSI, '
        '/proc/pressure/cpu) is thrown away and repeated; the share of the kept blocks is shown next to the range',
        f'- plain path: run settings `{plain().run}`, `.item()` on every record value every step, face swap decodes src→dst every step',
        f'- optimised path: run settings `{opt.run}` (RunConfig defaults: precision `{RunConfig().precision}`, '
        f'channels_last `{RunConfig().channels_last}`, compile `{RunConfig().compile}`, fast_optim `{RunConfig().fast_optim}`), '
        'statistics read once per timed block, face swap skips src→dst in training',
        '- median of the timed blocks (range: fastest–slowest block); plain and optimised alternate, same model, batch and seed',
        '- images/s counts faces through the generator (face swap: src + dst batch); FLOPs are matmul/conv FLOPs of one '
        'step (torch.utils.flop_counter), so "% of peak" is a lower bound on utilisation',
        '- peak mem: CUDA max_memory_allocated; CPU process RSS peak during one step; step mem Δ: that peak minus the '
        'value before the step (CPU: after giving freed heap back with malloc_trim)',
        '- the perceptual configs use randomly initialised VGG16 weights written to a temp file and passed as '
        '`loss.vgg_weights` (the machine is offline; the timing does not depend on the values)',
        '', tab, ''])
    log(f'wrote section {section!r} of {write_section(section, text)}')
    return results

if __name__ == '__main__': main()
