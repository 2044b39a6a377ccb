"""The optimization loop, on accelerate.

One optimizer step is ``gradient_step`` micro-batches of ``batch_size`` pictures (per process). Each draws its
pictures, flips, latents, prompts, noise and timesteps from generators keyed by the run's seed and the
micro-batch's global number (:mod:`.randomness`), so a run resumed at a save continues exactly as the
uninterrupted run did, and the processes of a multi-process run see different pictures.

The frozen UNet is kept out of the module accelerate prepares: :class:`Trainee` holds the network's modules
as its parameters and calls the UNet in its ``forward``, so that DDP (several processes) synchronises the
network's gradients (the network runs inside the UNet's attention processors, which DDP would otherwise
never see) and autocast (mixed precision) covers the whole forward pass.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from pathlib import Path

import torch

from ..hypernetwork import Hypernetwork
from ..hypernetwork.attention import KWARG, ActiveHypernetworks
from ..prompt.conditioning import encode_texts
from . import checkpoints
from .config import TrainingConfig
from .dataset import Picture, batch_plan
from .latents import LatentCache
from .log import append_loss_row
from .loss import diffusion_loss, noise_scheduler, noisy_and_target, snr_weights
from .monitor import TrainingMonitor
from .preview import make_preview, preview_request
from .randomness import numpy_rng, torch_generator
from .result import TrainingResult
from .schedule import Schedule
from .templates import PromptMaker

log = logging.getLogger(__name__)


class Trainee(torch.nn.Module):
    """The network's modules as parameters, and a forward pass that runs the frozen UNet with them."""

    def __init__(self, network: Hypernetwork, unet):
        super().__init__()
        self.parts = torch.nn.ModuleList([m for size in sorted(network.layers) for m in network.layers[size]])
        self.__dict__["network"] = network  # not submodules: DDP must neither broadcast nor bucket the UNet
        self.__dict__["unet"] = unet

    def forward(self, noisy, timesteps, context, added_cond_kwargs=None):
        active = ActiveHypernetworks([(self.network, 1.0)], expected_calls=1)
        active.pin(context)  # the text context's K/V transform: once per step, not once per layer
        return self.unet(noisy, timesteps, encoder_hidden_states=context, added_cond_kwargs=added_cond_kwargs,
                         cross_attention_kwargs={KWARG: active}).sample


@dataclasses.dataclass
class LoopSetup:
    config: TrainingConfig
    model: object
    network: Hypernetwork
    source: Path
    pictures: list[Picture]
    prompts: PromptMaker
    schedule: Schedule
    clip: Schedule | None
    first_step: int
    last_step: int
    folder: Path
    accelerator: object
    job: object = None
    monitor: TrainingMonitor | None = None
    stop_event: object = None  # a threading.Event the command line sets on Ctrl+C


class Loop:
    """Runs one training from :class:`LoopSetup` to its :class:`~extension.training.result.TrainingResult`."""

    def __init__(self, setup: LoopSetup):
        self.s = setup
        self.config = setup.config
        self.accelerator = setup.accelerator
        self.pipe = setup.model.pipe
        self.monitor = setup.monitor or TrainingMonitor()
        self.seed = int(self.config.seed)
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        self.files: list[str] = []
        self.last_good: tuple[int, Path] | None = None

    # -- inputs ---------------------------------------------------------------------------------------------
    def _prepare_inputs(self) -> None:
        config, pictures, device = self.config, self.s.pictures, self.accelerator.device
        self.latents = LatentCache(self.pipe.vae, pictures, method=config.latent_sampling_method, flip=config.flip,
                                   seed=self.seed, device=device)
        self.sizes = [p.size for p in pictures]
        self.weights = [p.weight for p in pictures]
        self.captions = [p.caption for p in pictures]
        for picture in pictures:
            picture.pixels = None  # encoded: the pixels are not needed any more
        self.batches_per_epoch = len(batch_plan(self.sizes, config.batch_size, self.seed, 0))
        self._epoch_cache: dict[int, list[list[int]]] = {}
        self.fixed_prompts = None
        self.text_cache: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        if not self.s.prompts.varies:
            # AUTOMATIC1111: one template line per picture for the whole run, its encoding computed once
            self.fixed_prompts = [self.s.prompts.prompt(caption, self.seed, "line", index)
                                  for index, caption in enumerate(self.captions)]
            self._encode(sorted(set(self.fixed_prompts)))

    def _encode(self, texts: list[str]) -> None:
        missing = [t for t in dict.fromkeys(texts) if t not in self.text_cache]
        for start in range(0, len(missing), 16):
            chunk = missing[start:start + 16]
            embeds, pooled = encode_texts(self.pipe, chunk, clip_skip=self.config.clip_skip,
                                          architecture=getattr(self.s.model, "architecture", None))
            for row, text in enumerate(chunk):
                self.text_cache[text] = (embeds[row:row + 1], None if pooled is None else pooled[row:row + 1])

    def _batch(self, micro: int) -> list[int]:
        epoch, position = divmod(micro, self.batches_per_epoch)
        if epoch not in self._epoch_cache:
            self._epoch_cache = {epoch: batch_plan(self.sizes, self.config.batch_size, self.seed, epoch)}
        return self._epoch_cache[epoch][position]

    def _inputs(self, micro: int):
        indices = self._batch(micro)
        flips = [bool(self.config.flip and numpy_rng(self.seed, "flip", micro, i).random() < 0.5) for i in indices]
        latents = torch.stack([self.latents.sample(i, f, micro) for i, f in zip(indices, flips)])
        if self.fixed_prompts is not None:
            texts = [self.fixed_prompts[i] for i in indices]
        else:
            texts = [self.s.prompts.prompt(self.captions[i], self.seed, "text", micro, i) for i in indices]
            if len(self.text_cache) > 4096:
                self.text_cache.clear()
        self._encode(texts)
        parts = [self.text_cache[t] for t in texts]
        length = max(e.shape[1] for e, _ in parts)
        if any(e.shape[1] != length for e, _ in parts):  # different chunk counts: encode this batch together
            context, pooled = encode_texts(self.pipe, texts, clip_skip=self.config.clip_skip,
                                           architecture=getattr(self.s.model, "architecture", None))
        else:
            context = torch.cat([e for e, _ in parts])
            pooled = torch.cat([p for _, p in parts]) if parts[0][1] is not None else None
        weight = None
        if self.config.use_weight:
            weight = torch.stack([self.weights[i].flip(-1) if f else self.weights[i] for i, f in zip(indices, flips)])
        return indices, texts, latents, context, pooled, weight

    def _added_cond(self, indices: list[int], pooled, dtype, device):
        if pooled is None:
            return None
        time_ids = torch.tensor([[h, w, 0, 0, h, w] for w, h in (self.sizes[i] for i in indices)], dtype=dtype,
                                device=device)
        return {"text_embeds": pooled.to(device, dtype), "time_ids": time_ids}

    # -- the run --------------------------------------------------------------------------------------------
    def run(self):
        s, config, accelerator, network = self.s, self.config, self.accelerator, self.s.network
        unet = self.pipe.unet
        device = accelerator.device
        self.monitor.set_state("preparing", "encoding the pictures")
        self._prepare_inputs()
        network.to(device)
        network.train()
        parameters = network.weights()
        optimizer = getattr(torch.optim, config.optimizer)(parameters, lr=s.schedule.value_at(s.first_step))
        if network.optimizer_state_dict and network.optimizer_name == config.optimizer:
            try:
                optimizer.load_state_dict(network.optimizer_state_dict)
            except (ValueError, KeyError, RuntimeError) as exc:
                log.warning("the saved optimizer state does not fit (%s); starting it afresh", exc)
        network.optimizer_name = config.optimizer
        trainee, optimizer = accelerator.prepare(Trainee(network, unet), optimizer)
        scheduler = noise_scheduler(self.pipe)
        was_checkpointing = bool(getattr(unet, "gradient_checkpointing", False))
        if config.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        unet_dtype = next(unet.parameters()).dtype
        self.monitor.begin(s.first_step, s.last_step)
        if s.job is not None:
            s.job.job_count = s.last_step - s.first_step
        status, message, recent = "finished", "", []
        steps_per_epoch = max(1, self.batches_per_epoch // config.gradient_step)
        step = s.first_step
        # The UNet is frozen for the run (loaders leave its parameters trainable): gradients reach the network
        # through it, and nothing computes or keeps gradients of its 860 M weights. Restored afterwards.
        thawed = [parameter for parameter in unet.parameters() if parameter.requires_grad]
        for parameter in thawed:
            parameter.requires_grad_(False)
        try:
            while step < s.last_step:
                learn_rate = s.schedule.value_at(step)
                for group in optimizer.param_groups:
                    group["lr"] = learn_rate
                total, first_prompt = 0.0, ""
                for j in range(config.gradient_step):
                    micro = (step * config.gradient_step + j) * self.world + self.rank
                    indices, texts, latents, context, pooled, weight = self._inputs(micro)
                    first_prompt = first_prompt or texts[0]
                    noise = torch.randn(latents.shape, generator=torch_generator(self.seed, "noise", micro)).to(device)
                    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(indices),),
                                              generator=torch_generator(self.seed, "timestep", micro)).to(device)
                    noisy, target = noisy_and_target(scheduler, latents, noise, timesteps)
                    sync = contextlib.nullcontext() if j == config.gradient_step - 1 else accelerator.no_sync(trainee)
                    with sync:
                        prediction = trainee(noisy.to(unet_dtype), timesteps, context.to(device, unet_dtype),
                                             self._added_cond(indices, pooled, unet_dtype, device))
                        sample_weight = (snr_weights(scheduler, timesteps, config.snr_gamma) if config.snr_gamma
                                         else None)
                        loss = diffusion_loss(prediction, target, weight, sample_weight) / config.gradient_step
                        accelerator.backward(loss)
                    total += float(loss.detach())
                mean_loss = float(accelerator.reduce(torch.tensor(total, device=device), "mean")) \
                    if self.world > 1 else total
                if not math.isfinite(mean_loss):
                    optimizer.zero_grad(set_to_none=True)
                    status = "stopped"
                    where = (f"{self.last_good[1]} (step {self.last_good[0]})" if self.last_good else
                             f"{s.source} (step {s.first_step}, unchanged)")
                    message = (f"the loss became {mean_loss} at step {step + 1} (learning rate {learn_rate:g}); "
                               f"training stopped and nothing newer was saved. The last good save is {where}. "
                               f"Lower the learning rate.")
                    break
                if s.clip is not None and accelerator.sync_gradients:
                    value = s.clip.value_at(step)
                    if config.clip_grad_mode == "value":
                        accelerator.clip_grad_value_(parameters, value)
                    else:
                        accelerator.clip_grad_norm_(parameters, value)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                network.step = step
                recent = (recent + [mean_loss])[-max(1, len(s.pictures)):]
                self.monitor.add_loss(step, mean_loss, learn_rate)
                if s.job is not None:
                    s.job.update(0, 0, job_no=step - s.first_step,
                                 textinfo=f"step {step}/{s.last_step}, loss {mean_loss:.5f}, lr {learn_rate:g}")
                if accelerator.is_main_process and config.training_write_csv_every and \
                        step % config.training_write_csv_every == 0:
                    append_loss_row(s.folder, step, steps_per_epoch, sum(recent) / len(recent), learn_rate)
                if config.save_hypernetwork_every and step % config.save_hypernetwork_every == 0:
                    if not self._save(optimizer, step, copy=True):
                        status, message = "stopped", f"the weights hold NaN or inf at step {step}; not saved"
                        break
                if accelerator.is_main_process and config.create_image_every and \
                        step % config.create_image_every == 0:
                    self._preview(step, first_prompt)
                if self._stop_requested():
                    status = "interrupted"
                    break
            if status in ("finished", "interrupted") and (self.last_good is None or self.last_good[0] != step):
                if not self._save(optimizer, step, copy=False):
                    status, message = "stopped", f"the weights hold NaN or inf at step {step}; not saved"
        finally:
            if config.gradient_checkpointing and not was_checkpointing:
                unet.disable_gradient_checkpointing()
            for parameter in thawed:
                parameter.requires_grad_(True)
            network.eval()
            accelerator.free_memory()
        if status == "finished":
            message = f"finished at step {step}; saved to {s.source}"
        elif status == "interrupted":
            message = f"interrupted at step {step}; saved to {s.source}"
        self.monitor.set_state(status, message)
        return TrainingResult(status, message, str(s.source), step if status != "stopped" else
                              (self.last_good[0] if self.last_good else s.first_step), str(s.folder), self.files,
                              network)

    def _stop_requested(self) -> bool:
        local = bool((self.s.job is not None and self.s.job.interrupted.is_set())
                     or (self.s.stop_event is not None and self.s.stop_event.is_set()))
        if self.world == 1:
            return local
        flag = torch.tensor(1.0 if local else 0.0, device=self.accelerator.device)
        return float(self.accelerator.reduce(flag, "sum")) > 0  # every process stops at the same step

    def _save(self, optimizer, step: int, *, copy: bool) -> bool:
        """Save the models-folder file (and a log copy); False, saving nothing, when a weight is not finite."""
        network = self.s.network
        if not all(torch.isfinite(p).all() for p in network.weights()):
            return False
        if self.accelerator.is_main_process:
            state = optimizer.state_dict() if self.config.save_optimizer_state else None
            if copy:
                path = checkpoints.copy_path(self.s.folder, network.name, step, self.s.source.suffix)
                checkpoints.save(network, path, state)
                self.files.append(str(path))
                self.monitor.add_file(path)
            checkpoints.save(network, self.s.source, state)
        self.last_good = (step, self.s.source)  # on every process: all of them must agree on the final save
        self.accelerator.wait_for_everyone()
        return True

    def _preview(self, step: int, prompt: str) -> None:
        network = self.s.network
        request = preview_request(self.config, prompt, self.config.training_width, self.config.training_height)
        path = checkpoints.preview_path(self.s.folder, network.name, step)
        try:
            make_preview(network, network.name, self.s.model, request, path)
        except Exception as exc:  # noqa: BLE001 - a failed preview must not end the run
            log.warning("preview at step %d failed: %s", step, exc)
            return
        self.files.append(str(path))
        self.monitor.add_preview(step, path)
