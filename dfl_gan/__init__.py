"""DeepFaceLab's GAN stage rebuilt as a literate, interactive PyTorch toolkit

Modules:

- `dfl_gan.align`: DeepFaceLab's face types and its alignment: the similarity that takes a face's landmarks to a mean face, the square each face type cuts around it, and the affine warp that cuts it out of a frame (extraction), out of another aligned face (re-cropping) or puts it back (merging).
- `dfl_gan.all`: `from dfl_gan.all import *`: the names a notebook needs to train, steer and read a GAN, in one import.
- `dfl_gan.augment`: DeepFaceLab's training augmentation (random warp, affine, flips, HSV jitter) and colour transfer (RCT, LCT), batched in torch on the training device.
- `dfl_gan.balance`: Who is winning, in one definition, and the strategies that decide how often the discriminator moves: fixed (k D updates per G update) and adaptive (D rests while it is winning).
- `dfl_gan.checkpoints`: Everything about saving, loading and resuming: what a checkpoint holds, numbered checkpoints written atomically and rotated, autosave as a callback, one `load` for a file or a run folder, resume with changed settings, and early errors when the output folder cannot hold a run.
- `dfl_gan.cli`: `dfl-gan demo | train | swap | preview | extract | merge | export`: the headless face of the same `Trainer` and of the pipeline around it, for servers and scripts.
- `dfl_gan.core`: One validated configuration tree for a run: settings with their help, limits and when they may change, JSON round trips, presets, and the watchers that make a change to a running trainer safe.
- `dfl_gan.data`: Face folders loaded once into memory, DeepFaceLab's DFLJPG metadata read without trusting it, masks, built-in demo faces, and an infinite, resumable batch sampler.
- `dfl_gan.device`: Seeding, the device and the precision a run uses: the few facts about the machine that the trainer reads when it is built.
- `dfl_gan.distributed`: More than one GPU (or machine) with torchrun: one process per device, each with a shard of every batch, gradients averaged in one collective, the same decisions on every rank, and checkpoints that resume at any world size.
- `dfl_gan.export`: A trained face swapper as a DeepFaceLive model (`.dfm`) or a plain ONNX graph: DeepFaceLab's `export_dfm`, checked with onnxruntime before a byte is written.
- `dfl_gan.extract`: Footage to training data as DeepFaceLab makes it: frames, faces found by dlib, their 68 landmarks, and aligned DFLJPG faces of any face type carrying the metadata that merging needs to put a swapped face back.
- `dfl_gan.history`: What a run leaves behind step by step: one record of numbers per step, kept on the device until read, events such as knob changes and incidents, and the NaN guard that skips, records and recovers from non-finite steps.
- `dfl_gan.landmarks`: What the 68 face landmarks give: the convex hull and the hull mask, DeepFaceLab's eyes-and-mouth mask, and the head pose (pitch, yaw, roll) that its uniform-yaw sampling sorts faces by.
- `dfl_gan.losses`: The adversarial game and its balance statistics, DeepFaceLab's reconstruction losses, the VGG16 perceptual loss, L2 and R1, the weighted total.
- `dfl_gan.merge`: DeepFaceLab's merger: every frame's faces swapped by a trained model and put back into the frame, with its masks, mask erosion and blur, colour transfer, blend modes and sharpening, then the frames encoded back into a video.
- `dfl_gan.merge_panel`: DeepFaceLab's interactive merger in a notebook: browse the frames, change every merge setting and see the merged frame redrawn, then merge all the frames (and the video) with a progress bar.
- `dfl_gan.metrics`: How real do the generated faces look? Reconstruction metrics (SSIM, PSNR, MS-SSIM, sharpness, LPIPS), distribution metrics (FID, KID) from Inception-v3 weights the user supplies, and the hold-out split they are measured on.
- `dfl_gan.models`: DeepFaceLab's building blocks, the spec's generator / discriminator / encoder, SAEHD's DF and LIAE autoencoders, and the patch, U-Net and code discriminators.
- `dfl_gan.monitor`: Reading a run: smoothed curves of every loss term, the D/G balance, gradient norms and learning rates, knob changes marked where they happened, preview grids, and the callbacks that write a run folder. The monitor reads the trainer and its history; it never trains.
- `dfl_gan.optim`: Learning-rate schedules, AdaBelief (DeepFaceLab's default optimiser), the optimiser a config names, live hyper-parameters, LR dropout and the gradient norm: the parts of a step that are about moving weights, not about GANs.
- `dfl_gan.swap`: DeepFaceLab's SAEHD training as a task for the same `Trainer`, option for option: src and dst face sets, DSSIM + MSE + mask losses inside the blurred face mask, eyes-and-mouth priority, style losses, the U-Net patch GAN with its regularisers, the "true face" code discriminator, pretraining, the five-column preview, and swapping a folder of faces.
- `dfl_gan.tasks`: What is trained, as objects: the spec's GAN (noise → face) and the autoencoder with a discriminator. A task builds its networks (or takes yours), draws its batches, runs its forward pass, names its loss terms and logs, and draws its preview; the `Trainer` runs any of them.
- `dfl_gan.tensorboard`: A training callback that writes a run to TensorBoard: every number of every step as a curve, grouped by family, knob changes and incidents as text at their step, previews as images; read in bulk so a GPU never waits, and resumable without duplicate steps.
- `dfl_gan.train`: The `Trainer`: one `step()` of the two-player game, one `fit(n, cbs)` loop with callbacks, knobs that act between steps, and NaN protection; driven by the CLI, the panel and the tests alike.
- `dfl_gan.video`: Frames in and out: decoding a clip or reading a folder of frames, and encoding merged frames back into a video at the source frame rate, with PyAV (FFmpeg).
- `dfl_gan.widgets`: The training panel: step, run, pause and stop a `Trainer` from a notebook, turn its knobs while it trains, and watch the D/G balance, every loss term and the previews update in place."""

__version__ = "0.1.0"
