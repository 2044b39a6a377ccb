"""The training loss: AUTOMATIC1111's (and diffusers') plain diffusion objective.

A fresh timestep and noise for every sample of every step; the UNet predicts the noise (epsilon models) or
``v`` (v-prediction models, e.g. SD 2.x 768-v); the loss is the mean squared error over every element,
optionally weighted per latent pixel (PNG alpha as loss weight). Beyond AUTOMATIC1111, an option weights each
sample by its noise level (min-SNR-gamma), which learns a style in fewer steps.
"""
from __future__ import annotations

import torch

_SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                  "prediction_type", "timestep_spacing", "steps_offset", "rescale_betas_zero_snr")


def noise_scheduler(pipe):
    """A ``DDPMScheduler`` with the model's training betas and prediction type (its sampler may differ)."""
    from diffusers import DDPMScheduler

    config = {key: value for key, value in dict(pipe.scheduler.config).items() if key in _SCHEDULE_KEYS}
    return DDPMScheduler(**config)


def noisy_and_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(noisy latents, what the UNet must predict)`` for ``timesteps``."""
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if scheduler.config.prediction_type == "v_prediction":
        return noisy, scheduler.get_velocity(latents, noise, timesteps)
    if scheduler.config.prediction_type != "epsilon":
        raise ValueError(f"prediction type {scheduler.config.prediction_type!r} is not supported for training")
    return noisy, noise


def snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weights per sample (Hang et al., 2023; diffusers' ``--snr_gamma``): ``min(SNR, gamma) / SNR``
    for epsilon targets, ``min(SNR, gamma) / (SNR + 1)`` for v. Nearly noiseless steps, which say little about
    composition or style and dominate the plain loss's gradients, count less."""
    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = alphas / (1 - alphas)
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1) if scheduler.config.prediction_type == "v_prediction" else clipped / snr


def diffusion_loss(prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                   sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over every element, in fp32; ``weight`` (batch, H, W) scales each latent pixel,
    ``sample_weight`` (batch,) each sample (e.g. :func:`snr_weights`)."""
    error = (prediction.float() - target.float()) ** 2
    if weight is not None:
        error = error * weight.to(error.device, error.dtype).unsqueeze(1)
    if sample_weight is None:
        return error.mean()
    return (error.mean(dim=tuple(range(1, error.dim()))) * sample_weight.to(error.device, error.dtype)).mean()
