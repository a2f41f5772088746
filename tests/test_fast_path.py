"The fast training path's switches: each one changes speed, not results, and is really switched on."
import warnings
import pytest, torch, torch.nn as nn
from dfl_gan.core import Config
from dfl_gan.data import FaceSet, Batches, demo_faces
from dfl_gan.optim import make_optimizer
from dfl_gan.train import Trainer

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
PLAIN = {'run.precision': 'fp32', 'run.compile': False, 'run.channels_last': 'off', 'run.fast_optim': False}
LOSSES = ('rec', 'd_loss', 'g_adv', 'g_total', 'gn_g', 'gn_d')

def tiny(**kw) -> Config:
    "`Config.tiny`, smaller still: these tests time nothing, they compare numbers."
    return Config.tiny(**{'model.latent_dim': 16, 'model.g_width': 32, 'model.d_width': 8, 'data.batch_size': 4, **kw})

def history(cfg:Config, steps:int=3, data=None):
    "Build, train `steps` steps and return the trainer (built and run in one go: the global RNG is not shared)."
    t = Trainer(cfg, data=data)
    t.fit(steps, progress=False)
    return t

def close(a, b, cols=LOSSES, rtol=1e-4):
    for c in cols:
        x, y = a.history.column(c), b.history.column(c)
        assert torch.allclose(torch.tensor(x), torch.tensor(y), rtol=rtol, atol=1e-6), (c, x, y)

@pytest.fixture(scope='module')
def faces(): return demo_faces(32)

# --- the switches do not change the numbers ------------------------------------------------------------------------
@pytest.mark.parametrize('switch', [{'run.fast_optim': True}, {'run.channels_last': 'on'},
                                    {'run.fast_optim': True, 'run.channels_last': 'on'}])
@pytest.mark.parametrize('optimizer', ['adam', 'adamw', 'rmsprop', 'adabelief'])
def test_switch_keeps_losses(faces, switch, optimizer):
    plain = history(tiny(**PLAIN, **{'optim.optimizer': optimizer}), data=faces)
    fast = history(tiny(**{**PLAIN, **switch, 'optim.optimizer': optimizer}), data=faces)
    close(plain, fast)
    p, q = (torch.cat([w.flatten() for w in t.nets['G'].state_dict().values()]) for t in (plain, fast))
    off = ~torch.isclose(p, q, rtol=1e-3, atol=1e-5)
    # AdaBelief's first steps are about lr·sign(g): rounding may flip the sign of a near-zero gradient, which moves that
    # one weight by up to 2·lr per step; more than a few such weights in a thousand is a real difference
    assert off.float().mean() < 1e-3 and (p - q).abs().max() <= 2 * plain.cfg.optim.lr_g * 3, (int(off.sum()), (p - q).abs().max())

def test_a_changed_setting_is_noticed(faces):
    "The comparison above can fail: a different learning rate gives different losses."
    a = history(tiny(**PLAIN), data=faces)
    b = history(tiny(**PLAIN, **{'optim.lr_g': 1e-3}), data=faces)
    with pytest.raises(AssertionError): close(a, b, cols=('rec', 'g_total'))

def test_cpu_defaults():
    "On the CPU the defaults are fp32, NCHW (channels_last measured slower there), fused/foreach optimisers, no compile."
    t = Trainer(tiny(), data=demo_faces(32))
    assert t.device.type == 'cpu' and t.amp_dtype is None and not t.scaler.is_enabled()
    assert not t.nets['G'].out.weight.is_contiguous(memory_format=torch.channels_last)
    assert t.opts['G'].defaults['fused'] and not t.cfg.run.compile

@pytest.fixture(scope='module')
def blobs():
    g = torch.Generator().manual_seed(0)
    mk = lambda: FaceSet.from_tensor(torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=g))
    return mk(), mk()

def swap_cfg(**kw):
    base = {'model.ae_dims': 16, 'model.e_dims': 8, 'model.d_dims': 8, 'model.d_mask_dims': 4, 'model.gan_dims': 4,
            'data.batch_size': 2, 'loss.lambda_adv': 0.1}
    return Config.tiny('swap', **{**base, **kw})

@pytest.mark.filterwarnings('ignore:.*have no mask')   # random blobs, knowingly without masks
@pytest.mark.parametrize('archi', ['liae-ud', 'df-ud'])
def test_swap_training_skips_src_dst_and_nothing_else(blobs, archi):
    src, dst = blobs
    calls = []
    def run(full:bool):
        t = Trainer(swap_cfg(**PLAIN, **{'model.archi': archi}), src=src, dst=dst)
        G, fwd = t.nets['G'], t.nets['G'].forward
        def spy(s, d, swap=True):
            calls.append((full, swap))
            return fwd(s, d, swap=True if full else swap)   # full: what the model did before, src→dst every step
        G.forward = spy
        t.fit(3, progress=False)
        return t
    before, now = run(True), run(False)
    assert (False, False) in calls                 # training asks for no src→dst
    close(before, now, cols=('rec', 'd_loss', 'g_adv', 'src_dssim', 'dst_mse', 'mask'), rtol=1e-4)
    assert list(now.preview())[-1] == 'src→dst'    # the preview still has the swap

# --- the switches are really on ----------------------------------------------------------------------------------------
def test_fused_optimisers_when_fast(faces):
    fast, plain = Trainer(tiny(**{'run.fast_optim': True}), data=faces), Trainer(tiny(**PLAIN), data=faces)
    for o in fast.opts.values(): assert o.defaults['fused'] is True
    for o in plain.opts.values(): assert not o.defaults['fused'] and o.defaults['foreach'] is False
    for name in ('rmsprop', 'adabelief'):   # foreach: torch's rule (CUDA parameters only), never on the plain path
        fast_o = make_optimizer([nn.Parameter(torch.ones(2))], tiny(**{'optim.optimizer': name}).optim, 1e-3, fast=True)
        plain_o = make_optimizer([nn.Parameter(torch.ones(2))], tiny(**{'optim.optimizer': name}).optim, 1e-3, fast=False)
        assert fast_o.defaults['foreach'] is None and plain_o.defaults['foreach'] is False
    assert not make_optimizer([nn.Parameter(torch.ones(2))], tiny(**{'optim.optimizer': 'adabelief'}).optim, 1e-3).param_groups[0]['foreach']
    o = make_optimizer([nn.Parameter(torch.ones(2))], tiny(**{'optim.optimizer': 'adamw'}).optim, 1e-3, fast=False)
    assert not o.defaults['fused'] and o.defaults['foreach'] is False

def test_fused_adam_skips_on_found_inf():
    "The device-side NaN guard relies on this: a fused Adam step with found_inf set changes nothing, even on NaN grads."
    w = nn.Parameter(torch.ones(4))
    o = torch.optim.Adam([w], lr=0.1, fused=True)
    w.grad = torch.full((4,), float('nan')); o.found_inf = torch.tensor(1.0); o.step(); del o.found_inf
    assert torch.equal(w.detach(), torch.ones(4)) and o.state[w]['step'].item() == 0
    w.grad = torch.ones(4); o.found_inf = torch.tensor(0.0); o.step(); del o.found_inf
    assert w.detach().lt(1).all() and o.state[w]['step'].item() == 1

def test_channels_last_params_and_activations(faces):
    t = Trainer(tiny(**{'run.channels_last': 'on', 'model.discriminator': 'unet'}), data=faces)
    convs = [m for n in t.nets.values() for m in n.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    outs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outs.append(o)) for m in convs if m.kernel_size != (1, 1)]
    t.step()
    for h in hooks: h.remove()
    assert outs and all(o.is_contiguous(memory_format=torch.channels_last) for o in outs)
    nchw = Trainer(tiny(), data=faces)   # 'auto' on the CPU: NCHW
    assert not nchw.nets['G'].out.weight.is_contiguous(memory_format=torch.channels_last)

def test_compile_matches_eager(faces):
    "torch.compile (inductor, C++ on the CPU) gives the losses of the eager networks."
    torch._dynamo.reset()
    eager = history(tiny(**PLAIN), data=faces)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        comp = history(tiny(**{**PLAIN, 'run.compile': True}), data=faces)
    assert all(hasattr(n, '_compiled_call_impl') and n._compiled_call_impl is not None for n in comp.nets.values())
    close(eager, comp, rtol=1e-3)
    from torch._dynamo.utils import counters
    graphs = counters['stats']['unique_graphs']
    comp.fit(3, progress=False)
    assert counters['stats']['unique_graphs'] == graphs   # static shapes: no recompilation once warmed up

# --- statistics stay on the device ---------------------------------------------------------------------------------
def test_record_is_device_tensors_read_in_bulk(faces):
    t = Trainer(tiny(), data=faces)
    rec = t.step()
    assert all(torch.is_tensor(rec[k]) for k in LOSSES)
    assert isinstance(t.history.rows[0]['rec'], float)

def test_device_nan_guard_reads_flags_every_k_steps(faces):
    "With K = 4 the flags stay on the device for 4 steps, then one read fetches them; K = 1 reads every step."
    t = Trainer(tiny(**{'run.nan_check_every': 4}), data=faces)
    for _ in range(3): t.step()
    assert len(t.guard._pending) == 3 and all(torch.is_tensor(ok) for _, oks in t.guard._pending for _, ok in oks)
    t.step(); assert t.guard._pending == []                                   # read at the 4th step
    h = Trainer(tiny(**{'run.nan_check_every': 1}), data=faces); h.step()
    assert h.guard._pending == [] and isinstance(h.history.rows[0]['finite'], float)
    assert Trainer(tiny(), data=faces).nan_check_every() == 1                 # auto on the CPU

@pytest.mark.parametrize('optimizer', ['adam', 'adabelief', 'rmsprop'])
def test_nan_steps_skipped_with_every_optimiser(faces, optimizer):
    "A poisoned step changes no weight and no optimiser state, whether the skip is decided on the device or the host."
    t = Trainer(tiny(**{'optim.optimizer': optimizer, 'run.nan_check_every': 4, 'run.nan_patience': 10}), data=faces)
    t.fit(2, progress=False)
    w0 = {k: v.clone() for k, v in t.nets['G'].state_dict().items()}
    state = lambda: {(i, k): v.clone() for i, s in enumerate(t.opts['G'].state.values()) for k, v in s.items() if torch.is_tensor(v)}
    st0 = state()
    hook = t.nets['G'].register_forward_hook(lambda m, i, o: o * float('nan'))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); t.fit(2, progress=False)
    hook.remove()
    assert all(torch.equal(v, w0[k]) for k, v in t.nets['G'].state_dict().items())
    st1 = state()
    assert st1.keys() == st0.keys() and all(torch.equal(v, st0[k]) for k, v in st1.items())
    assert [e['step'] for e in t.history.events if e['kind'] == 'nonfinite'] == [2, 3]
    t.fit(1, progress=False)
    assert not torch.equal(t.nets['G'].out.weight, w0['out.weight'])          # and training goes on afterwards

# --- CUDA-only switches -----------------------------------------------------------------------------------------------
@cuda
def test_bf16_autocast_and_cudnn_benchmark(faces):
    torch.backends.cudnn.benchmark = False
    t = Trainer(tiny(**{'run.device': 'cuda'}), data=faces)
    assert t.amp_dtype == torch.bfloat16 and torch.backends.cudnn.benchmark
    assert t.nets['G'].out.weight.is_contiguous(memory_format=torch.channels_last)   # 'auto' → on with CUDA
    seen = []
    h = t.nets['G'].out.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    t.fit(3, progress=False); h.remove()
    assert seen[0] == torch.bfloat16
    ref = history(tiny(**{'run.device': 'cuda', 'run.precision': 'fp32'}), data=faces)
    close(ref, t, cols=('rec',), rtol=5e-2)

@cuda
def test_cuda_swap_uses_foreach_adabelief_and_the_device_nan_guard(blobs):
    src, dst = blobs
    t = Trainer(swap_cfg(**{'run.device': 'cuda'}), src=src, dst=dst)
    assert t.cfg.optim.optimizer == 'adabelief' and t.nan_check_every() == 50
    assert all(o._step_supports_amp_scaling and all(g['foreach'] for g in o.param_groups) for o in t.opts.values())
    t.fit(3, progress=False)
    assert all(torch.isfinite(torch.tensor(t.history.column('g_total')))) and t.history.column('finite').tolist() == [1, 1, 1]

@cuda
def test_fp16_gradscaler(faces):
    t = Trainer(tiny(**{'run.device': 'cuda', 'run.precision': 'fp16'}), data=faces)
    assert t.scaler.is_enabled() and t.amp_dtype == torch.float16
    t.fit(4, progress=False)
    assert all(torch.isfinite(torch.tensor(t.history.column('g_total'))))

@cuda
def test_channels_last_compile_cuda(faces):
    eager = history(tiny(**{'run.device': 'cuda', 'run.precision': 'fp32'}), data=faces)
    fast = history(tiny(**{'run.device': 'cuda', 'run.precision': 'fp32', 'run.channels_last': 'on', 'run.compile': True}), data=faces)
    close(eager, fast, cols=('rec', 'g_total'), rtol=1e-2)

@cuda
def test_face_set_cached_on_the_gpu(faces):
    on, off = Batches(faces, 8, 'cuda', seed=1), Batches(faces, 8, 'cuda', seed=1, cache_bytes=0)
    assert on.images.is_cuda and not off.images.is_cuda
    for _ in range(20):
        a, b = next(on), next(off)
        assert torch.equal(a['image'], b['image']) and torch.equal(a['mask'], b['mask'])
