"""TensorBoard logging read back with TensorBoard's own reader: every record key as a curve with the history's values,
knob changes and incidents as text at their step, previews as images, batched reads of the history, the missing-extra
message, and a resumed run that continues its curves without repeating a step."""
import io, sys, time, warnings
import numpy as np, pytest, torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from dfl_gan.core import Config
from dfl_gan.data import FaceSet
from dfl_gan.train import Trainer, Callback
from dfl_gan.monitor import preview_grid
from dfl_gan.checkpoints import save_checkpoint, load
from dfl_gan.tensorboard import TensorBoard, scalar_tag

def read_log(log_dir) -> EventAccumulator:
    "Every value of every tag in `log_dir`, as TensorBoard reads it."
    acc = EventAccumulator(str(log_dir), size_guidance=dict.fromkeys(('scalars', 'images', 'tensors', 'histograms', 'audio'), 0))
    acc.Reload(); return acc

def texts(acc, tag) -> list[tuple]:
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(f'{tag}/text_summary')]

def swap_trainer(**kw) -> Trainer:
    g = torch.Generator().manual_seed(0)
    faces = lambda: FaceSet.from_tensor(torch.rand(4, 3, 32, 32, generator=g))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # random tensors carry no masks
        return Trainer(Config.tiny('swap', **{'data.batch_size': 2, **kw}), src=faces(), dst=faces())

def check_scalars(acc, trainer, steps):
    "Every record key is a scalar tag with one value per step, equal to the history's as float32 (NaN included)."
    rows = trainer.history.rows
    keys = [k for k in rows[0] if k != 'step']
    assert set(acc.Tags()['scalars']) == {scalar_tag(k) for k in keys}
    for k in keys:
        s = acc.Scalars(scalar_tag(k))
        assert [e.step for e in s] == list(steps), k
        np.testing.assert_array_equal([e.value for e in s], np.float32([rows[i][k] for i in steps]), err_msg=k)

def test_ae_run(tmp_path):
    t = Trainer(Config.tiny(**{'data.batch_size': 2}))
    knob = lambda tr, r: tr.set('loss.lambda_adv', 0.3) if tr.step_count == 2 else None
    t.fit(5, [TensorBoard(tmp_path, every=1, previews_every=2), knob], progress=False)
    acc = read_log(tmp_path)
    check_scalars(acc, t, range(5))
    assert {'loss/rec', 'loss/g_total', 'balance/d_real', 'balance/rt', 'grad/gn_g', 'lr/lr_d', 'run/finite'} <= set(acc.Tags()['scalars'])
    assert texts(acc, 'events/set') == [(2, '`loss.lambda_adv`: 0.1 → 0.3')]
    images = acc.Images('preview')
    assert [e.step for e in images] == [0, 2, 4, 5]
    final = np.asarray(Image.open(io.BytesIO(images[-1].encoded_image_string)).convert('RGB'))
    np.testing.assert_array_equal(final, preview_grid(t.preview()))   # PNG: the very pixels of the final preview
    ((step, config),) = texts(acc, 'config')
    assert step == 0 and '"lambda_adv": 0.1' in config   # the config the run started with

def test_swap_run_batched(tmp_path):
    t = swap_trainer()
    class Knob(Callback):
        def after_step(self, tr, record):
            if tr.step_count == 4: tr.cfg.loss.lambda_adv = 0.3   # plain assignment: recorded too; the GAN comes on
    t.fit(7, [TensorBoard(tmp_path, every=3, previews_every=0), Knob()], progress=False)
    acc = read_log(tmp_path)
    check_scalars(acc, t, range(7))
    assert {'loss/src_dssim', 'loss/dst_mse', 'loss/mask', 'loss/true_face', 'balance/gan_on'} <= set(acc.Tags()['scalars'])
    assert np.isnan(acc.Scalars('balance/d_real')[0].value) and not np.isnan(acc.Scalars('balance/d_real')[-1].value)
    assert texts(acc, 'events/set') == [(4, '`loss.lambda_adv`: 0.0 → 0.3')]
    images = acc.Images('preview')
    grid = preview_grid(t.preview())
    assert [e.step for e in images] == [0, 7] and (images[-1].height, images[-1].width) == grid.shape[:2]
    assert grid.shape[1] == 5 * 32   # src, src→src, dst, dst→dst, src→dst

def test_reads_the_history_in_batches(tmp_path):
    """With every=4 the callback reads the history (its one bulk conversion) every 4th step, not each step; yet every
    value carries the wall-clock time its own step ended, not the time of the write."""
    t = Trainer(Config.tiny(**{'data.batch_size': 2}))
    pending, ended = [], []
    class Watch(Callback):
        order = 30   # after the TensorBoard callback
        def after_step(self, tr, record): pending.append(len(tr.history._pending)); ended.append(time.time())
    t.fit(8, [TensorBoard(tmp_path, every=4, previews_every=0), Watch()], progress=False)
    assert pending == [1, 2, 3, 0, 1, 2, 3, 0]
    s = read_log(tmp_path).Scalars('loss/rec')
    assert [e.step for e in s] == list(range(8))
    for i, e in enumerate(s): assert (ended[i - 1] if i else 0) <= e.wall_time <= ended[i], i

@pytest.mark.parametrize('missing', ['tensorboard', 'torch.utils.tensorboard'])
def test_missing_extra(tmp_path, monkeypatch, missing):
    "Without the tensorboard package (nothing of it imported yet), or with torch's tensorboard module failing to import."
    for m in [m for m in sys.modules if m.split('.')[0] == 'tensorboard' or m.startswith('torch.utils.tensorboard')]:
        monkeypatch.delitem(sys.modules, m)
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(ImportError, match=r'pip install "dfl_gan\[tensorboard\]"'): TensorBoard(tmp_path)

def test_bad_settings(tmp_path):
    with pytest.raises(ValueError, match='every must be >= 1'): TensorBoard(tmp_path, every=0)
    with pytest.raises(ValueError, match='previews_every must be >= 0'): TensorBoard(tmp_path, previews_every=-1)

def test_resume_appends_without_duplicates(tmp_path):
    "A run saves at step 3, goes on to step 5 and stops; resumed from step 3 it writes steps 3.. again, each once."
    run, log = tmp_path / 'run', tmp_path / 'tb'
    t = Trainer(Config.tiny(**{'data.batch_size': 2}))
    knob = lambda tr, r: tr.set('loss.lambda_adv', 0.3) if tr.step_count == 2 else None
    t.fit(2, [TensorBoard(log), knob], progress=False)      # changed after the last step of a fit: acts from step 2 …
    t.fit(1, TensorBoard(log), progress=False)              # … and is written by the fit that runs step 2
    save_checkpoint(t, run)
    t.set('loss.lambda_adv', 0.2)                          # lost with the steps after the checkpoint
    t.fit(2, TensorBoard(log), progress=False)
    r = load(run)
    assert r.step_count == 3
    r.fit(3, TensorBoard(log, previews_every=2), progress=False)
    acc = read_log(log)
    check_scalars(acc, r, range(6))
    assert [e.step for e in acc.Images('preview')] == [0, 2, 3, 5, 6]   # every 2 steps since the last one, as the run folder's
    # the change before the checkpoint once; the stopped run's text about its lost steps stays, as the notebook says
    assert texts(acc, 'events/set') == [(2, '`loss.lambda_adv`: 0.1 → 0.3'), (3, '`loss.lambda_adv`: 0.3 → 0.2')]

def test_incidents(tmp_path):
    "Non-finite steps, the restore and the learning rates it lowers: text by kind, one text per step, in step order."
    t = Trainer(Config.tiny(**{'data.batch_size': 2, 'run.nan_patience': 2, 'run.nan_lr_factor': 0.5}))
    class Poison(Callback):   # G outputs NaN in steps 2 and 3
        def before_step(self, tr):
            if tr.step_count == 2: self.hook = tr.nets['G'].register_forward_hook(lambda m, i, o: o * float('nan'))
            if tr.step_count == 4: self.hook.remove()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        t.fit(5, [TensorBoard(tmp_path, previews_every=0), Poison()], progress=False)
    acc = read_log(tmp_path)
    assert texts(acc, 'events/nonfinite') == [(2, "`parts`=['D', 'G'], `streak`=1"), (3, "`parts`=['D', 'G'], `streak`=2")]
    assert texts(acc, 'events/restore') == [(3, '`to_step`=0, `lr_factor`=0.5')]
    assert texts(acc, 'events/set') == [(3, '`optim.lr_g`: 0.0002 → 0.0001\n\n`optim.lr_d`: 0.0002 → 0.0001')]
    assert [e.value for e in acc.Scalars('run/finite')] == [1, 1, 0, 0, 1]

def test_cli_run_tensorboard(tmp_path):
    "`dfl-gan train --run.tensorboard DIR` writes the run's event files into DIR/<run folder name>, every record key there."
    from dfl_gan.cli import main
    assert main(['train', '--out', str(tmp_path / 'run1'), '--steps', '3', '--no-progress', '--model.resolution', '32',
                 '--run.tensorboard', str(tmp_path / 'tb')]) == 0
    acc = read_log(tmp_path / 'tb' / 'run1')
    rows = [l for l in (tmp_path / 'run1' / 'history.jsonl').read_text().splitlines() if '"step"' in l]
    assert len(rows) == 3 and {'loss/d_loss', 'loss/g_total', 'balance/d_real', 'lr/lr_g'} <= set(acc.Tags()['scalars'])
    assert [e.step for e in acc.Scalars('loss/g_total')] == [0, 1, 2]
