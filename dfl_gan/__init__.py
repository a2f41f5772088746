"""DeepFaceLab's GAN stage rebuilt as a literate, interactive PyTorch toolkit

Modules:

- `dfl_gan.augment`: DeepFaceLab's training augmentation (random warp, affine, flips, HSV jitter) and colour transfer (RCT, LCT), batched in torch on the training device.
- `dfl_gan.data`: Face folders loaded once into memory, DeepFaceLab's DFLJPG metadata read without trusting it, masks, built-in demo faces, and an infinite, resumable batch sampler."""

__version__ = "0.1.0"
