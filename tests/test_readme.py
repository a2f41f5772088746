"The README's commands are the ones CI runs, and README.md agrees with nbs/index.ipynb."
import json, re, shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def sh_blocks(text):
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", text, flags=re.S)]

def index_text():
    nb = json.loads((ROOT / 'nbs' / 'index.ipynb').read_text())
    return '\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown')

def test_two_commands():
    blocks = sh_blocks((ROOT / 'README.md').read_text())
    assert len(blocks) == 2, blocks
    install_and_demo, tests = blocks
    assert install_and_demo.startswith('pip install') and 'dfl-gan demo --out' in install_and_demo
    assert tests == 'bash .ci/run'

def test_ci_script_is_what_readme_runs():
    ci = (ROOT / '.ci' / 'run').read_text()
    assert 'pip install -q -e ".[dev,all]"' in ci and 'nbdev-test' in ci and 'pytest' in ci
    assert re.search(r'git status --porcelain', ci), 'CI must fail when nbdev-export/clean change files'

def test_readme_matches_index():
    assert sh_blocks((ROOT / 'README.md').read_text()) == sh_blocks(index_text())

def test_demo_command_parses():
    from dfl_gan.cli import _parser
    cmd = shlex.split(sh_blocks((ROOT / 'README.md').read_text())[0].split('&&')[1])
    assert cmd[0] == 'dfl-gan'
    ns = _parser().parse_args(cmd[1:])
    assert ns.cmd == 'demo'

def test_readme_is_the_index():
    "README.md is nbs/index.ipynb's text, with the image paths seen from the repository root."
    nb = json.loads((ROOT / 'nbs' / 'index.ipynb').read_text())
    text = '\n\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown')
    assert (ROOT / 'README.md').read_text() == text.replace('](images/', '](nbs/images/') + '\n'

def test_tutorials_have_colab_badges():
    "Every tutorial carries its 'Open in Colab' badge, and the README lists it with the same badge."
    repo = re.search(r'Repository = "https://github.com/([^"]+)"', (ROOT / 'pyproject.toml').read_text())[1]
    readme, tutorials = (ROOT / 'README.md').read_text(), sorted((ROOT / 'nbs' / 'tutorials').glob('*.ipynb'))
    assert tutorials
    for nb in tutorials:
        badge = ('[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]'
                 f'(https://colab.research.google.com/github/{repo}/blob/main/nbs/tutorials/{nb.name})')
        assert badge in readme, f'README.md has no Colab badge for {nb.name}'
        assert badge in ''.join(''.join(c['source']) for c in json.loads(nb.read_text())['cells']), f'{nb.name} has no Colab badge'
