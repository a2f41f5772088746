"""The tutorials as a user opens them, in a real browser: every tutorial that shows a panel is opened in two stacks and
run top to bottom, then its panels are clicked.

- `lab`: JupyterLab 4 with ipywidgets 8 (this venv); the panel trains in a background thread (its default there).
- `classic`: classic Notebook 6.5 with ipywidgets 7.7.1, ipykernel 6.17 and IPython 7.34 (Google Colab's kernel-side
  stack, the nearest offline stand-in) from the `.venv-colab` venv that `.ci/run` builds; the panel trains in the
  foreground (`DFL_GAN_PANEL_MODE=foreground`, what Colab gets), handling clicks between steps.

After Run All: Step, Run, Pause, Resume, Stop (a foreground run stops within a step, a paused one at once), a knob
whose change the history records, the plots redrawn; in the face-swap tutorial also the merge panel (a setting
redraws the frame, Merge all frames fills its progress bar). Headless Debian Chromium driven by Playwright; never runs
`playwright install`. Without Chromium (or the Colab venv) the test is skipped, except under CI (`CI=true`), where
that is a failure. Screenshots go to `test-artifacts/<stack>-<tutorial>.png` at the repository root."""
import os, re, secrets, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = '/usr/bin/chromium'
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
        '--disable-sync', '--no-first-run']
ARTIFACTS = ROOT / 'test-artifacts'
COLAB_PYTHON = ROOT / '.venv-colab' / 'bin' / 'python'
TUTORIALS = ('01_spec_walkthrough', '02_tuning_the_balance', '03_face_swap_end_to_end')
T = 600_000  # ms: generous, a cold kernel imports torch and runs a whole tutorial on two cores shared with other work

def need(path:Path, how:str):
    if path.exists(): return
    if os.environ.get('CI', '').lower() == 'true': pytest.fail(f'{path} is missing in CI: {how}')
    pytest.skip(f'{path} is missing ({how}); with CI=true this is a failure')

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def server_command(stack:str, port:int, token:str, root:Path, tmp:Path) -> list:
    common = ['--no-browser', '--allow-root']
    if stack == 'lab':
        (tmp / 'settings' / '@jupyterlab' / 'notebook-extension').mkdir(parents=True)
        (tmp / 'settings' / '@jupyterlab' / 'notebook-extension' / 'tracker.jupyterlab-settings').write_text(
            '{"autoStartDefaultKernel": true, "windowingMode": "none"}')   # every cell in the page, not only the visible ones
        (tmp / 'settings' / '@jupyterlab' / 'apputils-extension').mkdir(parents=True)
        (tmp / 'settings' / '@jupyterlab' / 'apputils-extension' / 'notification.jupyterlab-settings').write_text('{"fetchNews": "false"}')
        return [sys.executable, '-m', 'jupyter', 'lab', *common, '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}',
                '--ServerApp.port_retries=0', '--ServerApp.terminals_enabled=False', '--LabApp.extension_manager=readonly',
                f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={root}', '--ServerApp.disable_check_xsrf=True',
                '--LabApp.news_url=None', f'--LabApp.workspaces_dir={tmp / "ws"}', f'--LabApp.user_settings_dir={tmp / "settings"}']
    return [str(COLAB_PYTHON), '-m', 'notebook', *common, '--NotebookApp.ip=127.0.0.1', f'--NotebookApp.port={port}',
            '--NotebookApp.port_retries=0', f'--NotebookApp.token={token}', f'--NotebookApp.notebook_dir={root}',
            '--NotebookApp.disable_check_xsrf=True', '--NotebookApp.terminals_enabled=False']

def wait_http(url:str, proc, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        assert proc.poll() is None, 'the notebook server exited early'
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200: return
        except OSError: time.sleep(0.5)
    raise TimeoutError(f'the notebook server did not answer at {url}')

def stop_group(proc):
    "End the server's own process group (the server and its kernel), which this test started."
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try: os.killpg(proc.pid, sig)
        except ProcessLookupError: return
        try: proc.wait(wait); return
        except subprocess.TimeoutExpired: pass

@pytest.fixture
def server(request, tmp_path):
    "A notebook server of `stack` on 127.0.0.1 (free port, token, temp dirs) serving a copy of the tutorials."
    stack = request.param
    need(Path(CHROMIUM), 'apt-get install -y chromium')
    if stack == 'classic': need(COLAB_PYTHON, '.ci/run builds .venv-colab')
    root, port, token = tmp_path / 'root', free_port(), secrets.token_hex(16)
    shutil.copytree(ROOT / 'nbs' / 'tutorials', root)   # the real tutorials; their runs write into the copy
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / 'runtime'), JUPYTER_CONFIG_DIR=str(tmp_path / 'config'),
               JUPYTER_PLATFORM_DIRS='1', OMP_NUM_THREADS='2',
               DFL_GAN_PANEL_MODE='foreground' if stack == 'classic' else 'thread')
    log = open(tmp_path / 'server.log', 'w')
    proc = subprocess.Popen(server_command(stack, port, token, root, tmp_path), cwd=root, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f'http://127.0.0.1:{port}'
    try:
        wait_http(f'{base}/api/status?token={token}', proc)
        yield dict(stack=stack, base=base, token=token, root=root, log=tmp_path / 'server.log')
    finally:
        stop_group(proc)
        log.close()

# --- the two front ends -------------------------------------------------------------------------------------------

def open_and_run_all(page, srv, name:str):
    "Open tutorial `name`, run all its cells, and wait until every code cell has run; fail on an error output."
    if srv['stack'] == 'lab':
        page.goto(f"{srv['base']}/lab/tree/{name}.ipynb?token={srv['token']}", timeout=T, wait_until='domcontentloaded')
        page.wait_for_selector('.jp-Notebook .jp-Cell', timeout=T)
        page.locator('.jp-StatusBar-TextItem', has_text=re.compile(r'^(?!No Kernel).*\| Idle$')).first.wait_for(timeout=T)
        page.locator('.jp-Notebook .jp-Cell .jp-InputPrompt').first.click()
        page.locator('.lm-MenuBar-itemLabel', has_text='Run').first.click()
        page.locator('.lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel', has_text='Run All Cells').first.click(timeout=T)
        prompts, error = '.jp-Notebook .jp-CodeCell .jp-InputPrompt', '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]:has-text("Traceback")'
    else:
        # Once a fresh kernel answers the `comm_info` request widgetsnbextension 3.x sends on connect, it re-renders every
        # widget output on the page, and that hides them (removing the old view blanks the model_id the re-render reads).
        # Run All sent before the request runs ahead of it on the shell channel: so wait for the reply first.
        restored = []
        page.on('websocket', lambda ws: ws.on('framereceived', lambda f: isinstance(f, str) and '"comm_info_reply"' in f and restored.append(f)))
        page.goto(f"{srv['base']}/notebooks/{name}.ipynb?token={srv['token']}", timeout=T, wait_until='domcontentloaded')
        page.wait_for_function('() => window.Jupyter && Jupyter.notebook && Jupyter.notebook.kernel && Jupyter.notebook.kernel.is_connected()', timeout=T)
        end = time.time() + T / 1000
        while not restored:
            assert time.time() < end, 'the widget manager never restored the kernel widgets (no comm_info_reply)'
            page.wait_for_timeout(100)   # lets Playwright deliver the page's events
        page.evaluate('() => Jupyter.notebook.execute_all_cells()')
        prompts, error = '.code_cell .input_prompt', '.output_error'
    page.wait_for_function('''(sel) => { const ps = [...document.querySelectorAll(sel)].map(e => e.innerText.trim());
                                         return ps.length && ps.every(p => /\\[\\d+\\]/.test(p)); }''', arg=prompts, timeout=T)
    errors = page.locator(error)
    assert errors.count() == 0, errors.first.inner_text()[-3000:]
    assert page.locator('text=Loading widget').count() == 0 and page.locator('text=Error displaying widget').count() == 0
    assert page.locator('.dfl-panel').count(), 'Run All showed no panel: the widget outputs were not rendered'

def text(scope, sel) -> str: return scope.locator(sel).first.inner_text()

def wait_text(scope, sel, pred, what, timeout=T):
    "Wait until `pred(text of sel)` holds; fail with what the page shows."
    end = time.time() + timeout / 1000
    while time.time() < end:
        loc = scope.locator(sel)
        if loc.count() and pred(loc.first.inner_text()): return loc.first.inner_text()
        time.sleep(0.2)
    raise AssertionError(f'timed out waiting for {what}; {sel} shows {text(scope, sel) if scope.locator(sel).count() else "nothing"!r}')

def new_src(scope, sel, old, what, timeout=T) -> str:
    "Wait until the image `sel` shows a new picture (a new src) and return it."
    end = time.time() + timeout / 1000
    while time.time() < end:
        src = scope.locator(sel).first.get_attribute('src')
        if src and src != old: return src
        time.sleep(0.2)
    raise AssertionError(f'timed out waiting for {what}: {sel} still shows the old picture')

def enter(scope, sel, value):
    box = scope.locator(f'{sel} input').first
    box.fill(str(value)); box.press('Enter')

def step_count(panel) -> int: return int(text(panel, '.dfl-step-count'))

def settled_count(panel, quiet:float=1.5) -> int:
    "The step count once it has not moved for `quiet` seconds (a step that was under way when Pause came finishes)."
    k, since = step_count(panel), time.time()
    while time.time() - since < quiet:
        time.sleep(0.2)
        if (now := step_count(panel)) != k: k, since = now, time.time()
    return k

# --- what a user does ---------------------------------------------------------------------------------------------

def drive_training_panel(panel, stack:str):
    "Step, Run, Pause, Resume, Stop, a knob: each checked in the panel's counter, plot, events and messages."
    panel.scroll_into_view_if_needed()
    k, plot = step_count(panel), panel.locator('img.dfl-plot').first.get_attribute('src')
    panel.locator('button.dfl-step').first.click()
    wait_text(panel, '.dfl-step-count', lambda s: int(s) == k + 1, 'the step after Step')
    plot = new_src(panel, 'img.dfl-plot', plot, 'the plot redrawn after Step')

    enter(panel, '.dfl-n', 100_000)
    panel.locator('button.dfl-run').first.click()
    wait_text(panel, '.dfl-counter', lambda s: 'running' in s and step_count(panel) >= k + 4, 'a few steps of Run')
    panel.locator('button.dfl-pause').first.click()
    wait_text(panel, '.dfl-counter', lambda s: 'paused' in s, 'Pause to hold the run')
    held = settled_count(panel); time.sleep(2)
    assert step_count(panel) == held, 'steps were trained while paused'
    panel.locator('button.dfl-pause').first.click()        # Resume
    wait_text(panel, '.dfl-counter', lambda s: 'running' in s and step_count(panel) > held, 'the run to go on after Resume')
    panel.locator('button.dfl-pause').first.click()        # pause again, then Stop: no further step
    wait_text(panel, '.dfl-counter', lambda s: 'paused' in s, 'the second Pause')
    held = settled_count(panel)
    panel.locator('button.dfl-stop').first.click()
    wait_text(panel, '.dfl-counter', lambda s: 'idle' in s, f'Stop to end the paused {stack} run', 30_000)
    assert step_count(panel) == held, 'Stop of a paused run trained another step'
    plot = new_src(panel, 'img.dfl-plot', plot, 'the plot redrawn after the run')

    events = int(re.search(r'(\d+) event', text(panel, '.dfl-events')).group(1))
    box = panel.locator('.dfl-knob-loss-lambda_adv input').first
    new = round(float(box.input_value()) + 0.05, 2)
    enter(panel, '.dfl-knob-loss-lambda_adv', new)
    wait_text(panel, '.dfl-events', lambda s: s.startswith(f'{events + 1} event'), 'the knob change in the history')
    assert f'→ {new}' in text(panel, '.dfl-log-messages')
    new_src(panel, 'img.dfl-plot', plot, 'the plot redrawn with the change marked')

def drive_merge_panel(merge):
    "A setting redraws the merged frame; Merge all frames fills the progress bar and says what it wrote."
    merge.scroll_into_view_if_needed()
    image = merge.locator('img.dfl-merge-image').first.get_attribute('src')
    merge.locator('.dfl-merge-color_transfer_mode select').first.select_option('lct')
    new_src(merge, 'img.dfl-merge-image', image, 'the merged frame redrawn after a setting')
    merge.locator('button.dfl-merge-apply').first.click()
    wait_text(merge, '.dfl-merge-status', lambda s: 'frames written' in s, 'Merge all frames to finish')

@pytest.mark.parametrize('server', ['lab', 'classic'], indirect=True)
@pytest.mark.parametrize('name', TUTORIALS)
def test_tutorial_in_a_browser(server, name):
    from playwright.sync_api import sync_playwright
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"{server['stack']}-{name}.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport=dict(width=1500, height=1700))
        try:
            open_and_run_all(page, server, name)
            panel = page.locator('.dfl-panel').first
            drive_training_panel(panel, server['stack'])
            if page.locator('.dfl-merge-panel').count(): drive_merge_panel(page.locator('.dfl-merge-panel').first)
            panel.scroll_into_view_if_needed(); panel.screenshot(path=shot)
        except BaseException:
            page.screenshot(path=shot.with_name(shot.stem + '-failure.png'), full_page=True)
            print(Path(server['log']).read_text()[-5000:])
            raise
        finally: browser.close()
