"""NaN protection as a whole: a run whose generator turns out NaN for a few steps skips those updates, records them,
restores the last good state after `run.nan_patience` of them (also right after a resume), lowers the learning rates
when asked, carries on, and still draws its curves; the `dfl-gan` console says what happened in one line each."""
import json, os, subprocess, sys, warnings
import numpy as np, torch
from PIL import Image
from dfl_gan.core import Config
from dfl_gan.data import FaceSet
from dfl_gan.train import Trainer
from dfl_gan.checkpoints import save_checkpoint, load
from dfl_gan.monitor import plot_history, figure_png

FACES = FaceSet.from_tensor(torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
NAN = float('nan')

def guarded(**run) -> Config:
    "Config.tiny with a patience of 3 and a snapshot every 2 steps; `run` are further run settings."
    return Config.tiny(**{'model.g_width': 32, 'data.batch_size': 4, 'run.device': 'cpu', 'run.nan_patience': 3,
                          'run.snapshot_every': 2, **{f'run.{k}': v for k, v in run.items()}})

def weights(t) -> dict: return {k: v.clone() for k, v in t.nets['G'].state_dict().items()}
def same(a, b) -> bool: return all(torch.equal(a[k], b[k]) for k in a)

def poisoned(t, n:int):
    "Run `n` steps with the generator's output replaced by NaN; returns the warnings."
    hook = t.nets['G'].register_forward_hook(lambda m, i, o: o * NAN)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always'); t.fit(n, progress=False)
    hook.remove()
    return [str(x.message) for x in w]

def test_a_nan_burst_is_skipped_restored_and_survived():
    t = Trainer(guarded(nan_lr_factor=0.5), data=FACES)
    kept = {}
    t.fit(4, cbs=[lambda tr, rec: tr.step_count == 3 and kept.update(weights(tr))], progress=False)  # the snapshot of step 2
    msgs = poisoned(t, 4)
    assert same(weights(t), kept)                                  # restored to the snapshot, the 4th bad step skipped
    assert [(e['step'], e['kind']) for e in t.history.events] == [(4, 'nonfinite'), (5, 'nonfinite'), (6, 'nonfinite'), (6, 'restore'),
                                                                 (6, 'set'), (6, 'set'), (7, 'nonfinite')]
    assert t.history.events[3]['to_step'] == 2 and t.cfg.optim.lr_g == t.cfg.optim.lr_d == 1e-4
    assert sum(m.startswith(f'step {s}: non-finite loss') for s in (4, 5, 6, 7) for m in msgs) == 4 and any('restored the state of step 2, learning rates × 0.5' in m for m in msgs), msgs
    t.fit(4, progress=False)
    assert not same(weights(t), kept)                              # training goes on from there
    rows = t.history.rows
    assert [r['finite'] for r in rows] == [1] * 4 + [0] * 4 + [1] * 4
    assert [r['lr_g'] for r in rows[-4:]] == [1e-4] * 4 and all(np.isfinite(r['g_total']) for r in rows[-4:])
    fig = plot_history(t.history)
    assert any('restore' in x.get_text() for x in fig.axes[0].texts)
    assert figure_png(fig)[:8] == b'\x89PNG\r\n\x1a\n'

def test_after_a_resume_the_guard_restores_the_resumed_state(tmp_path):
    t = Trainer(guarded(), data=FACES); t.fit(5, progress=False); save_checkpoint(t, tmp_path)
    t = load(tmp_path, data=FACES); start = weights(t)
    poisoned(t, 3)
    assert t.history.events[-1]['kind'] == 'restore' and t.history.events[-1]['to_step'] == 5
    assert same(weights(t), start)                                 # not the fresh initialisation of the resumed trainer

POISON = '''
import sys
from dfl_gan import train, cli
step = train.Trainer.step
def poisoned(self):
    if not 3 <= self.step_count < 6: return step(self)
    hook = self.nets['G'].register_forward_hook(lambda m, i, o: o * float('nan'))
    try: return step(self)
    finally: hook.remove()
train.Trainer.step = poisoned
sys.exit(cli.main(sys.argv[1:]))
'''

def test_the_console_reports_nan_steps_and_the_curves_still_draw(tmp_path):
    out = tmp_path / 'run'
    r = subprocess.run([sys.executable, '-c', POISON, 'train', '--out', str(out), '--steps', '8', '--model.resolution', '32',
                        '--model.g_width', '32', '--model.d_width', '16', '--data.batch_size', '4', '--run.nan_patience', '2',
                        '--run.nan_lr_factor', '0.5', '--run.device', 'cpu', '--no-progress'],
                       capture_output=True, text=True, timeout=600, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr[-3000:]
    lines = r.stderr.splitlines()
    assert lines[0].startswith('dfl-gan train: warning: step 3: non-finite loss or gradients in'), lines
    assert 'dfl-gan train: warning: step 4: 2 non-finite steps in a row; restored the state of step 0, learning rates × 0.5' in lines, lines
    events = [json.loads(l) for l in (out / 'history.jsonl').read_text().splitlines() if '"event"' in l]
    assert [e['event'] for e in events] == ['nonfinite', 'nonfinite', 'restore', 'set', 'set', 'nonfinite']
    curves = np.asarray(Image.open(out / 'curves.png').convert('RGB'))
    assert curves.shape[1] > 400 and curves.std() > 10
