"""Exact resume: a run split across processes (N steps, save, a new process loads and runs N more) ends bit for bit
where the same run done in one go ends: every tensor of every network, optimiser, EMA and random state, and every
history row, for the autoencoder with GAN and augmentation, the spec's noise GAN, and the SAEHD face swap.

This file is also the worker: `python tests/test_resume.py PHASE DIR` runs one phase of every case in a fresh process."""
import json, math, os, subprocess, sys
from pathlib import Path
import pytest, torch

N = 3  # steps per half

def configs() -> dict:
    from dfl_gan.core import Config
    small = {'data.batch_size': 4, 'run.deterministic': True, 'run.device': 'cpu',
             'data.hsv_jitter': 0.1}  # random warp, affine and flips are on by default
    return dict(
        ae=Config.tiny('ae', **small, **{'model.g_width': 32, 'optim.ema': 0.9, 'optim.lr_dropout': 0.5, 'optim.gan_start_step': N + 1}),
        gan=Config.tiny('gan', **small, **{'model.g_width': 32, 'optim.d_steps': 2, 'optim.optimizer': 'adabelief'}),
        adaptive=Config.tiny('gan', **small, **{'model.g_width': 32, 'optim.balance': 'adaptive', 'optim.balance_threshold': 0.55,
                                                'optim.lr_d': 2e-3}),
        swap=Config.tiny('swap', **small, **{'loss.lambda_adv': 0.1, 'data.color_transfer': 'rct', 'optim.lr_g': 5e-4, 'optim.ema': 0.5}))

def data_kw(case:str) -> dict:
    "Generated faces with irregular masks, the same in every process."
    from dfl_gan.data import FaceSet
    g = torch.Generator().manual_seed(7)
    faces = lambda: FaceSet.from_tensor(torch.rand(10, 3, 32, 32, generator=g), masks=(torch.rand(10, 1, 32, 32, generator=g) > 0.2).float())
    return dict(src=faces(), dst=faces()) if case == 'swap' else dict(data=faces())

def worker(phase:str, root:Path):
    from dfl_gan.train import Trainer, TASKS
    from dfl_gan.checkpoints import save_checkpoint, load
    for case, cfg in configs().items():
        if phase == 'straight':
            t = Trainer(cfg, **data_kw(case)); t.fit(2 * N, progress=False); save_checkpoint(t, root / case / 'straight')
        elif phase == 'first':
            t = Trainer(cfg, **data_kw(case)); t.fit(N, progress=False); save_checkpoint(t, root / case / 'split')
        else:  # 'second': continue the split run; and, as a control, the same with the random state thrown away
            for name, reseed in (('reseeded', True), ('split', False)):
                t = load(root / case / 'split', **data_kw(case))
                assert type(t.task) is TASKS[cfg.model.mode] and t.step_count == N, (type(t.task), t.step_count)
                if reseed: torch.manual_seed(1234)
                t.fit(N, progress=False); save_checkpoint(t, root / case / name)

def launch(phase:str, root:Path) -> subprocess.Popen:
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    return subprocess.Popen([sys.executable, __file__, phase, str(root)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

def finish(p:subprocess.Popen):
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]

def differences(a, b, where='') -> list[str]:
    "Where two checkpoints differ: tensors by torch.equal, floats exactly (NaN equals NaN), containers recursively."
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b): return [f'{where}: keys {sorted(set(a) ^ set(b))}']
        return [d for k in a for d in differences(a[k], b[k], f'{where}.{k}')]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b): return [f'{where}: lengths {len(a)} != {len(b)}']
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f'{where}[{i}]')]
    if torch.is_tensor(a) and torch.is_tensor(b):
        nan_equal = a.is_floating_point() and torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())
        return [] if a.dtype == b.dtype and a.shape == b.shape and (torch.equal(a, b) or nan_equal) else [where]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b): return []
    return [] if type(a) is type(b) and a == b else [f'{where}: {a!r} != {b!r}']

@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('resume')
    straight, first = launch('straight', root), launch('first', root)
    finish(first); second = launch('second', root)
    finish(straight); finish(second)
    return root

@pytest.mark.parametrize('case', ['ae', 'gan', 'adaptive', 'swap'])
def test_split_run_equals_straight_run(runs, case):
    from dfl_gan.checkpoints import latest_valid_checkpoint
    a, b = latest_valid_checkpoint(runs / case / 'straight')[1], latest_valid_checkpoint(runs / case / 'split')[1]
    assert a['step'] == b['step'] == 2 * N and len(a['history']['rows']) == 2 * N
    for ck in (a, b): ck.pop('provenance')   # holds the time of the save
    assert differences(a, b) == []
    assert json.dumps(a['history']) == json.dumps(b['history'])   # floats exactly, NaN included
    if case == 'ae': assert [r['gan_on'] for r in a['history']['rows']] == [0] * (N + 1) + [1] * (N - 1)
    if case == 'adaptive': assert 0 < sum(r['d_updated'] for r in a['history']['rows']) < 2 * N   # D rested: the state matters

@pytest.mark.parametrize('case', ['ae', 'gan', 'adaptive', 'swap'])
def test_the_comparison_sees_a_lost_random_state(runs, case):
    "The control: resuming with the random state replaced ends elsewhere, so the equality above is not vacuous."
    from dfl_gan.checkpoints import latest_valid_checkpoint
    a, c = latest_valid_checkpoint(runs / case / 'straight')[1], latest_valid_checkpoint(runs / case / 'reseeded')[1]
    diff = differences(a['nets'], c['nets'])
    assert diff and any(d.startswith('.G') for d in diff), diff

if __name__ == '__main__':
    worker(sys.argv[1], Path(sys.argv[2]))
