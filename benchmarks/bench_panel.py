"""What the training panel costs: the same run with and without `TrainingPanel` refreshing at its defaults.

    python benchmarks/bench_panel.py           # writes the 'panel-cpu' section of BENCHMARKS.md
    python benchmarks/bench_panel.py --quick   # smoke run, nothing written

Headless: the panel is built and driven without a front end (widget values are set; nothing is displayed), which is
all its redraw costs on the Python side: drawing the plots, encoding PNGs, taking previews. The run without a panel is
`trainer.fit(n, progress=False)`; the run with it is `panel.run(n, block=True)`, the loop the Run button starts in a
thread, at the panel's defaults (`plot_every=1.0` s, `max_overhead=0.02`, previews every `run.preview_every` steps,
final redraw included). The two alternate on one trainer, so that the model, its data and its memory are the same
and only the panel differs; the budget is 5 % extra wall time.
"""
from __future__ import annotations
import argparse, statistics, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command, load_average, machine, md_table, sync, write_section
from dfl_gan.core import Config
from dfl_gan.data import demo_faces
from dfl_gan.train import Trainer
from dfl_gan.widgets import TrainingPanel

def trainer(res:int, batch:int, device:str) -> Trainer:
    return Trainer(Config().set_many({'model.resolution': res, 'data.batch_size': batch, 'run.device': device}), data=demo_faces(res))

def instrument(panel:TrainingPanel) -> dict:
    "Wrap the panel's own work (redraws, previews, counter, messages) to add up the seconds it takes during a run."
    spent = dict(refresh=0.0, previews=0.0, _show_counter=0.0, _check_events=0.0)
    for name in spent:
        obj, attr = (panel._previews, 'take') if name == 'previews' else (panel, name)
        f = getattr(obj, attr)
        def timed(*a, _f=f, _n=name, **kw):
            t0 = time.perf_counter()
            try: return _f(*a, **kw)
            finally: spent[_n] += time.perf_counter() - t0
        setattr(obj, attr, timed)
    return spent

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--seconds', type=float, default=40.0, help='length of each timed run')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--no-write', action='store_true')
    a = ap.parse_args(argv)
    res, batch = (32, 8) if a.quick else (64, 16)
    seconds, repeats = (4.0, 1) if a.quick else (a.seconds, a.repeats)
    log = lambda s: print(s, flush=True)
    dev = torch.device(a.device)
    log(f'{machine(dev)}; load average {load_average()}')
    bare = trainer(res, batch, a.device)
    panel = TrainingPanel(bare)
    bare.fit(2, progress=False); panel.run(2, block=True)          # warm-up
    spent = instrument(panel)
    t0 = time.perf_counter(); bare.fit(3, progress=False); sync(dev)
    n = max(5, round(seconds / ((time.perf_counter() - t0) / 3)))
    runs = dict(without=lambda: bare.fit(n, progress=False), panel=lambda: panel.run(n, block=True))
    times = {k: [] for k in runs}
    for r in range(repeats):
        for k in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            t0 = time.perf_counter(); runs[k](); sync(dev); times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    extra = med['panel'] / med['without'] - 1
    own = sum(spent.values()) / sum(times['panel'])   # the panel's own work as a share of its runs' wall time
    log(f'{n} steps: without {med["without"]:.1f} s, with panel {med["panel"]:.1f} s → {100 * extra:+.1f} % '
        f'({len(panel.previews)} previews taken in all); time inside the panel {100 * own:.1f} % '
        + str({k: round(v, 2) for k, v in spent.items()}))
    result = dict(extra=extra, own=own, spent=spent, previews=len(panel.previews))
    if a.quick or a.no_write: return result
    text = '\n'.join([
        f'## Training panel overhead, {a.device.upper()}', '',
        f'- machine: {machine(dev)}',
        f'- command: `{command()}` (load average at the end {load_average()})',
        f'- trainer: spec autoencoder + GAN (mode ae) at {res} px, batch {batch}, defaults otherwise '
        f'(previews every {bare.cfg.run.preview_every} steps); {n} steps per run, {repeats} runs each, alternating', '',
        md_table(['run', 'wall time (median)', 'runs', 'steps/s'],
                 [['`trainer.fit(n)`', f'{med["without"]:.2f} s', ', '.join(f'{x:.2f}' for x in times['without']), f'{n / med["without"]:.2f}'],
                  ['`TrainingPanel.run(n, block=True)` at defaults', f'{med["panel"]:.2f} s', ', '.join(f'{x:.2f}' for x in times['panel']),
                   f'{n / med["panel"]:.2f}']]), '',
        f'Time spent in the panel\'s own code during its runs (timed around `refresh`, the previews, `_show_counter`, '
        f'`_check_events`): **{100 * own:.1f} %** of the wall time ({", ".join(f"{k} {v:.2f} s" for k, v in spent.items())} '
        f'over {repeats} runs of {n} steps). The wall-time difference of the medians, which also carries this machine\'s '
        f'run-to-run noise (see the runs column), is {100 * extra:+.1f} %. Budget: 5 %. The panel caps its redraws at '
        f'`max_overhead` = {100 * panel.max_overhead:.0f} % of the running time (a redraw that took c seconds waits '
        f'c / {panel.max_overhead} before the next, and a run starts without one), so '
        'its share does not grow with the length of the run; the rest is the previews and the redraw at the end of each run.', ''])
    log(f'wrote section panel-{a.device} of {write_section(f"panel-{a.device}", text)}')
    return result

if __name__ == '__main__': main()
