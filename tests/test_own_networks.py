"""Networks of your own train through the same `Trainer` with every feature: a 20-line DCGAN (BatchNorm and all) driven
by the panel, with a knob turned mid-run, checkpoints in a run folder, and a resume in fresh networks that ends bit for
bit where the uninterrupted run ends."""
import torch, torch.nn as nn
from dfl_gan.all import *

def dcgan(z_dim:int=32, ch:int=16) -> tuple:
    "A DCGAN generator (z → 32×32 image in [0, 1]) and discriminator (image → one logit)."
    G = nn.Sequential(nn.Unflatten(1, (z_dim, 1, 1)),
                      nn.ConvTranspose2d(z_dim, ch * 4, 4, 1, 0), nn.BatchNorm2d(ch * 4), nn.ReLU(),
                      nn.ConvTranspose2d(ch * 4, ch * 2, 4, 2, 1), nn.BatchNorm2d(ch * 2), nn.ReLU(),
                      nn.ConvTranspose2d(ch * 2, ch, 4, 2, 1), nn.BatchNorm2d(ch), nn.ReLU(),
                      nn.ConvTranspose2d(ch, 3, 4, 2, 1), nn.Sigmoid())
    D = nn.Sequential(nn.Conv2d(3, ch, 4, 2, 1), nn.LeakyReLU(0.2),
                      nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2),
                      nn.Conv2d(ch * 2, ch * 4, 4, 2, 1), nn.BatchNorm2d(ch * 4), nn.LeakyReLU(0.2),
                      nn.Conv2d(ch * 4, 1, 4, 1, 0), nn.Flatten())
    return G, D

def config() -> Config:
    return Config.tiny('gan', **{'optim.lr_d': 1e-3, 'run.device': 'cpu', 'run.deterministic': True, 'run.preview_every': 2})

def weights(t) -> dict: return {f'{n}.{k}': v.clone() for n, net in t.nets.items() for k, v in net.state_dict().items()}

def test_a_dcgan_trains_with_the_panel_and_resumes_exactly(tmp_path):
    G, D = dcgan()
    t = Trainer(config(), G=G, D=D)
    assert t.nets == dict(G=G, D=D) and t.task.given == ('G', 'D')
    panel = TrainingPanel(t, run_dir=tmp_path / 'run')
    panel.run(3, block=True)
    panel.knobs['loss.lambda_adv'].value = 0.5                     # a knob between runs
    panel.run(2, block=True)
    assert panel.save() == tmp_path / 'run' / 'checkpoint-00000005.pt'
    panel.run(3, block=True)                                       # the uninterrupted run goes on to step 8
    assert [s for s, _ in panel.previews] == [0, 2, 4, 6, 8]
    assert [(e['step'], e['name'], e['new']) for e in t.history.events] == [(3, 'loss.lambda_adv', 0.5)]
    rows = t.history.rows
    assert all(r['gan_on'] == 1 and r['d_updated'] == 1 for r in rows) and rows[-1]['acc_fake'] > 0.5

    G2, D2 = dcgan()                                               # fresh networks of the same kind take the saved state
    r = load(tmp_path / 'run', G=G2, D=D2)
    assert r.nets['G'] is G2 and r.step_count == 5 and r.cfg.loss.lambda_adv == 0.5
    r.fit(3, progress=False)
    a, b = weights(t), weights(r)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert r.history.rows == rows

def test_the_resume_comparison_can_fail(tmp_path):
    "The control: resumed into networks of another width, the saved state does not fit and says so."
    G, D = dcgan()
    t = Trainer(config(), G=G, D=D); t.fit(2, progress=False); save_checkpoint(t, tmp_path)
    G2, D2 = dcgan(ch=8)
    try: load(tmp_path, G=G2, D=D2)
    except CheckpointError as e: assert "network 'G' does not match this architecture" in str(e)
    else: raise AssertionError('a state of other networks loaded')
