"The `dfl-gan` console script end to end, in fresh processes."
import json, subprocess, sys
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image

RECORD_KEYS = {'step', 'd_loss', 'g_adv', 'rec', 'perc', 'l2', 'r1', 'g_total', 'd_real', 'd_fake', 'acc_real',
               'acc_fake', 'rt', 'gn_g', 'gn_d', 'lr_g', 'lr_d', 'd_updated', 'gan_on'}

def dfl_gan(*args, check=True):
    exe = Path(sys.executable).parent / 'dfl-gan'  # the installed console script
    r = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=600)
    if check: assert r.returncode == 0, r.stderr[-3000:]
    return r

def check_run_dir(out: Path, steps: int):
    names = sorted(p.name for p in out.iterdir())
    numbered = [n for n in names if n.startswith('checkpoint-')]
    assert [n for n in names if n not in numbered] == ['checkpoint.pt', 'config.json', 'curves.png', 'history.jsonl',
                                                       'metrics.json', 'preview.png']
    assert numbered and numbered[-1] == f'checkpoint-{steps:08d}.pt', numbered
    assert (out / numbered[-1]).read_bytes() == (out / 'checkpoint.pt').read_bytes()
    prev = Image.open(out / 'preview.png'); prev.load()
    assert prev.mode == 'RGB' and prev.width >= 2 * 32 and prev.height > prev.width
    curves = Image.open(out / 'curves.png'); curves.load()
    assert curves.width > 400 and np.asarray(curves).std() > 10
    lines = [json.loads(l) for l in (out / 'history.jsonl').read_text().splitlines()]
    rows = [l for l in lines if 'event' not in l]
    assert [r['step'] for r in rows] == list(range(steps))
    for r in rows: assert RECORD_KEYS <= set(r), RECORD_KEYS - set(r)
    ck = torch.load(out / 'checkpoint.pt', weights_only=True)
    assert ck['step'] == steps and json.dumps(ck['history']['rows']) == json.dumps(rows)  # NaN-aware: NaN is a value here
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg == ck['config']
    return json.loads((out / 'metrics.json').read_text())

def test_demo_end_to_end(tmp_path):
    r = dfl_gan('demo', '--out', tmp_path / 'demo', '--steps', 12, '--no-progress')
    assert 'preview SSIM' in r.stdout
    m = check_run_dir(tmp_path / 'demo', 12)
    assert m['steps'] == 12 and 0 < m['ssim_end'] <= 1
    q = m['quality']   # on the 11 demo faces that training never sees
    assert (q['split'], q['faces']) == ('held out (data.holdout)', {'faces': 11})
    assert 0 < q['measured']['rebuilt']['ssim'] < 1 and q['measured']['rebuilt']['psnr'] > 5 and q['measured']['rebuilt']['sharpness'] > 0

def test_train_on_a_folder_and_resume(tmp_path):
    faces = tmp_path / 'faces'; faces.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6): Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(faces / f'{i}.png')
    out = tmp_path / 'run'
    dfl_gan('train', '--data', faces, '--out', out, '--steps', 4, '--model.resolution', 32, '--model.g_width', 32,
            '--model.d_width', 16, '--data.batch_size', 4, '--loss.lambda_adv', 0.2, '--no-progress')
    check_run_dir(out, 4)
    assert json.loads((out / 'config.json').read_text())['loss']['lambda_adv'] == 0.2
    dfl_gan('train', '--out', out, '--resume', '--steps', 7, '--no-progress')
    check_run_dir(out, 7)
    dfl_gan('preview', '--model', out / 'checkpoint.pt', '--out', tmp_path / 'p.png')
    assert Image.open(tmp_path / 'p.png').size[0] == 2 * 32

@pytest.mark.parametrize('args,expected', [
    (['train', '--out', '{tmp}', '--optim.lr_g', '-3'], 'optim.lr_g must be >= 0'),
    (['train', '--out', '{tmp}', '--model.resolution', '40'], 'model.resolution must be 4·2^k between 32 and 512'),
    (['train', '--out', '{tmp}', '--src', '{tmp}', '--dst', '{tmp}', '--model.resolution', '48'], "model.resolution must be a multiple of 32 for SAEHD 'liae-ud'"),
    (['train', '--out', '{tmp}', '--data', '{tmp}/missing'], 'missing'),
    (['preview', '--model', '{tmp}/nothing.pt', '--out', '{tmp}/x.png'], 'nothing.pt'),
])
def test_bad_arguments_give_one_clear_line(tmp_path, args, expected):
    r = dfl_gan(*[a.format(tmp=tmp_path) for a in args], check=False)
    assert r.returncode == 2, r.stderr
    assert expected in r.stderr and 'Traceback' not in r.stderr, r.stderr

def test_help_documents_every_setting():
    r = dfl_gan('train', '--help')
    from dfl_gan.core import Config
    for name in Config.fields(): assert f'--{name}' in r.stdout, name
