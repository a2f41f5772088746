"""The panel's foreground run (what Colab gets) and the notebook's stop button: a KeyboardInterrupt (SIGINT, which is
what Jupyter's interrupt sends the kernel) during a run in the cell ends it after the current step, saves a
checkpoint, and that checkpoint resumes exactly."""
import os, signal, threading, time
import torch
from dfl_gan.core import Config
from dfl_gan.train import Trainer
from dfl_gan.checkpoints import load, rng_state, set_rng_state
from dfl_gan.widgets import TrainingPanel

def tiny() -> Config: return Config.tiny(**{'run.deterministic': True, 'run.device': 'cpu', 'run.preview_every': 1000})

def interrupt_at(trainer, step:int) -> dict:
    "From another thread: SIGINT to this process once `trainer` has reached `step`; records the step it was sent at."
    sent = {}
    def watch():
        while trainer.step_count < step: time.sleep(0.001)
        sent['step'] = trainer.step_count
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=watch, daemon=True).start()
    return sent

def same_weights(a:Trainer, b:Trainer) -> bool:
    return all(torch.equal(x, y) for k in a.nets for x, y in zip(a.nets[k].state_dict().values(), b.nets[k].state_dict().values()))

def test_interrupt_stops_after_the_step_and_saves(tmp_path):
    t = Trainer(tiny())
    panel = TrainingPanel(t, mode='foreground', run_dir=tmp_path / 'run')
    sent = interrupt_at(t, 3)
    panel.run(10_000)                                           # blocks: the foreground run
    assert panel.interrupted and not panel.running
    assert sent['step'] <= t.step_count <= sent['step'] + 1     # the step under way finishes, no other starts
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # the handler is put back
    assert any(f"interrupted: stopped after step {t.step_count}, saved to" in m for m, _ in panel.messages)
    resumed = load(tmp_path / 'run')
    assert resumed.step_count == t.step_count and same_weights(resumed, t)
    shared = rng_state()   # one process, one global generator: both go on from the checkpoint's random state
    t.fit(3, progress=False); set_rng_state(shared); resumed.fit(3, progress=False)
    assert same_weights(resumed, t)                             # exactly: the same next steps

def test_second_interrupt_raises():
    "A second interrupt during the same run is a plain KeyboardInterrupt: a hung step can still be broken out of."
    t = Trainer(tiny())
    panel = TrainingPanel(t, mode='foreground', run_dir=None)
    panel._wait_go = lambda: (os.kill(os.getpid(), signal.SIGINT), True)[1]   # every step is interrupted
    try: panel.run(50, block=True)
    except KeyboardInterrupt: pass
    else: raise AssertionError('the second interrupt did not raise')
    assert t.step_count <= 2
