"The benchmark harnesses run (their --quick smoke mode writes nothing) and measure what they say they measure."
import sys
from pathlib import Path
import pytest
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'benchmarks'))
import _common, bench_panel, bench_train

@pytest.fixture(autouse=True)
def untouched_report(monkeypatch, tmp_path):
    "A quick run must not write BENCHMARKS.md; any write goes to a temp file this test can see."
    monkeypatch.setattr(_common, 'REPORT', tmp_path / 'BENCHMARKS.md')
    yield
    assert not (tmp_path / 'BENCHMARKS.md').exists()

def test_train_harness_compares_both_paths(one_thread):
    res = bench_train.main(['--quick', '--configs', 'ae32', 'liae-ud-64s'])
    by = {(r.config, r.variant): r for r in res}
    assert set(by) == {(c, v) for c in ('ae32', 'liae-ud-64s') for v in ('plain', 'optimised')}
    assert all(r.ms > 0 and r.flops > 0 and r.times for r in res)
    assert by['ae32', 'plain'].flops == by['ae32', 'optimised'].flops                       # same model, same work
    assert by['liae-ud-64s', 'optimised'].flops < 0.85 * by['liae-ud-64s', 'plain'].flops  # no src→dst in training
    assert by['liae-ud-64s', 'plain'].images == 2 * by['liae-ud-64s', 'plain'].batch      # src + dst faces per step

def test_train_harness_rejects_unknown_config():
    with pytest.raises(SystemExit, match='unknown config'): bench_train.main(['--quick', '--configs', 'nope'])

def test_panel_harness_runs(one_thread):
    r = bench_panel.main(['--quick'])
    assert r['spent']['refresh'] > 0 and 0 < r['own'] < 1   # the panel's own redraws were timed inside its runs
    assert r['extra'] > -0.5                                 # and a run with the panel is not impossibly faster

def test_write_section_replaces_only_its_own(tmp_path):
    f = tmp_path / 'B.md'
    _common.write_section('a', 'first A', f); _common.write_section('b', 'only B', f)
    _common.write_section('a', 'second A', f)
    doc = f.read_text()
    assert 'second A' in doc and 'first A' not in doc and 'only B' in doc and doc.index('second A') < doc.index('only B')

def test_pipeline_harness_runs_the_whole_path(one_thread):
    import bench_pipeline
    r = bench_pipeline.main(['--quick'])
    assert r['footage'] == 'synthetic' and r['merged'] == r['video_frames'] == r['dst']['frames'] > 0
    assert r['export_diff'] <= 1e-4 and all(s > 0 for s in r['seconds'].values())

def test_quality_harness_continues_one_state_with_and_without_the_gan(one_thread):
    import bench_quality
    r = bench_quality.main(['--quick'])
    m, w, n = r['metrics'], r['warm'], r['steps']
    assert [m[a]['step'] for a in ('start', 'no_gan', 'gan')] == [w, w + n, w + n]   # both arms go on from the warm state
    assert r['d_updates'] == {'no_gan': 0, 'gan': n} and 0 < r['d']['last']['d_real'] < 1
    assert m['start']['split'].startswith('held out') and all(k > 0 for k in m['start']['faces'].values())
    assert all(set(m[a]['measured']) == {'src→src', 'dst→dst', 'src→dst'} and m[a]['swap_over_src'] > 0 for a in m)
    r0 = bench_quality.main(['--quick', '--gan-power', '0'])   # the arms differ in the GAN only: without it, one run twice
    assert r0['metrics']['gan'] == r0['metrics']['no_gan'] and r0['d_updates']['gan'] == 0
