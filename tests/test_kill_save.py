"""`kill -9` at random moments of a run that steps and saves without pause: after every kill the run folder holds a
valid checkpoint, never a partial one, and resuming works. Temporary files of interrupted saves are never picked and
are removed by the next save."""
import multiprocessing as mp, os, random, signal, time, warnings
import pytest, torch
from dfl_gan.core import Config
from dfl_gan.data import FaceSet
from dfl_gan.train import Trainer
from dfl_gan.checkpoints import save_checkpoint, find_checkpoints, latest_valid_checkpoint, read_checkpoint, load

KILLS = 20
FACES = FaceSet.from_tensor(torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(0)))

def config() -> Config: return Config.tiny(**{'data.batch_size': 4, 'run.device': 'cpu'})

def saver(run_dir):
    "The child: resume the run, then step and save until killed."
    torch.set_num_threads(1)
    t = load(run_dir, data=FACES)
    while True: t.step(); save_checkpoint(t, run_dir, keep_last=2)

@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs fork to start the savers quickly')
def test_kill_9_while_saving_never_leaves_a_bad_checkpoint(tmp_path):
    run_dir, threads = tmp_path / 'run', torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        save_checkpoint(Trainer(config(), data=FACES), run_dir, keep_last=2)
        ctx, rng = mp.get_context('fork'), random.Random(0)
        last, mid_write, cleaned = 0, 0, 0
        for _ in range(KILLS):
            before = set(run_dir.glob('*.tmp'))
            p = ctx.Process(target=saver, args=(run_dir,)); p.start()
            time.sleep(rng.uniform(0.4, 1.2)); p.kill(); p.join()
            assert p.exitcode == -signal.SIGKILL
            with warnings.catch_warnings():
                warnings.simplefilter('error')          # a checkpoint skipped as corrupt would be an error here
                path, ck = latest_valid_checkpoint(run_dir)
                for q in find_checkpoints(run_dir): read_checkpoint(q)   # every listed checkpoint loads
                t = load(run_dir, data=FACES)
            assert not path.name.endswith('.tmp') and t.step_count == ck['step'] >= last
            left = set(run_dir.glob('*.tmp'))
            mid_write += bool(left)                     # this kill cut a save short
            if before and ck['step'] > last:            # the child saved since: the old leftovers are gone
                assert not before & left, before & left
                cleaned += 1
            last = ck['step']
        assert last > KILLS and mid_write >= 3 and cleaned >= 1, (last, mid_write, cleaned)
        save_checkpoint(t, run_dir, keep_last=2)
        assert not list(run_dir.glob('*.tmp'))
    finally: torch.set_num_threads(threads)
