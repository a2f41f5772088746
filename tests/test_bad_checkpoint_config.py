"""Bad checkpoints and bad configs: each is refused with one line that names the file, the network or the field and
what was expected; through the CLI that line is the whole of stderr and the exit status is 2. A checkpoint that would
run code when unpickled is refused without running it."""
import json, os, pickle, subprocess, sys, warnings
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from dfl_gan.core import Config, ConfigError
from dfl_gan.train import Trainer, StateError
from dfl_gan.checkpoints import FORMAT, CheckpointError, save_checkpoint, load
from dfl_gan import cli


@pytest.fixture(scope='module')
def faces(tmp_path_factory) -> Path:
    "A folder of 8 small face images."
    d, rng = tmp_path_factory.mktemp('faces'), np.random.default_rng(0)
    for i in range(8): Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f'{i}.png')
    return d

def folder_config(faces:Path) -> Config:
    return Config.tiny(**{'model.g_width': 32, 'data.batch_size': 4, 'data.path': str(faces), 'run.device': 'cpu'})

@pytest.fixture(scope='module')
def good(tmp_path_factory, faces) -> Path:
    "A run folder with one valid checkpoint (step 2) of a run on `faces`."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    t = Trainer(folder_config(faces)); t.fit(2, progress=False)
    d = tmp_path_factory.mktemp('good'); save_checkpoint(t, d)
    torch.set_num_threads(n)
    return d

def state(good) -> dict: return torch.load(good / 'checkpoint.pt', weights_only=True)

def cli_error(capsys, *args) -> str:
    "The one stderr line of a `dfl-gan` command that must fail with status 2."
    assert cli.main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith(f'dfl-gan {args[0]}: error: ') and 'Traceback' not in err, err
    return err

class Payload:
    "Unpickling this runs a shell command."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))

# --- checkpoints ------------------------------------------------------------------------------------------------------

def bad_checkpoints(good:Path, d:Path) -> dict:
    "name → (file, what the error must say); every file is written into `d`."
    data = (good / 'checkpoint.pt').read_bytes()
    files = {}
    def put(name, content, expected):
        (d / name).write_bytes(content) if isinstance(content, bytes) else torch.save(content, d / name)
        files[name] = (d / name, expected)
    ck = state(good); ck['config']['model']['g_width'] = 64
    put('other-architecture.pt', ck, "network 'G' does not match this architecture")
    put('pickled-object.pt', {'format': FORMAT, 'step': Payload(d / 'marker')},
        'refused by the safe loader: Trying to load unsupported GLOBAL')
    legacy = d / 'legacy.tmp'; torch.save({'step': Payload(d / 'marker')}, legacy, _use_new_zipfile_serialization=False)
    put('pickled-object-legacy-format.pt', legacy.read_bytes(), 'refused by the safe loader: Trying to load unsupported GLOBAL')
    put('raw-pickle.pt', pickle.dumps(Payload(d / 'marker')), 'refused by the safe loader')
    for n in (1, 100, len(data) // 2, len(data) - 1):
        put(f'truncated-{n}.pt', data[:n], 'not a loadable dfl_gan checkpoint')
    put('empty.pt', b'', 'empty file, not a checkpoint')
    put('plain-weights.pt', {'G': torch.zeros(3)}, "not a dfl_gan checkpoint (expected format 'dfl_gan-checkpoint-2')")
    put('a-tensor.pt', torch.zeros(3), "not a dfl_gan checkpoint (expected format 'dfl_gan-checkpoint-2')")
    put('format-1.pt', dict(state(good), format='dfl_gan-checkpoint-1'), "a checkpoint of dfl_gan 0.1 (format 'dfl_gan-checkpoint-1'), which this version cannot continue")
    put('a-png.pt', b'\x89PNG\r\n\x1a\n' + bytes(64), 'not a loadable dfl_gan checkpoint')
    ck = state(good); del ck['nets']
    put('no-nets.pt', ck, "incomplete checkpoint ('nets' is missing or not a dict)")
    ck = state(good); ck['config']['loss']['lambda_adv'] = -1
    put('bad-config-inside.pt', ck, 'the config it carries is invalid (loss.lambda_adv must be >= 0')
    ck = state(good); ck['optim']['D'] = ck['optim']['G']
    put('mismatched-optimiser.pt', ck, 'its state does not fit this model (ValueError')
    return files

def test_every_bad_checkpoint_is_refused_with_its_name(good, tmp_path, capsys):
    for name, (path, expected) in bad_checkpoints(good, tmp_path).items():
        with pytest.raises(CheckpointError) as e: load(path)
        assert str(e.value).startswith(f'{path}: ') and expected in str(e.value), (name, str(e.value))
        err = cli_error(capsys, 'preview', '--model', path, '--out', tmp_path / 'p.png')
        assert f'{path}: ' in err and expected in err, (name, err)
    assert not (tmp_path / 'marker').exists() and not (tmp_path / 'p.png').exists()

def test_resume_skips_a_bad_newest_checkpoint_and_names_it(good, tmp_path):
    run = tmp_path / 'run'; run.mkdir()
    (run / 'checkpoint-00000002.pt').write_bytes((good / 'checkpoint-00000002.pt').read_bytes())
    torch.save({'format': FORMAT, 'step': Payload(tmp_path / 'marker')}, run / 'checkpoint-00000009.pt')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always'); t = load(run)
    assert t.step_count == 2 and not (tmp_path / 'marker').exists()
    assert [str(x.message) for x in w] == [f'skipping {run}/checkpoint-00000009.pt: not a loadable dfl_gan checkpoint (refused by the '
                                           'safe loader: Trying to load unsupported GLOBAL posix.system whose module posix is blocked.)']

def test_train_resume_with_no_valid_checkpoint_names_the_folder(good, tmp_path, capsys):
    run = tmp_path / 'run'; run.mkdir()
    (run / 'checkpoint-00000004.pt').write_bytes(b'')
    assert cli.main(['train', '--out', str(run), '--resume']) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f'dfl-gan train: warning: skipping {run}/checkpoint-00000004.pt: empty file, not a checkpoint',
                   f'dfl-gan train: error: {run}: no valid checkpoint to resume from ({run}/checkpoint-00000004.pt: empty file, not a checkpoint)'], err
    (run / 'checkpoint-00000004.pt').unlink()
    assert 'no checkpoint-NNNNNNNN.pt or checkpoint.pt in it' in cli_error(capsys, 'train', '--out', run, '--resume')

def test_a_checkpoint_of_another_architecture(good, faces, tmp_path, capsys):
    run = tmp_path / 'run'; run.mkdir()
    ck = state(good); ck['config']['model']['g_width'] = 64; torch.save(ck, run / 'checkpoint.pt')
    with pytest.raises(CheckpointError, match="checkpoint.pt: network 'G' does not match this architecture"): load(run)
    assert "checkpoint.pt: network 'G' does not match this architecture" in cli_error(capsys, 'train', '--out', run, '--resume')
    ae = Trainer(folder_config(faces))             # and loading a face-swap state into an autoencoder trainer
    with pytest.raises(StateError, match="network 'G' does not match"):
        ae.load_state_dict(dict(state(good), nets=dict(state(good)['nets'], G={'encoder.weight': torch.zeros(1)})))
    err = cli_error(capsys, 'train', '--out', good, '--resume', '--model.g_width', 64)
    assert 'model.g_width cannot change when resuming (the checkpoint has 32, got 64)' in err, err

def test_in_a_new_process_the_payload_never_runs(good, tmp_path):
    bad = tmp_path / 'evil.pt'
    torch.save({'format': FORMAT, 'step': Payload(tmp_path / 'marker')}, bad)
    r = subprocess.run([str(Path(sys.executable).parent / 'dfl-gan'), 'preview', '--model', str(bad), '--out', str(tmp_path / 'p.png')],
                       capture_output=True, text=True, timeout=600, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 2 and r.stderr.startswith(f'dfl-gan preview: error: {bad}: not a loadable dfl_gan checkpoint (refused'), r.stderr
    assert r.stderr.count('\n') == 1 and not (tmp_path / 'marker').exists()

# --- configs ------------------------------------------------------------------------------------------------------------

BAD_CONFIGS = [  # (dict, what the error must say)
    ({'run': {'steps': '10'}}, "run.steps must be of type int, got '10' (str)"),
    ({'optim': {'lr_g': True}}, 'optim.lr_g must be of type float, got True (bool)'),
    ({'data': {'batch_size': None}}, 'data.batch_size must be of type int, got None (NoneType)'),
    ({'data': {'batch_size': 2.5}}, 'data.batch_size must be of type int, got 2.5 (float)'),
    ({'optim': {'lr_g': -0.1}}, 'optim.lr_g must be >= 0, got -0.1'),
    ({'run': {'keep_last': 0}}, 'run.keep_last must be >= 1, got 0'),
    ({'loss': {'label_smoothing': 0.9}}, 'loss.label_smoothing must be <= 0.5, got 0.9'),
    ({'model': {'resolution': 1024}}, 'model.resolution must be <= 640, got 1024'),
    ({'model': {'resolution': 40}}, 'model.resolution must be 4·2^k between 32 and 512 (one of [32, 64, 128, 256, 512]), got 40'),
    ({'model': {'mode': 'swap', 'archi': 'liae-ud', 'resolution': 48, 'discriminator': 'unet'}}, "model.resolution must be a multiple of 32 for SAEHD 'liae-ud', got 48"),
    ({'model': {'upsample': 'bicubic'}}, "model.upsample must be one of ['pixel_shuffle', 'transpose', 'nearest'], got 'bicubic'"),
    ({'model': {'archi': 'dfx'}}, "model.archi must be 'df' or 'liae'"),
    ({'loss': {'perc_layers': [1, 2]}}, 'loss.perc_layers must be of type list[str], got [1, 2]'),
    ({'loss': {'perc_layers': ['relu1_2']}}, 'loss.perc_layer_weights needs one weight per layer in loss.perc_layers (1), got 4'),
    ({'optim': {'lr': 0.001}}, "unknown key(s) ['optim.lr']; allowed: ["),
    ({'trainer': {'steps': 5}}, "unknown config section(s) ['trainer']; allowed: ['model', 'loss', 'optim', 'data', 'run']"),
    ({'run': 5}, 'run must be a mapping, got int'),
    ([1, 2], 'a config must be a mapping, got list'),
    ({'optim': {'weight_decay': float('nan')}}, 'optim.weight_decay must be a finite number'),
]

@pytest.mark.parametrize('d,expected', BAD_CONFIGS)
def test_config_from_dict_names_the_field(d, expected):
    with pytest.raises(ConfigError) as e: Config.from_dict(d)
    assert expected in str(e.value) and '\n' not in str(e.value), str(e.value)

@pytest.mark.parametrize('d,expected', [c for c in BAD_CONFIGS if 'finite' not in c[1]])  # JSON NaN: its own test
def test_a_config_file_names_the_file_and_the_field(d, expected, tmp_path, capsys):
    f = tmp_path / 'bad.json'; f.write_text(json.dumps(d))
    err = cli_error(capsys, 'train', '--out', tmp_path / 'run', '--config', f)
    assert err.startswith(f'dfl-gan train: error: config file {f}: {expected}'), err
    assert not (tmp_path / 'run' / 'checkpoint.pt').exists()

BAD_FILES = [  # (file content or None for a folder, what the error must say after the file name)
    ('{"run": ', ' is not valid JSON: Expecting value: line 1 column 9 (char 8)'),
    ('{"optim": {"lr_g": NaN}}', ' is not valid JSON: NaN is not a number a setting can take'),
    ('{"optim": {"weight_decay": Infinity}}', ' is not valid JSON: Infinity is not a number a setting can take'),
    (b'\xff\xfe\x00garbage', ' is not valid JSON: not UTF-8 text'),
    ('', ' is not valid JSON: Expecting value: line 1 column 1 (char 0)'),
    (None, ': Is a directory'),
]

@pytest.mark.parametrize('content,expected', BAD_FILES)
def test_an_unreadable_config_file(content, expected, tmp_path, capsys):
    f = tmp_path / 'c.json'
    if content is None: f.mkdir()
    else: f.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert cli_error(capsys, 'train', '--out', tmp_path / 'run', '--config', f) == f'dfl-gan train: error: config file {f}{expected}\n'

def test_a_missing_config_file(tmp_path, capsys):
    err = cli_error(capsys, 'train', '--out', tmp_path / 'run', '--config', tmp_path / 'nope.json')
    assert err == f'dfl-gan train: error: config file {tmp_path}/nope.json: No such file or directory\n'

@pytest.mark.parametrize('flag,value,expected', [('--optim.lr_g', 'nan', "expected a finite number, got 'nan'"),
                                                 ('--optim.lr_g', 'fast', "expected a number, got 'fast'"),
                                                 ('--data.flip', 'maybe', "expected true or false, got 'maybe'"),
                                                 ('--model.upsample', 'bicubic', "invalid choice: 'bicubic'")])
def test_a_bad_flag_is_a_usage_error(flag, value, expected, tmp_path, capsys):
    with pytest.raises(SystemExit) as e: cli.main(['train', '--out', str(tmp_path), flag, value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f'error: argument {flag}: {expected}' in err and 'Traceback' not in err, err

def test_config_with_resume_is_refused(good, tmp_path, capsys):
    f = tmp_path / 'c.json'; f.write_text('{}')
    assert '--config cannot be used with --resume' in cli_error(capsys, 'train', '--out', good, '--resume', '--config', f)

def test_a_config_error_in_a_fresh_process(tmp_path):
    f = tmp_path / 'bad.json'; f.write_text('{"optim": {"lr_d": -1}}')
    r = subprocess.run([str(Path(sys.executable).parent / 'dfl-gan'), 'train', '--out', str(tmp_path / 'run'), '--config', str(f)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert (r.returncode, r.stderr) == (2, f'dfl-gan train: error: config file {f}: optim.lr_d must be >= 0, got -1\n')
