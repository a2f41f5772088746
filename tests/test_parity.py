"""DeepFaceLab parity of face-swap training: each defect a review found has a test here that failed before its fix
(named test_defect_N_...), and each matched SAEHD behaviour is checked against DeepFaceLab's formula written out by
hand. The face sets are DFLJPG files written here, with landmarks of DeepFaceLab's 3D face turned to known yaws."""
import math, warnings
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from dfl_gan.core import Config, ConfigError
from dfl_gan.data import FaceSet, write_dfl_metadata
from dfl_gan.landmarks import LANDMARKS_68_3D, eyes_mouth_mask
from dfl_gan.losses import blur_mask, gaussian_blur
from dfl_gan.augment import rgb_to_lab
from dfl_gan.swap import FaceSwapTask, swap_faces, blur_out
from dfl_gan.train import Trainer
from dfl_gan import cli

RES = 32

def yawed_landmarks(yaw:float, size:int=64) -> np.ndarray:
    "DeepFaceLab's 3D face turned by `yaw` and projected into a `size`-px aligned face (weak perspective)."
    c, s = math.cos(yaw), math.sin(yaw)
    X = LANDMARKS_68_3D.double().numpy()
    x = X[:, 0] * c + X[:, 2] * s
    return np.stack([size / 2 + x * size / 200, size / 2 + X[:, 1] * size / 200], 1).astype(np.float32)

def write_faces(folder:Path, n:int, seed:int, yaws=None) -> Path:
    "`n` DFLJPG faces (64 px, smooth random colours) with 68 landmarks, at the given yaws."
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        img = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=64, mode='bilinear')[0]
        p = folder / f'{i:03d}.jpg'
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(p, quality=95)
        write_dfl_metadata(p, dict(face_type='whole_face', landmarks=yawed_landmarks(0.0 if yaws is None else yaws[i])))
    return folder

@pytest.fixture(scope='module')
def faces(tmp_path_factory) -> tuple:
    d = tmp_path_factory.mktemp('faces')
    return FaceSet(write_faces(d / 'src', 6, 0), RES), FaceSet(write_faces(d / 'dst', 6, 1), RES)

def swap(**kw) -> Config:
    return Config.tiny('swap', **{'data.batch_size': 2, 'run.device': 'cpu', **kw})

# --- defects ---------------------------------------------------------------------------------------------------------

def test_defect_1_eyes_mouth_priority_with_rct_trains(faces):
    "Two-channel masks (face + eyes/mouth) went into rct, which crashed."
    t = Trainer(swap(**{'loss.eyes_mouth_priority': True, 'data.color_transfer': 'rct'}), src=faces[0], dst=faces[1])
    t.fit(2, progress=False)
    assert np.isfinite(t.history.column('rec')).all()

def test_defect_2_a_config_file_is_used_with_src_and_dst(tmp_path):
    "With --src/--dst the file was replaced by SAEHD's defaults."
    f = tmp_path / 'c.json'
    Config.swap(**{'model.resolution': 64, 'optim.lr_g': 1e-4, 'loss.true_face_power': 0.01}).to_json(f)
    ns = cli._parser().parse_args(['train', '--out', str(tmp_path / 'run'), '--config', str(f), '--src', 'a', '--dst', 'b'])
    c = cli.config_from_args(ns)
    assert (c.model.resolution, c.optim.lr_g, c.loss.true_face_power, c.data.src, c.data.dst) == (64, 1e-4, 0.01, 'a', 'b')

def test_defect_3_ema_draws_previews_and_swaps(faces):
    "The EMA was kept and saved but never used by swap previews or `dfl-gan swap`."
    t = Trainer(swap(**{'optim.ema': 0.5}), src=faces[0], dst=faces[1]); t.fit(3, progress=False)
    x = faces[1].images[:2].float() / 255
    ema, raw = t.ema['G'].module.eval(), t.nets['G'].eval()
    assert torch.equal(swap_faces(t, x)[0], ema.swap(x)[0]) and not torch.equal(swap_faces(t, x)[0], raw.swap(x)[0])
    with torch.no_grad(): expected = ema(t.fixed['src'], t.fixed['dst'])['src_dst'].clamp(0, 1)
    assert torch.equal(t.preview()['src→dst'], expected)

def test_defect_4_the_spec_discriminator_is_refused_for_face_swap():
    "'spec' silently became 'unet' in swap mode."
    with pytest.raises(ConfigError, match="face swap uses DeepFaceLab's 'unet'"):
        Config.swap(**{'model.discriminator': 'spec'})

def test_defect_5_missing_masks_and_landmarks_are_said_once(faces):
    "Faces without landmarks gave an all-zero eyes/mouth mask, faces without metadata a full mask, without a word."
    bare = FaceSet.from_tensor(torch.rand(4, 3, RES, RES), name='bare')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        FaceSwapTask(swap(**{'loss.eyes_mouth_priority': True}), src=bare, dst=faces[1])
    msgs = [str(x.message) for x in w]
    assert sum('bare: 4 of 4 faces have no mask' in m for m in msgs) == 1, msgs
    assert sum('bare: 4 of 4 faces have no landmarks: eyes-and-mouth priority does nothing' in m for m in msgs) == 1, msgs
    assert not any(faces[1].name in m for m in msgs), msgs

def test_defect_6_mouth_is_the_inner_lips_and_the_term_is_unmasked(faces):
    "The mouth used the outer lips (48-59); the eyes/mouth term was computed on the masked images."
    lm = torch.full((68, 2), 32.)
    lm[36:42] = torch.tensor([[10., 10], [14, 8], [18, 10], [14, 12], [12, 11], [16, 11]])
    lm[42:48] = lm[36:42] + torch.tensor([30., 0])
    lm[48:60] = torch.tensor([[30. + 4 * math.cos(a), 56 + 3 * math.sin(a)] for a in np.linspace(0, 2 * math.pi, 12, endpoint=False)])
    lm[60:68] = torch.tensor([[32. + 4 * math.cos(a), 40 + 2 * math.sin(a)] for a in np.linspace(0, 2 * math.pi, 8, endpoint=False)])
    em = eyes_mouth_mask(lm, 64)
    assert em[0, 0, 40, 32] > 0.99 and em[0, 0, 56, 30] < 0.01        # inner lips in, outer lips (placed apart) out
    task = FaceSwapTask(swap(**{'loss.eyes_mouth_priority': True}), src=faces[0], dst=faces[1])
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 3, RES, RES, generator=g), torch.rand(2, 3, RES, RES, generator=g)
    face = torch.zeros(2, 1, RES, RES); face[..., 8:24, 8:24] = 1
    em = torch.zeros(2, 1, RES, RES); em[..., 4:8, 4:12] = 1            # priority where the (blurred) face mask is ~0
    loss, parts, _ = task.side_loss(pred, torch.rand(2, 1, RES, RES), target, face, em)
    assert torch.allclose(parts['eyes_mouth'], 300 * (target * em - pred * em).abs().mean())
    assert parts['eyes_mouth'] > 1.0

def test_defect_7_rct_in_training_takes_whole_image_statistics(faces):
    "Training rct used masked statistics and applied the src mask to the dst reference."
    task = FaceSwapTask(swap(**{'data.color_transfer': 'rct', 'data.random_warp': False, 'data.affine': False,
                                'data.random_dst_flip': False}), src=faces[0], dst=faces[1])
    src, dst = faces[0].images[:2].float() / 255, faces[1].images[:2].float() / 255
    half = torch.zeros(2, 1, RES, RES); half[..., :, :16] = 1
    out = task.prepare(dict(src=dict(image=src, mask=half), dst=dict(image=dst, mask=1 - half)))
    ls, ld = rgb_to_lab(out['src']['target']), rgb_to_lab(dst)
    # atol: rct clips to the RGB gamut, so a face whose colours fall outside it lands ~½ unit off in mean, a few % in std
    assert torch.allclose(ls.mean((2, 3)), ld.mean((2, 3)), atol=0.6) and torch.allclose(ls.std((2, 3)), ld.std((2, 3)), rtol=0.06)

def test_defect_8_help_texts_say_what_deepfacelab_does():
    fields = Config.fields()
    assert "off, DeepFaceLab's default" in fields['optim.clip_grad'].metadata['help']
    assert 'coupled' in fields['optim.weight_decay'].metadata['help'] and 'decoupled with AdamW' in fields['optim.weight_decay'].metadata['help']

def test_defect_9_code_discriminator_learns_and_true_face_reaches_the_encoder(faces):
    "Replaces `code_d > 0`, which BCE makes true whatever happens."
    t = Trainer(swap(**{'model.archi': 'df-ud', 'loss.true_face_power': 0.5}), src=faces[0], dst=faces[1])
    cd0 = {k: v.clone() for k, v in t.nets['code_D'].state_dict().items()}
    t.fit(2, progress=False)
    assert any(not torch.equal(v, cd0[k]) for k, v in t.nets['code_D'].state_dict().items())   # the code D moved
    out = t._forward(t.task.prepare(next(t.batches)))
    t.task.generator_terms(t, out, gan_on=False)
    enc = t.nets['G'].encoder.body[0].conv.weight
    grad, = torch.autograd.grad(out['terms']['true_face'], enc, retain_graph=True)
    assert grad.abs().sum() > 0                                                          # the term reaches the encoder
    cd1 = {k: v.clone() for k, v in t.nets['code_D'].state_dict().items()}
    t.update('G', out['terms']['true_face'])                                             # ...and G's update leaves code D be
    assert all(torch.equal(v, cd1[k]) for k, v in t.nets['code_D'].state_dict().items())

def test_defect_9_hsv_jitter_touches_only_the_src_input(faces):
    "Replaces a test that pinned the HSV jitter on the target."
    task = FaceSwapTask(swap(**{'data.hsv_jitter': 0.3, 'data.random_warp': False, 'data.affine': False,
                                'data.random_dst_flip': False}), src=faces[0], dst=faces[1])
    src, dst = faces[0].images[:2].float() / 255, faces[1].images[:2].float() / 255
    out = task.prepare(dict(src=dict(image=src, mask=torch.ones(2, 1, RES, RES)), dst=dict(image=dst, mask=torch.ones(2, 1, RES, RES))))
    assert torch.equal(out['src']['target'], src) and not torch.equal(out['src']['input'], src)
    assert torch.equal(out['dst']['input'], dst) and torch.equal(out['dst']['target'], dst)

# --- SAEHD's semantics -----------------------------------------------------------------------------------------------

def test_flips_are_separate_for_src_and_dst(faces):
    task = FaceSwapTask(swap(**{'data.random_warp': False, 'data.affine': False}), src=faces[0], dst=faces[1])
    x = torch.rand(64, 3, RES, RES)
    flipped = lambda side: sum(not torch.equal(a, b) for a, b in zip(task.prepare(dict(
        src=dict(image=x, mask=torch.ones(64, 1, RES, RES)), dst=dict(image=x, mask=torch.ones(64, 1, RES, RES))))[side]['target'], x))
    assert flipped('src') == 0 and 10 < flipped('dst') < 45          # DeepFaceLab: src off, dst on (p = 0.4)

def test_without_random_warp_liae_trains_without_inter_ab(faces):
    t = Trainer(swap(**{'data.random_warp': False}), src=faces[0], dst=faces[1])
    ab, b = [{k: v.clone() for k, v in m.state_dict().items()} for m in (t.nets['G'].inter_AB, t.nets['G'].inter_B)]
    t.fit(2, progress=False)
    assert all(torch.equal(v, ab[k]) for k, v in t.nets['G'].inter_AB.state_dict().items())
    assert any(not torch.equal(v, b[k]) for k, v in t.nets['G'].inter_B.state_dict().items())
    assert all(p not in t.opts['G'].state for p in t.nets['G'].inter_AB.parameters())   # no optimiser state either
    t.set('data.random_warp', True); t.step()                                            # with warp, it trains again
    assert any(not torch.equal(v, ab[k]) for k, v in t.nets['G'].inter_AB.state_dict().items())

def test_clipping_is_on_the_summed_gradient(faces):
    "DeepFaceLab differentiates the sum of its per-face losses and clips that gradient's global norm."
    t = Trainer(swap(**{'data.batch_size': 4}), src=faces[0], dst=faces[1])
    inputs = t.task.prepare(next(t.batches))
    params = t.params['G']
    out = t._forward(inputs)
    total = out['terms']['rec'] + out['terms']['style']
    grads = torch.autograd.grad(total * 4, params, allow_unused=True, retain_graph=True)   # the gradient of the batch's sum
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    t.set('optim.clip_grad', float(norm) / 2)              # the sum's gradient is clipped, the mean's (norm / 4) would not be
    captured = {}
    step = t.opts['G'].step
    t.opts['G'].step = lambda *a, **k: (captured.update(g=[p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]), step(*a, **k))[1]
    t.update('G', total)
    for a, b in zip(captured['g'], grads): assert torch.allclose(a, b / 2, atol=1e-6)

def test_g_first_lets_d_judge_the_updated_generator(faces):
    t = Trainer(swap(**{'loss.lambda_adv': 0.1}), src=faces[0], dst=faces[1])
    seen = []
    h = t.nets['D'].register_forward_hook(lambda m, i, o: seen.append(i[0].detach().clone()))
    inputs = t.task.prepare(next(t.batches))
    t.task.prepare = lambda batch: inputs                                                  # the step's inputs, known here
    t.step(); h.remove()
    with torch.no_grad():
        o = t.nets['G'](inputs['src']['input'], inputs['dst']['input'], swap=False)
        fresh = o['src_src'] * blur_mask(inputs['src']['mask'])
    # D ran on: the fake for G's adversarial term, then real and refreshed fake for its own update
    assert torch.allclose(seen[-1], fresh, atol=1e-6) and not torch.allclose(seen[0], fresh, atol=1e-6)

def test_uniform_yaw_draws_rare_views_as_often_as_common_ones(tmp_path):
    yaws = [0.0] * 9 + [0.9]                                  # nine frontal faces, one side view
    fs = FaceSet(write_faces(tmp_path / 'yaw', 10, 3, yaws), RES)
    t = Trainer(swap(**{'data.uniform_yaw': True, 'data.batch_size': 20}), src=fs, dst=fs)
    assert len(t.batches.src.groups) == 2
    side = int(np.argmax(yaws))
    drawn = [i for _ in range(5) for i in t.batches.src._indices().tolist()]
    assert 0.4 < drawn.count(side) / len(drawn) < 0.6        # half the draws, not a tenth

def test_uniform_yaw_needs_landmarks():
    bare = FaceSet.from_tensor(torch.rand(4, 3, RES, RES), name='bare')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(Exception, match='uniform yaw needs landmarks'): Trainer(swap(**{'data.uniform_yaw': True}), src=bare, dst=bare)

def test_blur_out_mask_is_deepfacelabs_formula():
    g = torch.Generator().manual_seed(0)
    img, m = torch.rand(2, 3, 64, 64, generator=g), torch.zeros(2, 1, 64, 64)
    m[..., 16:48, 16:48] = 1
    x = gaussian_blur(img * (1 - m), 0.5); y = 1 - gaussian_blur(m, 0.5); y = torch.where(y == 0, torch.ones_like(y), y)
    assert torch.allclose(blur_out(img, m, 64), img * m + (x / y) * (1 - m))
    assert torch.equal(blur_out(img, m, 64)[..., 16:48, 16:48], img[..., 16:48, 16:48])

def test_style_powers_add_their_terms(faces):
    t = Trainer(swap(**{'loss.face_style_power': 10.0, 'loss.bg_style_power': 5.0}), src=faces[0], dst=faces[1])
    r = t.step()
    assert r['style'] > 0
    out = t._forward(t.task.prepare(next(t.batches)))
    t.task.cfg.loss.bg_style_power = 0.0
    out = t._forward(t.task.prepare(next(t.batches)))
    enc = t.nets['G'].encoder.body[0].conv.weight
    grad, = torch.autograd.grad(out['terms']['style'], enc, allow_unused=True)
    assert grad is None or grad.abs().sum() == 0                 # face style: the decoder only, the code's gradient stopped

def test_gan_regularisers_under_masked_training(faces):
    t = Trainer(swap(**{'loss.lambda_adv': 0.1}), src=faces[0], dst=faces[1])
    out = t._forward(t.task.prepare(next(t.batches)))
    t.task.generator_terms(t, out, gan_on=True)
    anti = 1 - blur_mask(out['src_mask'])
    p, y = out['pred_src'], out['target_src']
    tv = ((p[:, :, 1:] - p[:, :, :-1]) ** 2).sum((1, 2, 3)) + ((p[..., 1:] - p[..., :-1]) ** 2).sum((1, 2, 3))
    assert torch.allclose(out['terms']['gan_reg'], 1e-6 * tv.mean() + 0.02 * ((p * anti - y * anti) ** 2).mean())
    out2 = t._forward(t.task.prepare(next(t.batches))); t.task.generator_terms(t, out2, gan_on=False)
    assert 'gan_reg' not in out2['terms']

def test_pretraining_forces_deepfacelabs_settings(faces):
    t = Trainer(swap(**{'run.pretrain': True, 'data.random_warp': True, 'data.hsv_jitter': 0.1, 'optim.lr_dropout': 0.3,
                        'optim.lr_cos': 500, 'loss.lambda_adv': 0.1}), src=faces[0])
    f = t.task.forced()
    assert f['data.random_warp'] is False and f['data.hsv_jitter'] == 0 and f['data.uniform_yaw'] is True
    assert t.optim().lr_dropout == 1.0 and t.optim().lr_cos == 0 and t.cfg.optim.lr_dropout == 0.3
    t.fit(2, progress=False)
    assert t.history.column('gan_on').tolist() == [0, 0] and t.history.rows[-1]['lr_g'] == t.cfg.optim.lr_g   # no cosine cycle

def test_adabelief_default_is_deepfacelabs():
    from dfl_gan.optim import AdaBelief
    w = torch.nn.Parameter(torch.tensor([1.0])); o = AdaBelief([w], lr=0.1)
    w.grad = torch.tensor([2.0]); o.step()
    m, s = 0.1 * 2.0, 0.001 * (2.0 - 0.2) ** 2                 # DeepFaceLab: m_t, v_t with the new m, no bias correction
    assert math.isclose(w.item(), 1 - 0.1 * m / (math.sqrt(s) + 1e-6), rel_tol=1e-6)
