"""Output problems: a folder that cannot be written or a disk without room is found before the first training step;
a save that fails in the middle of a run stops it with one line naming the checkpoint that is still intact, and the
run resumes from there. Root ignores chmod, so the failures are simulated: a path under a regular file, sysfs, and
monkeypatched writes raising the errors a full disk or a lost permission raise."""
import errno, os, shutil, subprocess, sys
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
import dfl_gan.cli as cli
from dfl_gan.train import Trainer
from dfl_gan.checkpoints import find_checkpoints, read_checkpoint

@pytest.fixture(scope='module')
def faces(tmp_path_factory) -> Path:
    d, rng = tmp_path_factory.mktemp('faces'), np.random.default_rng(0)
    for i in range(8): Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f'{i}.png')
    return d

def train(faces, out, *extra) -> list[str]:
    return ['train', '--data', str(faces), '--out', str(out), '--steps', '6', '--model.resolution', '32', '--model.g_width', '32',
            '--model.d_width', '16', '--data.batch_size', '4', '--run.device', 'cpu', '--no-progress', *map(str, extra)]

def error_line(capsys, argv) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'Traceback' not in err, err
    return err.rstrip('\n')

@pytest.fixture
def no_training(monkeypatch):
    "Fail the test if any training step runs."
    monkeypatch.setattr(Trainer, 'step', lambda self: pytest.fail('training started'))

# --- found before training -----------------------------------------------------------------------------------------------

def test_an_output_path_under_a_regular_file(faces, tmp_path, capsys, no_training):
    (tmp_path / 'notes.txt').write_text('a file, not a folder')
    out = tmp_path / 'notes.txt' / 'run'
    assert error_line(capsys, train(faces, out)) == f'dfl-gan train: error: output folder {out} is not writable: Not a directory'

@pytest.mark.skipif(not Path('/sys/kernel').is_dir(), reason='needs sysfs')
def test_a_folder_the_system_refuses(faces, capsys, no_training):
    assert error_line(capsys, train(faces, '/sys/dfl_gan_run')) == 'dfl-gan train: error: output folder /sys/dfl_gan_run is not writable: Operation not permitted'

@pytest.mark.parametrize('code,why', [(errno.EACCES, 'Permission denied'), (errno.ENOSPC, 'No space left on device'),
                                      (errno.EROFS, 'Read-only file system')])
def test_a_failing_write_probe(faces, tmp_path, capsys, monkeypatch, no_training, code, why):
    def refuse(self, data): raise OSError(code, os.strerror(code), str(self))
    monkeypatch.setattr(Path, 'write_bytes', refuse)
    out = tmp_path / 'run'
    assert error_line(capsys, train(faces, out)) == f'dfl-gan train: error: output folder {out} is not writable: {why}'

def test_a_disk_without_room_for_the_checkpoints(faces, tmp_path, capsys, monkeypatch, no_training):
    monkeypatch.setattr(shutil, 'disk_usage', lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 2**20, 2**20))
    out = tmp_path / 'run'
    err = error_line(capsys, train(faces, out, '--run.keep_last', 2))
    assert err.startswith(f'dfl-gan train: error: output folder {out} has 1.0 MiB free; this run needs about ') and \
           err.endswith('run.keep_last=2 plus the one being written); free some space or lower --run.keep_last'), err
    assert not find_checkpoints(out)

def test_in_a_fresh_process(faces, tmp_path):
    (tmp_path / 'notes.txt').write_text('x')
    r = subprocess.run([str(Path(sys.executable).parent / 'dfl-gan'), *train(faces, tmp_path / 'notes.txt' / 'run')],
                       capture_output=True, text=True, timeout=600, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert (r.returncode, r.stderr) == (2, f'dfl-gan train: error: output folder {tmp_path}/notes.txt/run is not writable: Not a directory\n')

# --- a save that fails mid-run -----------------------------------------------------------------------------------------

def fail_save_from(monkeypatch, n:int, error:Exception):
    "Let the first `n` torch.save calls through; every later one writes a few bytes and raises `error`."
    real, calls = torch.save, []
    def save(obj, f, *a, **k):
        calls.append(1)
        if len(calls) <= n: return real(obj, f, *a, **k)
        f.write(b'PK\x03\x04 partial'); raise error
    monkeypatch.setattr(torch, 'save', save)

@pytest.mark.parametrize('error,why', [
    (OSError(errno.ENOSPC, 'No space left on device'), 'No space left on device'),
    (OSError(errno.EACCES, 'Permission denied'), 'Permission denied'),
    (RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598'), 'no space left on device: 0.0 MiB free'),
])
def test_a_save_failing_mid_run_keeps_the_previous_checkpoint(faces, tmp_path, capsys, monkeypatch, error, why):
    out = tmp_path / 'run'
    fail_save_from(monkeypatch, 1, error)             # the save at step 2 works, the one at step 4 fails
    if isinstance(error, RuntimeError):               # torch's report of a full disk: the folder has no space left
        real = shutil.disk_usage
        monkeypatch.setattr(shutil, 'disk_usage', lambda p: real(p) if len(find_checkpoints(out)) == 0 else shutil._ntuple_diskusage(10**9, 10**9, 0))
    err = error_line(capsys, train(faces, out, '--run.save_every', 2))
    assert err.startswith(f'dfl-gan train: error: {out}/checkpoint-00000004.pt: writing the checkpoint failed ({why}') and \
           err.endswith(f'; the previous checkpoint {out}/checkpoint-00000002.pt is intact'), err
    assert sorted(p.name for p in out.iterdir() if 'checkpoint' in p.name) == ['checkpoint-00000002.pt', 'checkpoint.pt']
    assert read_checkpoint(out / 'checkpoint.pt')['step'] == 2
    monkeypatch.undo()
    assert cli.main(['train', '--out', str(out), '--resume', '--no-progress']) == 0   # the space is back: carry on
    assert read_checkpoint(out / 'checkpoint.pt')['step'] == 6 and not list(out.glob('*.tmp'))

def test_outputs_after_the_final_checkpoint_failing(faces, tmp_path, capsys, monkeypatch):
    "The final checkpoint is written first: a disk that fills up while writing the preview loses nothing."
    out = tmp_path / 'run'
    def full(self, fp, *a, **k): raise OSError(errno.ENOSPC, 'No space left on device', str(fp))
    monkeypatch.setattr(Image.Image, 'save', full)
    assert error_line(capsys, train(faces, out)) == f'dfl-gan train: error: {out}/preview.png: No space left on device'
    assert read_checkpoint(out / 'checkpoint.pt')['step'] == 6
