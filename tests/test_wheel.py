"""`pip install dfl_gan` as a user does it: the sdist and the wheel that a release uploads, installed in a fresh venv
outside the repository, then `dfl-gan demo` and the import of every module run there, from a folder outside it.

- Build: `python -m build` (isolated: pip fetches setuptools from PyPI into a throwaway build env) on a copy of the
  working tree, so that no stale `*.egg-info` of the editable install leaks into the sdist and the shared checkout is
  not written to; the wheel is built from the sdist, as `python -m build` does, which also proves the sdist complete.
- `twine check --strict` on both: the README renders as PyPI's long description.
- The venv: `python -m venv --without-pip`, then `pip --python VENV install --no-deps --no-index` of the wheel: the
  wheel's own files, entry point and metadata, exactly as pip installs them.
- Its dependencies without downloading torch again (gigabytes, minutes): the closure of the wheel's `Requires-Dist`
  (markers and extras evaluated, no optional extra) is resolved in this venv's installed distributions and each one's
  top-level files (packages, `*.libs`, `*.dist-info`, from its RECORD) are symlinked into one folder that a `.pth`
  adds behind the fresh venv's site-packages. Only that closure is visible there: not this venv's editable dfl_gan
  (its `__editable__` finder is never loaded), not the optional extras (dlib, PyAV, OpenCV, onnx), not the dev tools.
  `pip check` in the fresh venv then proves every declared requirement, transitively, installed at a version that
  satisfies it; an import of a package the wheel does not declare fails there, as it would for a user.

What it then checks: the wheel holds every `dfl_gan/*.py` of the repository and nothing but the package and its
dist-info (no tests, no notebooks); `dfl-gan demo` trains 20 steps and writes its run folder; every module of the
installed package imports (the extras are imported lazily, so modules that need one import without it) and is the
installed copy, not the repository's. Without `build` or `twine` the tests are skipped, except under CI (`CI=true`),
where that is a failure."""
import importlib.util, json, os, shlex, shutil, subprocess, sys, zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
NOT_SOURCE = shutil.ignore_patterns('.git', '.venv*', '*.egg-info', 'build', 'dist', '__pycache__', '.ipynb_checkpoints',
                                    '.pytest_cache', 'runs', 'test-artifacts', '_docs', '_proc')
EXTRAS = ('dlib', 'av', 'cv2', 'onnx', 'onnxruntime')   # import names of the optional extras' packages

def need_module(name:str, how:str):
    if importlib.util.find_spec(name): return
    if os.environ.get('CI', '').lower() == 'true': pytest.fail(f'{name} is missing in CI: {how}')
    pytest.skip(f'{name} is missing ({how}); with CI=true this is a failure')

def run(*cmd, **kw) -> str:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if p.returncode: pytest.fail(f'{shlex.join(map(str, cmd))} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}')
    return p.stdout

def wanted(reqs, extras=()) -> list:
    "The requirements that apply here, with `extras` of the requiring distribution asked for."
    return [r for r in reqs if not r.marker or any(r.marker.evaluate({'extra': e}) for e in ('', *extras))]

def closure(reqs) -> list:
    "The installed distributions that `reqs` need, transitively: what `pip install` would put beside the wheel."
    found, todo = {}, wanted(reqs)
    while todo:
        r = todo.pop(); name = canonicalize_name(r.name)
        dist, extras = found.get(name, (None, set()))
        if dist and r.extras <= extras: continue
        try: dist = dist or metadata.distribution(r.name)
        except metadata.PackageNotFoundError: pytest.fail(f'{r} (a dependency of the wheel) is not installed here')
        found[name] = (dist, extras | r.extras)
        todo += wanted(map(Requirement, dist.requires or []), extras | r.extras)
    return [d for d, _ in found.values()]

def link_dists(dists, into:Path):
    "Symlink each distribution's top-level files (from its RECORD) into `into`: a site folder of just these."
    into.mkdir()
    for d in dists:
        assert d.files, f'{d.name} has no RECORD: its files are unknown'
        for top in {f.parts[0] for f in d.files} - {'..', '__pycache__'}:
            if not (into / top).exists(): (into / top).symlink_to(Path(d.locate_file(top)))

def wheel(dists:Path) -> Path: return next(dists.glob('*.whl'))

def wheel_names(dists:Path) -> list:
    with zipfile.ZipFile(wheel(dists)) as z: return z.namelist()

def wheel_requires(whl:Path) -> list:
    "The wheel's `Requires-Dist`, read from its METADATA."
    with zipfile.ZipFile(whl) as z:
        meta = Parser().parsestr(z.read(next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))).decode())
    return [Requirement(r) for r in meta.get_all('Requires-Dist', [])]

@pytest.fixture(scope='module')
def dists(tmp_path_factory) -> Path:
    "The sdist and the wheel, built from a copy of the working tree."
    need_module('build', 'pip install build'); need_module('twine', 'pip install twine')
    tmp = tmp_path_factory.mktemp('dists')
    shutil.copytree(ROOT, tmp / 'src', ignore=NOT_SOURCE)
    run(sys.executable, '-m', 'build', '--outdir', tmp / 'dist', tmp / 'src')
    return tmp / 'dist'

@pytest.fixture(scope='module')
def venv(dists, tmp_path_factory) -> Path:
    "A fresh venv outside the repository with the wheel installed and its declared dependencies visible."
    tmp = tmp_path_factory.mktemp('venv')
    assert ROOT not in tmp.parents
    run(sys.executable, '-m', 'venv', '--without-pip', tmp / 'venv')
    py = tmp / 'venv' / 'bin' / 'python'
    run(sys.executable, '-m', 'pip', '--python', py, 'install', '-q', '--no-deps', '--no-index', wheel(dists))
    link_dists(closure(wheel_requires(wheel(dists))), tmp / 'deps')
    site = Path(run(py, '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))').strip())
    (site / 'zz_dfl_gan_deps.pth').write_text(f"import site; site.addsitedir({str(tmp / 'deps')!r})\n")
    return tmp / 'venv'

def venv_env(venv:Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV', 'PYTHONHOME')}
    return {**env, 'PATH': f"{venv / 'bin'}{os.pathsep}{env['PATH']}", 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}

def test_twine_check(dists):
    assert sorted(p.suffix for p in dists.iterdir()) == ['.gz', '.whl']
    run(sys.executable, '-m', 'twine', 'check', '--strict', *dists.iterdir())

def test_wheel_holds_the_package_only(dists):
    names = wheel_names(dists)
    assert {n.split('/')[0] for n in names} - {'dfl_gan'} == {next(n.split('/')[0] for n in names if '.dist-info/' in n)}
    src = dists.parent / 'src' / 'dfl_gan'   # the repository's package as it was built (others may edit the checkout meanwhile)
    assert {n for n in names if n.endswith('.py')} == {f'dfl_gan/{p.name}' for p in src.glob('*.py')}
    assert not [n for n in names if n.startswith(('tests/', 'nbs/')) or n.endswith('.ipynb')]

def test_pip_check(venv):
    "Every declared requirement, transitively, is installed in the fresh venv at a version that satisfies it."
    out = run(sys.executable, '-m', 'pip', '--python', venv / 'bin' / 'python', 'check')
    assert 'No broken requirements found' in out, out

def test_demo_from_the_wheel(venv, tmp_path):
    cwd = tmp_path / 'cwd'; cwd.mkdir()
    run(venv / 'bin' / 'dfl-gan', 'demo', '--out', 'runs/demo', '--steps', '20', '--no-progress', cwd=cwd, env=venv_env(venv))
    out = cwd / 'runs' / 'demo'
    for f in ('metrics.json', 'checkpoint.pt', 'preview.png', 'curves.png', 'history.jsonl', 'config.json'):
        assert (out / f).stat().st_size > 0, f
    assert json.loads((out / 'metrics.json').read_text())['steps'] == 20

IMPORT_ALL = """
import importlib, importlib.util, json, pkgutil, sys, dfl_gan
mods = sorted(m.name for m in pkgutil.iter_modules(dfl_gan.__path__))
files = [importlib.import_module(f'dfl_gan.{m}').__file__ for m in mods]
print(json.dumps(dict(mods=mods, files=[dfl_gan.__file__, *files],
                      extras=[m for m in sys.argv[1:] if importlib.util.find_spec(m)])))
"""

def test_every_module_imports(venv, dists, tmp_path):
    "Every module of the installed wheel imports from outside the repository, the optional extras absent."
    got = json.loads(run(venv / 'bin' / 'python', '-c', IMPORT_ALL, *EXTRAS, cwd=tmp_path, env=venv_env(venv)))
    in_wheel = {n for n in wheel_names(dists) if n.endswith('.py')}
    assert {f'dfl_gan/{m}.py' for m in got['mods']} | {'dfl_gan/__init__.py'} == in_wheel
    assert all(Path(f).resolve().is_relative_to(venv.resolve()) for f in got['files']), got['files']
    assert got['extras'] == [], f'optional extras visible in the fresh venv: {got["extras"]}'
