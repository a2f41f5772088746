"""The training panel end to end in a real browser: JupyterLab in a subprocess, Debian's Chromium driven by Playwright.

Needs `/usr/bin/chromium` (`apt-get install -y chromium`) and the `playwright` package (dev extra); never runs
`playwright install`. Without Chromium the test is skipped, except under CI (`CI=true`), where that is a failure.
Screenshots go to `test-artifacts/` at the repository root."""
import json, os, re, secrets, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import nbformat, pytest

CHROMIUM = '/usr/bin/chromium'
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
        '--disable-sync', '--no-first-run']
ARTIFACTS = Path(__file__).resolve().parents[1] / 'test-artifacts'
T = 120_000  # ms: generous, a cold kernel imports torch and builds the trainer

SETUP = """\
from dfl_gan.all import *
t = Trainer(Config.tiny(**{'run.preview_every': 5}))
panel = TrainingPanel(t, plot_every=0.5)
panel"""
REPORT = "print('EVENTS', len(t.history.events), 'STEPS', t.step_count, 'LAMBDA_ADV', t.cfg.loss.lambda_adv)"

def need_chromium():
    if Path(CHROMIUM).exists(): return
    if os.environ.get('CI', '').lower() == 'true': pytest.fail(f'{CHROMIUM} is missing in CI: apt-get install -y chromium')
    pytest.skip(f'{CHROMIUM} not installed (apt-get install -y chromium); with CI=true this is a failure')

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def write_notebook(path: Path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell(REPORT)])
    nb.metadata['kernelspec'] = dict(name='python3', display_name='Python 3 (ipykernel)', language='python')
    nbformat.write(nb, path)

def write_lab_settings(d: Path):
    "Start the notebook's kernel without asking, and do not ask about news: no dialog in the way."
    for name, value in {'notebook-extension/tracker': dict(autoStartDefaultKernel=True),
                        'apputils-extension/notification': dict(fetchNews='false')}.items():
        f = d / '@jupyterlab' / f'{name}.jupyterlab-settings'
        f.parent.mkdir(parents=True, exist_ok=True); f.write_text(json.dumps(value))

def wait_http(url: str, proc, timeout=90):
    end = time.time() + timeout
    while time.time() < end:
        assert proc.poll() is None, 'jupyter lab exited early'
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200: return
        except OSError: time.sleep(0.5)
    raise TimeoutError(f'jupyter lab did not answer at {url}')

def stop_group(proc):
    "End the server's own process group (the server and its kernel), which this test started."
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try: os.killpg(proc.pid, sig)
        except ProcessLookupError: return
        try: proc.wait(wait); return
        except subprocess.TimeoutExpired: pass

@pytest.fixture
def lab(tmp_path):
    "A JupyterLab server on 127.0.0.1 (free port, token, tmp dirs) serving a notebook that shows the panel."
    need_chromium()
    root, port, token = tmp_path / 'root', free_port(), secrets.token_hex(16)
    root.mkdir(); write_notebook(root / 'panel.ipynb'); write_lab_settings(tmp_path / 'settings')
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / 'runtime'), JUPYTER_CONFIG_DIR=str(tmp_path / 'config'),
               JUPYTER_PLATFORM_DIRS='1', OMP_NUM_THREADS='2')
    log = open(tmp_path / 'lab.log', 'w')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'jupyter', 'lab', '--no-browser', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}',
         '--ServerApp.port_retries=0', '--allow-root', '--ServerApp.terminals_enabled=False',
         '--LabApp.extension_manager=readonly', f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={root}',
         '--ServerApp.disable_check_xsrf=True', '--LabApp.news_url=None', f'--LabApp.workspaces_dir={tmp_path / "ws"}',
         f'--LabApp.user_settings_dir={tmp_path / "settings"}'],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f'http://127.0.0.1:{port}'
    try:
        wait_http(f'{base}/api/status?token={token}', proc)
        yield dict(url=f'{base}/lab/tree/panel.ipynb?token={token}', root=root, log=tmp_path / 'lab.log')
    finally:
        stop_group(proc)
        log.close()

def text(page, sel) -> str: return page.locator(sel).first.inner_text()

def wait_text(page, sel, pred, what, timeout=T):
    "Wait until `pred(text of sel)` holds; fail with what the page shows."
    end = time.time() + timeout / 1000
    while time.time() < end:
        loc = page.locator(sel)
        if loc.count() and pred(loc.first.inner_text()): return loc.first.inner_text()
        time.sleep(0.2)
    raise AssertionError(f'timed out waiting for {what}; {sel} shows {text(page, sel) if page.locator(sel).count() else "nothing"!r}')

def new_src(page, sel, old, what, timeout=T) -> str:
    "Wait until the image `sel` shows a new picture (a new blob URL) and return it."
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    try: page.wait_for_function('([sel, old]) => { const e = document.querySelector(sel); return e && e.src && e.src !== old; }',
                                arg=[sel, old], timeout=timeout)
    except PlaywrightTimeout: raise AssertionError(f'timed out waiting for {what}: {sel} still shows {old}') from None
    return page.get_attribute(sel, 'src')

def kernel_idle(page, timeout=T):
    "Wait until the status bar says the notebook's kernel is connected and idle (not 'No Kernel | Initializing')."
    page.locator('.jp-StatusBar-TextItem', has_text=re.compile(r'^(?!No Kernel).*\| Idle$')).first.wait_for(timeout=timeout)

def menu(page, top, item):
    "Click menu `top` → `item`, once the item is enabled (it is not until the notebook is the current widget)."
    page.locator('.lm-MenuBar-itemLabel', has_text=top).first.click()
    page.locator('.lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel', has_text=item).first.click(timeout=T)

def enter(page, sel, value):
    box = page.locator(f'{sel} input').first
    box.fill(str(value)); box.press('Enter')

def test_panel_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport=dict(width=1500, height=1700))
        try: drive(page, lab)
        except BaseException:
            page.screenshot(path=ARTIFACTS / 'panel-failure.png', full_page=True)
            print(Path(lab['log']).read_text()[-5000:])
            raise
        finally: browser.close()

def drive(page, lab):
    page.goto(lab['url'], timeout=T, wait_until='domcontentloaded')
    page.wait_for_selector('.jp-Notebook .jp-Cell', timeout=T)
    kernel_idle(page)  # the kernel has started and answered, not just the page loaded
    page.locator('.jp-Notebook .jp-Cell .jp-InputPrompt').first.click()  # the notebook is the current widget
    menu(page, 'Run', 'Run All Cells')
    wait_text(page, '.jp-Notebook .jp-Cell .jp-InputPrompt', lambda s: s.strip() not in ('[ ]:', ''), 'Run All to start', 20_000)
    panel = page.locator('.dfl-panel')
    panel.wait_for(state='visible', timeout=T)  # the widget rendered (not "Loading widget...")
    kernel_idle(page)
    assert page.locator('.jp-OutputArea-output', has_text='Loading widget').count() == 0
    assert text(page, '.dfl-step-count') == '0'
    plot0 = page.get_attribute('img.dfl-plot', 'src')
    assert plot0 and plot0.startswith('blob:')

    page.locator('button.dfl-step').click()  # one step in the kernel
    wait_text(page, '.dfl-step-count', lambda s: s == '1', 'step 1 after Step')
    plot1 = new_src(page, 'img.dfl-plot', plot0, 'the plot redrawn after Step')

    enter(page, '.dfl-n', 6)
    page.locator('button.dfl-run').click()  # six steps in the background thread
    wait_text(page, '.dfl-step-count', lambda s: s == '7', 'step 7 after Run N=6')
    wait_text(page, '.dfl-counter', lambda s: 'idle' in s, 'the run to end')

    plot2 = new_src(page, 'img.dfl-plot', plot1, 'the plot redrawn after Run N')
    enter(page, '.dfl-knob-loss-lambda_adv', 0.25)  # a knob: λ_adv 0.1 → 0.25
    wait_text(page, '.dfl-events', lambda s: s.startswith('1 event'), 'the knob change in the history')
    plot3 = new_src(page, 'img.dfl-plot', plot2, 'the plot redrawn with the change marked')
    assert 'loss.lambda_adv 0.1 → 0.25' in text(page, '.dfl-log-messages')
    enter(page, '.dfl-knob-optim-lr_d', -1)  # a bad value: a message, nothing changes
    wait_text(page, '.dfl-log-messages', lambda s: 'optim.lr_d = -1.0 refused' in s, 'the refusal message')
    assert page.locator('.dfl-knob-optim-lr_d input').input_value() in ('0.0002', '2e-4')

    enter(page, '.dfl-n', 5)
    page.locator('button.dfl-run').click()
    wait_text(page, '.dfl-step-count', lambda s: s == '12', 'step 12 after a second run')
    wait_text(page, '.dfl-counter', lambda s: 'idle' in s, 'the second run to end')
    wait_text(page, '.dfl-preview-label', lambda s: 'step 10' in s, 'the preview at step 10')
    new_src(page, 'img.dfl-plot', plot3, 'the plot redrawn after the second run')

    cell = page.locator('.jp-Notebook .jp-Cell').nth(1)  # print the history from the kernel
    cell.locator('.jp-InputArea-editor').click()
    page.keyboard.press('Shift+Enter')
    out = wait_text(page, '.jp-Notebook .jp-Cell >> nth=1 >> .jp-OutputArea-output',
                    lambda s: 'EVENTS' in s and 'STEPS 12' in s, 'the report cell')
    assert 'EVENTS 1 STEPS 12 LAMBDA_ADV 0.25' in out, out

    panel.scroll_into_view_if_needed()
    panel.screenshot(path=ARTIFACTS / 'panel.png')
    page.screenshot(path=ARTIFACTS / 'panel-page.png', full_page=True)
