"""The pictures' latents, encoded once by the VAE and sampled as AUTOMATIC1111's latent sampling says.

- ``once``: one sample of each picture's posterior, drawn when it is encoded and reused all run;
- ``deterministic``: the posterior mean;
- ``random``: a new sample every time a picture is used.

Latents are scaled by the VAE's scaling factor, as the UNet was trained on them. With horizontal flip on, each
picture is also encoded flipped (a flipped latent is not the latent of the flipped picture), and each use
picks one of the two with p = 0.5.
"""
from __future__ import annotations

import torch

from .dataset import Picture
from .randomness import torch_generator


class LatentCache:
    """Posterior means and spreads of every picture (and its mirror image), on ``device``, in fp32."""

    def __init__(self, vae, pictures: list[Picture], *, method: str, flip: bool, seed: int, device,
                 batch_size: int = 8):
        self.method, self.flip, self.seed = method, flip, seed
        self.device = torch.device(device)
        config = vae.config
        self.scale = float(getattr(config, "scaling_factor", 1.0) or 1.0)
        self.shift = float(getattr(config, "shift_factor", 0.0) or 0.0)
        variants = (False, True) if flip else (False,)
        self.mean: dict[tuple[int, bool], torch.Tensor] = {}
        self.std: dict[tuple[int, bool], torch.Tensor] = {}
        param = next(vae.parameters())
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, picture in enumerate(pictures):
            by_size.setdefault(picture.size, []).append(index)
        with torch.no_grad():
            for indices in by_size.values():
                for start in range(0, len(indices), batch_size):
                    chunk = indices[start:start + batch_size]
                    pixels = torch.stack([pictures[i].pixels for i in chunk])
                    for flipped in variants:
                        batch = pixels.flip(-1) if flipped else pixels
                        posterior = vae.encode(batch.to(param.device, param.dtype)).latent_dist
                        for row, index in enumerate(chunk):
                            self.mean[index, flipped] = posterior.mean[row].float().to(self.device)
                            self.std[index, flipped] = posterior.std[row].float().to(self.device)
        self._once: dict[tuple[int, bool], torch.Tensor] = {}
        if method == "once":
            for key, mean in self.mean.items():
                noise = torch.randn(mean.shape, generator=torch_generator(seed, "once", key[0], int(key[1])))
                self._once[key] = mean + self.std[key] * noise.to(self.device)

    def __len__(self) -> int:
        return len({index for index, _ in self.mean})

    def sample(self, index: int, flipped: bool, *keys) -> torch.Tensor:
        """The scaled latent of picture ``index`` for one use (``keys`` name the use, for ``random``)."""
        key = (index, flipped and self.flip)
        if self.method == "once":
            latent = self._once[key]
        elif self.method == "deterministic":
            latent = self.mean[key]
        else:
            noise = torch.randn(self.mean[key].shape, generator=torch_generator(self.seed, "latent", index, *keys))
            latent = self.mean[key] + self.std[key] * noise.to(self.device)
        return (latent - self.shift) * self.scale
