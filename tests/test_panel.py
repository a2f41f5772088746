"The training panel without a front end: buttons are clicked, knobs typed into and runs stopped from Python."
import math, threading, time
import pytest
from dfl_gan.core import Config
from dfl_gan.tasks import AutoencoderTask
from dfl_gan.train import Trainer
from dfl_gan.checkpoints import load
from dfl_gan.widgets import TrainingPanel, KNOBS

class SlowTrainer(Trainer):
    "A trainer whose steps take at least `delay` seconds (held under its lock, like a long real step)."
    delay = 0.1
    def step(self):
        with self.lock:
            time.sleep(self.delay)
            return super().step()

class FailingTrainer(Trainer):
    "A trainer whose step raises once it reaches step `fail_at`."
    fail_at = 2
    def step(self):
        if self.step_count >= self.fail_at: raise RuntimeError('boom')
        return super().step()

@pytest.fixture
def panel():
    return TrainingPanel(Trainer(Config.tiny(**{'run.preview_every': 2})))

def wait_for(cond, timeout=60):
    end = time.time() + timeout
    while not cond():
        assert time.time() < end, 'timed out'
        time.sleep(0.01)

def test_step_button_trains_one_step(panel):
    t, plot0 = panel.trainer, panel.plot.value
    panel.step_btn.click()
    assert t.step_count == 1 and len(t.history) == 1
    assert '<span class="dfl-step-count">1</span>' in panel.counter.value and 'it/s' in panel.counter.value
    assert panel.plot.value != plot0 and panel.plot.value[:4] == b'\x89PNG'
    panel.step_btn.click()
    assert [r['step'] for r in t.history.rows] == [0, 1]

def test_run_n_runs_in_a_background_thread():
    p = TrainingPanel(SlowTrainer(Config.tiny()))
    p.n.value = 8
    t0 = time.time(); p.run_btn.click(); returned = time.time() - t0
    assert p.running and p._thread.is_alive() and p._thread is not threading.current_thread()
    assert returned < 0.5 and p.trainer.step_count < 8  # the click did not wait for the run
    assert p.step_btn.disabled and not p.stop_btn.disabled
    assert p.step() is None and 'a run is going' in p.log.value  # Step is refused meanwhile
    assert p.wait(120)
    assert p.trainer.step_count == 8 and len(p.trainer.history) == 8
    assert not p.step_btn.disabled and p.stop_btn.disabled and 'idle' in p.counter.value

def test_run_to_and_blocking_run(panel):
    panel.target.value = 3
    panel.run_to_btn.click(); assert panel.wait(120)
    assert panel.trainer.step_count == 3
    panel.run_to(5, block=True)
    assert panel.trainer.step_count == 5
    assert panel.run_to(5) is None and 'nothing to run' in panel.log.value

def test_stop_takes_effect_within_one_step():
    p = TrainingPanel(SlowTrainer(Config.tiny()))
    p.run(1000)
    wait_for(lambda: p.trainer.step_count >= 3)
    at_stop = p.trainer.step_count
    p.stop_btn.click()
    assert p.wait(30)
    assert at_stop <= p.trainer.step_count <= at_stop + 1
    assert len(p.trainer.history) == p.trainer.step_count

def test_pause_holds_and_resume_continues():
    p = TrainingPanel(SlowTrainer(Config.tiny()))
    p.run(1000)
    wait_for(lambda: p.trainer.step_count >= 2)
    p.pause_btn.click()
    assert p.paused and p.pause_btn.description == 'Resume'
    time.sleep(2 * SlowTrainer.delay + 0.3)  # the step in flight ends
    held = p.trainer.step_count
    time.sleep(0.5)
    assert p.trainer.step_count == held and p.running
    p.pause_btn.click()
    assert not p.paused
    wait_for(lambda: p.trainer.step_count >= held + 2)
    p.stop(); assert p.wait(30)
    assert not p.running and p.pause_btn.disabled

def test_knobs_change_the_trainer_and_land_in_the_history(panel):
    t = panel.trainer
    assert set(panel.knobs) == set(KNOBS)
    panel.step()
    new = {'loss.lambda_adv': 0.5, 'loss.lambda_rec': 2.0, 'optim.lr_g': 1e-3, 'optim.lr_d': 5e-4, 'optim.d_steps': 2,
           'optim.balance': 'adaptive', 'optim.balance_threshold': 0.7, 'run.preview_every': 3}
    for k, v in new.items(): panel.knobs[k].value = v
    for k, v in new.items(): assert t.cfg.get(k) == v, k
    assert [(e['step'], e['kind'], e['name'], e['new']) for e in t.history.events] == [(1, 'set', k, v) for k, v in new.items()]
    r = panel.step()
    assert math.isclose(float(r['lr_g']), 1e-3) and math.isclose(float(r['lr_d']), 5e-4)
    assert 'loss.lambda_adv 0.1 → 0.5' in panel.log.value and f'{len(new)} events' in panel.status.value

def test_a_knob_turned_during_a_run_lands_between_steps():
    p = TrainingPanel(SlowTrainer(Config.tiny()))
    p.run(1000)
    wait_for(lambda: p.trainer.step_count >= 2)
    p.knobs['optim.lr_g'].value = 1e-3
    p.stop(); assert p.wait(30)
    t = p.trainer
    (e,) = t.history.events
    lrs = t.history.column('lr_g')
    assert e['name'] == 'optim.lr_g' and 2 <= e['step'] <= t.step_count
    assert (lrs[:e['step']] == 2e-4).all() and (lrs[e['step']:] == 1e-3).all()

@pytest.mark.parametrize('name,bad', [('optim.lr_d', -1.0), ('optim.d_steps', 0), ('optim.balance_threshold', 0.3),
                                      ('loss.lambda_adv', -0.5)])
def test_a_bad_knob_value_shows_a_message_and_changes_nothing(panel, name, bad):
    t = panel.trainer
    before = t.cfg.get(name)
    panel.knobs[name].value = bad
    assert t.cfg.get(name) == before and panel.knobs[name].value == before
    assert t.history.events == []
    assert f'{name} = {bad!r} refused' in panel.log.value and f'{name} must be' in panel.log.value
    assert panel.set('optim.balance', 'sometimes') is False and t.cfg.optim.balance == 'fixed'

def test_a_setting_the_trainer_cannot_apply_is_refused_with_its_reason(tmp_path):
    p = TrainingPanel(Trainer(Config.tiny(**{'loss.vgg_weights': str(tmp_path / 'no-vgg.pth')})))
    p.knobs['loss.lambda_perc'].value = 0.1  # needs VGG16 weights that are not there
    assert p.trainer.cfg.loss.lambda_perc == 0 and p.knobs['loss.lambda_perc'].value == 0
    assert p.trainer.history.events == []
    assert 'loss.lambda_perc = 0.1 refused' in p.log.value and 'no-vgg.pth' in p.log.value

def test_a_change_made_from_code_shows_in_the_panel(panel):
    panel.trainer.set('loss.lambda_adv', 0.7)
    panel.refresh()
    assert panel.knobs['loss.lambda_adv'].value == 0.7 and 'loss.lambda_adv 0.1 → 0.7' in panel.log.value

def test_view_controls_redraw_the_plot(panel):
    panel.run(3, block=True)
    seen = {panel.plot.value}
    panel.smooth.value = 0.0; seen.add(panel.plot.value)
    panel.log_scale.value = True; seen.add(panel.plot.value)
    panel.window.value = 2; seen.add(panel.plot.value)
    assert len(seen) == 4
    assert panel._fig.axes[0].lines[0].get_xdata().min() == 1  # the last 2 steps of 0..2

class NaNTask(AutoencoderTask):
    "An autoencoder whose reconstruction loss is NaN in its 4th forward pass (the trainer's NaN guard skips that update)."
    calls = 0
    def forward(self, batch):
        out = super().forward(batch)
        self.calls += 1
        if self.calls == 4: out['terms']['rec'] = out['terms']['rec'] * float('nan')
        return out

def test_nan_and_inf_in_the_history_do_not_break_a_redraw():
    p = TrainingPanel(Trainer(task=NaNTask(Config.tiny())))
    with pytest.warns(UserWarning, match='non-finite'): p.run(6, block=True)
    t = p.trainer
    assert math.isnan(t.history.rows[3]['g_total']) and t.history.rows[3]['finite'] == 0
    t.history.append(dict(t.history.rows[-1], step=6, d_loss=float('inf'), finite=0.0))  # and an infinity
    before = p.plot.value
    p.smooth.value, p.log_scale.value = 0.9, True
    assert p.plot.value != before and p.plot.value[:4] == b'\x89PNG'
    assert 'non-finite loss at step(s) 3' in p.log.value and 'non-finite loss at step(s) 6' in p.log.value
    assert "step 3: nonfinite parts=[&#x27;G&#x27;] streak=1" in p.log.value

def test_previews_are_kept_and_browsed(panel):
    panel.run(6, block=True)
    assert [s for s, _ in panel.previews] == [0, 2, 4, 6]
    assert panel.preview_slider.max == 3 and panel.preview_slider.value == 3
    panel.preview_slider.value = 1
    assert panel.preview.value == panel.previews[1][1] and 'step <b>2</b> (2/4)' in panel.preview_label.value
    panel.run(2, block=True)  # moved back, the slider stays put
    assert len(panel.previews) == 5 and panel.preview_slider.value == 1
    panel.preview_slider.value = 4
    panel.run(2, block=True)  # on the newest, it follows
    assert panel.preview_slider.value == 5 and 'step <b>10</b>' in panel.preview_label.value
    assert panel.previews[0][1] != panel.previews[-1][1]

def test_the_oldest_previews_are_dropped():
    p = TrainingPanel(Trainer(Config.tiny(**{'run.preview_every': 1})), max_previews=3)
    p.run(4, block=True)
    assert [s for s, _ in p.previews] == [2, 3, 4] and p.preview_slider.max == 2

def test_save_checkpoint(panel, tmp_path):
    panel.run(2, block=True)
    panel.path.value = str(tmp_path / 'run')
    panel.save_btn.click()
    panel.run(1, block=True); panel.save_btn.click()
    assert sorted(p.name for p in (tmp_path / 'run').iterdir()) == ['checkpoint-00000002.pt', 'checkpoint-00000003.pt', 'checkpoint.pt']
    t2 = load(tmp_path / 'run')
    assert t2.step_count == 3 and t2.history.rows == panel.trainer.history.rows
    assert 'saved step 3' in panel.log.value
    (tmp_path / 'file').write_text('x')
    assert panel.save(tmp_path / 'file' / 'run') is None and 'failed' in panel.log.value

def test_a_failing_step_ends_the_run_with_a_message():
    p = TrainingPanel(FailingTrainer(Config.tiny()))
    p.run(10); assert p.wait(60)
    assert p.trainer.step_count == 2 and not p.running
    assert 'step 2 failed: RuntimeError: boom' in p.log.value
    with pytest.raises(RuntimeError, match='boom'): p.run(1, block=True)

def test_the_panel_displays_as_its_root_widget(panel, monkeypatch):
    shown = []
    monkeypatch.setattr('dfl_gan.widgets.display', shown.append)
    panel._ipython_display_()
    assert shown == [panel.root]

def test_every_panel_run_goes_through_fit(monkeypatch):
    "Step, Run N and Run to are all calls of the one training loop."
    calls, fit = [], Trainer.fit
    monkeypatch.setattr(Trainer, 'fit', lambda self, n, *a, **k: calls.append(n) or fit(self, n, *a, **k))
    p = TrainingPanel(Trainer(Config.tiny()))
    p.step(); p.run(2, block=True); p.run_to(5, block=True)
    p.run(1); assert p.wait(60)
    assert calls == [1, 2, 2, 1] and p.trainer.step_count == 6

def test_only_live_settings_can_be_knobs():
    with pytest.raises(Exception, match='model.resolution is not a live setting'):
        TrainingPanel(Trainer(Config.tiny()), knobs={'model.resolution': 'res'})

def test_a_plain_assignment_from_a_cell_shows_in_the_panel(panel):
    panel.trainer.cfg.optim.lr_d = 1e-3
    panel.refresh()
    assert panel.knobs['optim.lr_d'].value == 1e-3 and 'optim.lr_d 0.0002 → 0.001' in panel.log.value
