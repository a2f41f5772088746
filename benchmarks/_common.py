"Shared helpers of the benchmark scripts: machine description, peak memory, and writing a section of BENCHMARKS.md."
from __future__ import annotations
import ctypes, os, platform, re, shlex, sys, threading, time
from pathlib import Path
import torch

HERE = Path(__file__).resolve().parent
REPORT = HERE / 'BENCHMARKS.md'

def cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()

def machine(device:torch.device) -> str:
    "One line naming the hardware and software a number was measured on."
    import dfl_gan
    gpu = f', GPU {torch.cuda.get_device_name()}' if device.type == 'cuda' else ''
    return (f'CPU {cpu_model()}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads){gpu}; '
            f'torch {torch.__version__}, Python {platform.python_version()}, dfl_gan {dfl_gan.__version__}')

def load_average() -> str:
    try: return ' '.join(f'{x:.2f}' for x in os.getloadavg())
    except OSError: return 'n/a'

def cpu_pressure() -> float | None:
    "Seconds that runnable tasks have waited for a CPU since boot (Linux PSI 'some'), or None where PSI is missing."
    try: return int(Path('/proc/pressure/cpu').read_text().split()[4].split('=')[1]) / 1e6
    except (OSError, IndexError, ValueError): return None

class Contention:
    "Share of a block's wall time during which some task waited for a CPU (other processes on a shared machine)."
    def __enter__(self): self.t0, self.p0 = time.perf_counter(), cpu_pressure(); return self
    def __exit__(self, *exc):
        p1 = cpu_pressure()
        self.share = 0.0 if p1 is None or self.p0 is None else (p1 - self.p0) / (time.perf_counter() - self.t0)

def command() -> str: return 'python ' + ' '.join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:])

def sync(device:torch.device):
    if device.type == 'cuda': torch.cuda.synchronize()

_libc = None
def _trim():
    "Give freed heap memory back to the OS (glibc), so an RSS delta measures what a step really needs."
    global _libc
    try:
        _libc = _libc or ctypes.CDLL('libc.so.6')
        _libc.malloc_trim(0)
    except OSError: pass

class PeakMemory:
    "Peak memory of a block: CUDA `max_memory_allocated`, else the peak RSS above the RSS at entry (sampled every 2 ms)."
    def __init__(self, device:torch.device): self.device, self.peak = device, 0

    def __enter__(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); self._base = torch.cuda.memory_allocated()
            return self
        import psutil
        _trim()
        self._proc, self._stop = psutil.Process(), threading.Event()
        self._base = self._max = self._proc.memory_info().rss
        def sample():
            while not self._stop.wait(0.002): self._max = max(self._max, self._proc.memory_info().rss)
        self._thread = threading.Thread(target=sample, daemon=True); self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(); self.peak = torch.cuda.max_memory_allocated()
            self.delta = self.peak - self._base
        else:
            self._stop.set(); self._thread.join()
            self._max = max(self._max, self._proc.memory_info().rss)
            self.peak, self.delta = self._max, self._max - self._base

def fmt_bytes(n:float) -> str:
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if abs(n) < 1024 or unit == 'GiB': return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
        n /= 1024

def md_table(header:list, rows:list) -> str:
    out = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
    return '\n'.join(out + ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows])

_INTRO = """# Benchmarks

Measured numbers, each section written by the script named in it (`benchmarks/bench_train.py`,
`benchmarks/bench_loader.py`, `benchmarks/bench_panel.py`); rerun a script to refresh its section. Each section
names the machine, the load average when it ran, and the exact command.
"""

def write_section(name:str,  # section id, e.g. 'train-cpu'
                  text:str,  # markdown of the section, without the markers
                  path:Path=REPORT):
    "Replace (or append) the section `name` of BENCHMARKS.md, leaving the others alone."
    doc = path.read_text() if path.exists() else _INTRO
    start, end = f'<!-- {name} -->', f'<!-- /{name} -->'
    block = f'{start}\n{text.strip()}\n{end}'
    pat = re.compile(re.escape(start) + '.*?' + re.escape(end), re.S)
    doc = pat.sub(lambda _: block, doc) if pat.search(doc) else doc.rstrip() + '\n\n' + block + '\n'
    path.write_text(doc)
    return path
