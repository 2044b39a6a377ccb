"""Checkpoints: single files in AUTOMATIC1111's layout load offline to the same weights and images as the
diffusers folder they were written from; detection, bad files, device/precision, the manager."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import gc  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402
import weakref  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from extension.checkpoints import convert, detect, weights  # noqa: E402
from extension.demo.pretrained import builtin_model  # noqa: E402
from extension.fileio import sha256_file  # noqa: E402
from extension.errors import ModelError  # noqa: E402
from extension.checkpoints import (ModelManager, detect_architecture, load_diffusers_folder,  # noqa: E402
                                   load_single_file, resolve_device, resolve_dtype)
from extension.checkpoints.convert import CONFIGS_DIR  # noqa: E402
from extension.tokenizer import clip_tokenizer  # noqa: E402,F401
from builders import tiny_pipeline  # noqa: E402

PROMPT = "a photo of a cat"


# -- writing diffusers weights in the original LDM (AUTOMATIC1111 single-file) key layout ----------------------
_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
           ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]


def unet_to_ldm(state, config):
    """diffusers UNet keys -> ``model.diffusion_model.*`` (the inverse of diffusers' convert_ldm_unet_checkpoint)."""
    n, per = len(config["block_out_channels"]), config["layers_per_block"]
    prefixes = {"time_embedding.linear_1.": ("time_embed.0.", False), "time_embedding.linear_2.": ("time_embed.2.", False),
                "add_embedding.linear_1.": ("label_emb.0.0.", False), "add_embedding.linear_2.": ("label_emb.0.2.", False),
                "conv_in.": ("input_blocks.0.0.", False), "conv_norm_out.": ("out.0.", False),
                "conv_out.": ("out.2.", False), "mid_block.resnets.0.": ("middle_block.0.", True),
                "mid_block.attentions.0.": ("middle_block.1.", False), "mid_block.resnets.1.": ("middle_block.2.", True)}
    for i in range(n):
        for j in range(per):
            prefixes[f"down_blocks.{i}.resnets.{j}."] = (f"input_blocks.{1 + i * (per + 1) + j}.0.", True)
            prefixes[f"down_blocks.{i}.attentions.{j}."] = (f"input_blocks.{1 + i * (per + 1) + j}.1.", False)
        for j in range(per + 1):
            prefixes[f"up_blocks.{i}.resnets.{j}."] = (f"output_blocks.{i * (per + 1) + j}.0.", True)
            prefixes[f"up_blocks.{i}.attentions.{j}."] = (f"output_blocks.{i * (per + 1) + j}.1.", False)
        if i < n - 1:
            prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = (f"input_blocks.{(i + 1) * (per + 1)}.0.op.", False)
            attn = "CrossAttn" in config["up_block_types"][i]
            prefixes[f"up_blocks.{i}.upsamplers.0."] = (f"output_blocks.{i * (per + 1) + per}.{2 if attn else 1}.", False)
    out = {}
    for key, value in state.items():
        prefix = next(p for p in sorted(prefixes, key=len, reverse=True) if key.startswith(p))
        new_prefix, resnet = prefixes[prefix]
        rest = key[len(prefix):]
        if resnet:
            for a, b in _RESNET:
                rest = rest.replace(a, b)
        out["model.diffusion_model." + new_prefix + rest] = value
    return out


def vae_to_ldm(state, config):
    """diffusers AutoencoderKL keys -> ``first_stage_model.*`` (attention projections as 1x1 convs)."""
    n = len(config["block_out_channels"])
    out = {}
    for key, value in state.items():
        k = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", key)
        k = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", k)
        k = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{n - 1 - int(m[1])}.block.", k)
        k = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"decoder.up.{n - 1 - int(m[1])}.upsample.", k)
        k = re.sub(r"\.mid_block\.resnets\.(\d+)\.", lambda m: f".mid.block_{int(m[1]) + 1}.", k)
        if ".mid_block.attentions.0." in k:
            k = k.replace(".mid_block.attentions.0.", ".mid.attn_1.")
            for a, b in (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."),
                         ("to_out.0.", "proj_out.")):
                k = k.replace(a, b)
            if value.ndim == 2:
                value = value[:, :, None, None]
        k = k.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        out["first_stage_model." + k] = value
    return out


def clip_to_ldm(state, prefix):
    return {prefix + "text_model." + k.removeprefix("text_model."): v for k, v in state.items()}


def openclip_to_ldm(state, prefix):
    """CLIPTextModel(WithProjection) keys -> OpenCLIP keys (fused in_proj, transposed text_projection)."""
    s = {k.removeprefix("text_model."): v for k, v in state.items()}
    out = {prefix + "token_embedding.weight": s["embeddings.token_embedding.weight"],
           prefix + "positional_embedding": s["embeddings.position_embedding.weight"],
           prefix + "ln_final.weight": s["final_layer_norm.weight"], prefix + "ln_final.bias": s["final_layer_norm.bias"]}
    if "text_projection.weight" in s:
        out[prefix + "text_projection"] = s["text_projection.weight"].T.contiguous()
    layers = {int(k.split(".")[2]) for k in s if k.startswith("encoder.layers.")}
    for n in sorted(layers):
        d, o = f"encoder.layers.{n}.", f"{prefix}transformer.resblocks.{n}."
        for kind in ("weight", "bias"):
            out[o + f"attn.in_proj_{kind}"] = torch.cat([s[d + f"self_attn.{x}_proj.{kind}"] for x in "qkv"])
            out[o + f"attn.out_proj.{kind}"] = s[d + f"self_attn.out_proj.{kind}"]
            out[o + f"ln_1.{kind}"] = s[d + f"layer_norm1.{kind}"]
            out[o + f"ln_2.{kind}"] = s[d + f"layer_norm2.{kind}"]
            out[o + f"mlp.c_fc.{kind}"] = s[d + f"mlp.fc1.{kind}"]
            out[o + f"mlp.c_proj.{kind}"] = s[d + f"mlp.fc2.{kind}"]
    return out


def extra_openclip_layer(ldm, prefix, n):
    """A copy of the last resblock as resblock ``n`` (real SD 2.x files carry a 24th layer that is not used)."""
    last = f"{prefix}transformer.resblocks.{n - 1}."
    return {k.replace(last, f"{prefix}transformer.resblocks.{n}."): v.clone() * 3 for k, v in ldm.items()
            if k.startswith(last)}


def pipeline_to_ldm(pipe, family):
    state = {**unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config), **vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config)}
    if family == "sd1":
        state.update(clip_to_ldm(pipe.text_encoder.state_dict(), "cond_stage_model.transformer."))
    elif family == "sd2":
        state.update(openclip_to_ldm(pipe.text_encoder.state_dict(), "cond_stage_model.model."))
    else:
        state.update(clip_to_ldm(pipe.text_encoder.state_dict(), "conditioner.embedders.0.transformer."))
        state.update(openclip_to_ldm(pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model."))
    return state


def write_config_folder(diffusers_dir: Path, target: Path):
    """A NAME.config/ folder: the diffusers folder without weights and tokenizers."""
    shutil.copytree(diffusers_dir, target, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "tokenizer*"))


def render(pipe, size=64):
    generator = torch.Generator("cpu").manual_seed(1234)
    return pipe(PROMPT, num_inference_steps=2, height=size, width=size, generator=generator, output_type="np").images


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    """A checkpoints folder: an SD1-shaped tiny model as a .safetensors, a .ckpt and a diffusers folder,
    plus bad files under bad/."""
    root = tmp_path_factory.mktemp("Stable-diffusion")
    pipe = tiny_pipeline("sd1")
    pipe.save_pretrained(root / "tiny-diffusers")
    state = pipeline_to_ldm(pipe, "sd1")
    state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    save_file({k: v.contiguous() for k, v in state.items()}, str(root / "tiny.safetensors"))
    write_config_folder(root / "tiny-diffusers", root / "tiny.config")

    # an old-style .ckpt: {"state_dict": ..., "global_step": numpy int, "callbacks": {lightning object}}
    lightning = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:
        def __init__(self):
            self.best_model_path = "/somewhere/last.ckpt"
            self.best_model_score = torch.tensor(0.5)

    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = lightning.__name__, "ModelCheckpoint"
    lightning.ModelCheckpoint = ModelCheckpoint
    fake_modules = {"pytorch_lightning": types.ModuleType("pytorch_lightning"),
                    "pytorch_lightning.callbacks": types.ModuleType("pytorch_lightning.callbacks"),
                    lightning.__name__: lightning}
    assert not set(fake_modules) & set(sys.modules)
    sys.modules.update(fake_modules)
    try:
        (root / "old").mkdir()
        torch.save({"state_dict": state, "global_step": np.int64(470000), "epoch": 6,
                    "callbacks": {ModelCheckpoint: ModelCheckpoint()}}, root / "old" / "tiny.ckpt")
    finally:
        for name in fake_modules:
            del sys.modules[name]
    write_config_folder(root / "tiny-diffusers", root / "old" / "tiny.config")

    bad = root / "bad"
    bad.mkdir()
    data = (root / "tiny.safetensors").read_bytes()
    (bad / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (bad / "garbage.ckpt").write_bytes(b"this is not a pickle at all" * 10)
    torch.save({768: ({"linear.0.weight": torch.zeros(2, 768)}, {"linear.0.weight": torch.zeros(2, 768)}),
                "name": "hn", "layer_structure": [1, 2, 1]}, bad / "hypernet.ckpt")
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 16)},
              str(bad / "lora.safetensors"))

    class Evil:
        def __reduce__(self):
            return (open, (str(root / "PWNED"), "w"))

    torch.save({"state_dict": {"x": torch.zeros(1)}, "evil": Evil()}, bad / "evil.ckpt")
    return root


@pytest.fixture(scope="module")
def manager(ckpt_dir, tmp_path_factory):
    return ModelManager(ckpt_dir, device="cpu", precision="fp32", builtin=builtin_model(tmp_path_factory.mktemp("no-demo")))


# -- single files: same weights, same images -----------------------------------------------------------------
def test_reverse_layout_is_what_diffusers_converts_back(ckpt_dir):
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    pipe = tiny_pipeline("sd1")
    state = pipeline_to_ldm(pipe, "sd1")
    unet, vae = convert_ldm_unet_checkpoint(state, pipe.unet.config), convert_ldm_vae_checkpoint(state, pipe.vae.config)
    assert unet.keys() == pipe.unet.state_dict().keys()
    assert vae.keys() == pipe.vae.state_dict().keys()


def test_single_file_gives_the_same_weights_and_images_as_the_diffusers_folder(ckpt_dir):
    folder_pipe, folder_arch = load_diffusers_folder(ckpt_dir / "tiny-diffusers")
    file_pipe, file_arch = load_single_file(ckpt_dir / "tiny.safetensors")
    assert (folder_arch, file_arch) == ("sd1", "sd1")
    for name in ("unet", "vae", "text_encoder"):
        assert_same_weights(getattr(folder_pipe, name), getattr(file_pipe, name))
    assert file_pipe.tokenizer(PROMPT).input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    np.testing.assert_array_equal(render(folder_pipe), render(file_pipe))


def test_old_ckpt_with_training_metadata_loads_the_same_weights(ckpt_dir):
    ckpt_pipe, arch = load_single_file(ckpt_dir / "old" / "tiny.ckpt")
    file_pipe, _ = load_single_file(ckpt_dir / "tiny.safetensors")
    assert arch == "sd1"
    for name in ("unet", "vae", "text_encoder"):
        assert_same_weights(getattr(ckpt_pipe, name), getattr(file_pipe, name))


def test_sdxl_single_file_matches_its_diffusers_folder(tmp_path):
    pipe = tiny_pipeline("sdxl")
    pipe.save_pretrained(tmp_path / "xl")
    state = pipeline_to_ldm(pipe, "sdxl")
    state["conditioner.embedders.1.model.logit_scale"] = torch.tensor(4.6)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "xl.safetensors"))
    write_config_folder(tmp_path / "xl", tmp_path / "xl.config")
    folder_pipe, folder_arch = load_diffusers_folder(tmp_path / "xl")
    file_pipe, file_arch = load_single_file(tmp_path / "xl.safetensors")
    assert (folder_arch, file_arch) == ("sdxl", "sdxl")
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        assert_same_weights(getattr(folder_pipe, name), getattr(file_pipe, name))
    np.testing.assert_array_equal(render(folder_pipe, 32), render(file_pipe, 32))


def test_sd2_single_file_drops_the_last_openclip_layer_and_reads_v_from_the_yaml(tmp_path):
    pipe = tiny_pipeline("sd2")
    pipe.save_pretrained(tmp_path / "two")
    state = pipeline_to_ldm(pipe, "sd2")
    prefix = "cond_stage_model.model."
    state.update(extra_openclip_layer(state, prefix, 2))  # like the unused 24th layer of real SD 2.x files
    state[prefix + "text_projection"] = torch.randn(24, 24)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "two.safetensors"))
    write_config_folder(tmp_path / "two", tmp_path / "two.config")
    file_pipe, arch = load_single_file(tmp_path / "two.safetensors")
    assert arch == "sd2" and file_pipe.scheduler.config.prediction_type == "epsilon"
    assert file_pipe.tokenizer.pad_token == "!"
    for name in ("unet", "vae", "text_encoder"):
        assert_same_weights(getattr(pipe, name), getattr(file_pipe, name))
    (tmp_path / "two.yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    v_pipe, v_arch = load_single_file(tmp_path / "two.safetensors")
    assert v_arch == "sd2-v" and v_pipe.scheduler.config.prediction_type == "v_prediction"


# -- detection on real-sized key sets (meta tensors: no memory) ----------------------------------------------
def _real_shaped_state(arch):
    """The LDM state dict a real checkpoint of ``arch`` has, as meta tensors, from the shipped configs."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CONFIGS_DIR / arch
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(config), subfolder="unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(config), subfolder="vae"))
        te = CLIPTextModel(CLIPTextConfig.from_pretrained(str(config / "text_encoder")))
        te2 = (CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(str(config / "text_encoder_2")))
               if arch == "sdxl" else None)
    fake = types.SimpleNamespace(unet=unet, vae=vae, text_encoder=te, text_encoder_2=te2)
    family = arch.split("-")[0]
    state = pipeline_to_ldm(fake, family)
    if family == "sd2":
        state.update(extra_openclip_layer(state, "cond_stage_model.model.", 23))
        state["cond_stage_model.model.text_projection"] = torch.empty(1024, 1024, device="meta")
    if family == "sd1":
        state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.empty(1, 77, device="meta")
    state["model_ema.decay"] = torch.empty((), device="meta")
    return state


@pytest.mark.parametrize("arch, layers", [("sd1", 12), ("sd2", 24), ("sdxl", 32)])
def test_real_sized_key_sets_are_detected_and_convert_completely(arch, layers):
    state = _real_shaped_state(arch)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert detect_architecture(shapes) == arch
    assert detect.cross_attention_width(shapes) == {"sd1": 768, "sd2": 1024, "sdxl": 2048}[arch]
    components = convert._build_components(state, CONFIGS_DIR / arch, arch, f"real-{arch}")  # raises if incomplete
    assert components["unet"].config.cross_attention_dim == {"sd1": 768, "sd2": 1024, "sdxl": 2048}[arch]
    text_layers = (components.get("text_encoder_2") or components["text_encoder"]).config.num_hidden_layers
    assert text_layers == (23 if arch == "sd2" else layers)


def test_shipped_configs_have_the_real_parameter_counts():
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    expected = {"sd1": 859_520_964, "sd2": 865_910_724, "sd2-v": 865_910_724, "sdxl": 2_567_463_684}
    for arch, count in expected.items():
        with init_empty_weights():
            unet = UNet2DConditionModel.from_config(
                UNet2DConditionModel.load_config(str(CONFIGS_DIR / arch), subfolder="unet"))
        assert sum(p.numel() for p in unet.parameters()) == count, arch
        assert not list((CONFIGS_DIR / arch).rglob("tokenizer*")), "configs must not ship tokenizer files"
    scheduler = json.loads((CONFIGS_DIR / "sd2-v" / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "v_prediction"


@pytest.mark.parametrize("keys, message", [
    ({"model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3),
      "cond_stage_model.transformer.text_model.x": (1,)}, "inpainting"),
    ({"model.diffusion_model.input_blocks.0.0.weight": (384, 4, 3, 3),
      "conditioner.embedders.0.model.positional_embedding": (77, 1280)}, "refiner"),
    ({"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3)}, "no text encoder"),
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320)}, "LoRA"),
    ({"768.k.linear.0.weight": (1536, 768)}, "hypernetwork"),
    ({"string_to_param": (1, 768)}, "embedding"),
    ({"encoder.down.0.block.0.conv1.weight": (1,), "quant_conv.weight": (1,)}, "VAE"),
])
def test_what_is_not_a_supported_checkpoint_is_refused_by_name(keys, message):
    with pytest.raises(ModelError, match=message) as err:
        detect_architecture(keys, "some/file.safetensors")
    assert "some/file.safetensors" in str(err.value)


# -- bad files -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, message", [
    ("bad/truncated.safetensors", "truncated or corrupt"),
    ("bad/garbage.ckpt", "corrupt|not a readable"),
    ("bad/hypernet.ckpt", "hypernetwork"),
    ("bad/lora.safetensors", "LoRA"),
    ("bad/evil.ckpt", "refused to load.*nothing in it was executed"),
])
def test_bad_files_raise_model_errors_naming_the_file(ckpt_dir, name, message):
    with pytest.raises(ModelError, match=message) as err:
        load_single_file(ckpt_dir / name)
    assert name.split("/")[1] in str(err.value)
    assert not (ckpt_dir / "PWNED").exists()


def test_mismatched_shapes_without_a_config_folder_say_what_to_do(tmp_path, ckpt_dir):
    shutil.copy(ckpt_dir / "tiny.safetensors", tmp_path / "odd.safetensors")  # no odd.config/ beside it
    with pytest.raises(ModelError, match=r"cross-attention width 24 .*odd\.config/"):
        load_single_file(tmp_path / "odd.safetensors")


# -- device and precision ------------------------------------------------------------------------------------
def test_device_and_precision_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype(None, "cuda") == torch.float16
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert resolve_dtype("fp32", "cuda") == torch.float32
    assert resolve_dtype("fp16", "cuda") == torch.float16
    with pytest.raises(ValueError, match="precision"):
        resolve_dtype("fp8", "cpu")
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            resolve_device("cuda")


# -- the manager ---------------------------------------------------------------------------------------------
def test_listing_finds_files_and_folders_but_not_config_sidecars(manager, ckpt_dir):
    infos = {i.name: i for i in manager.list_checkpoints()}
    assert {"tiny.safetensors", "tiny-diffusers", "old/tiny.ckpt", "bad/evil.ckpt"} <= set(infos)
    assert not any(name.endswith(".config") for name in infos)
    tiny = infos["tiny.safetensors"]
    assert (tiny.model_name, tiny.name_for_extra, tiny.kind) == ("tiny", "tiny", "single-file")
    assert tiny.filename == str(ckpt_dir / "tiny.safetensors") and tiny.config.endswith("tiny.config")
    assert infos["old/tiny.ckpt"].model_name == "old_tiny" and infos["tiny-diffusers"].kind == "diffusers"


def test_unknown_names_and_escaping_paths_are_model_errors(manager, ckpt_dir):
    with pytest.raises(ModelError, match="not found"):
        manager.load("nope")
    with pytest.raises(ModelError, match="outside the checkpoints folder"):
        manager.load("../escape.safetensors")
    with pytest.raises(ModelError, match="outside the checkpoints folder"):
        manager.load("/etc/passwd")


def test_load_switch_free_and_hash(manager, ckpt_dir):
    model = manager.load("tiny")
    assert (model.name, model.architecture, model.dtype) == ("tiny", "sd1", torch.float32)
    assert manager.current is model and manager.load("tiny.safetensors") is model
    assert model.attention_widths() == {16, 32, 24}
    assert model.self_attention_widths() == {16, 32} and model.cross_attention_width == 24
    assert model.shorthash == sha256_file(ckpt_dir / "tiny.safetensors")[:10]
    title = next(i.title for i in manager.list_checkpoints() if i.name == "tiny.safetensors")
    assert title == f"tiny.safetensors [{model.shorthash}]"
    assert manager.load(title) is model and manager.load(model.shorthash) is model
    unet = weakref.ref(model.pipe.unet)
    del model
    other = manager.load("tiny-diffusers")
    gc.collect()
    assert unet() is None, "the previous checkpoint is still in memory"
    assert (other.name, other.architecture) == ("tiny-diffusers", "sd1")


def test_a_failed_switch_keeps_or_restores_the_previous_model(manager):
    manager.load("old/tiny.ckpt")
    with pytest.raises(ModelError, match="truncated"):
        manager.load("bad/truncated.safetensors")  # refused before unloading
    assert manager.current.info.name == "old/tiny.ckpt"
    with pytest.raises(ModelError, match="garbage.ckpt"):
        manager.load("bad/garbage.ckpt")  # fails after unloading: the previous one comes back
    assert manager.current.info.name == "old/tiny.ckpt"


def test_default_is_the_demo_model(ckpt_dir, tmp_path):
    random_demo = ModelManager(ckpt_dir, device="cpu", builtin=builtin_model(tmp_path / "missing"))
    model = random_demo.current
    assert (model.name, model.architecture, model.shorthash) == ("demo-random", "demo", None)
    trained = ModelManager(ckpt_dir, device="cpu", builtin=builtin_model(ckpt_dir / "tiny-diffusers")).load(None)
    assert (trained.name, trained.architecture) == ("demo", "demo")
    assert trained.shorthash == sha256_file(ckpt_dir / "tiny-diffusers")[:10]
    chosen = ModelManager(ckpt_dir, device="cpu", default="tiny", builtin=builtin_model(tmp_path / "missing")).current
    assert chosen.name == "tiny"
    with pytest.raises(ModelError, match="no checkpoint chosen"):
        ModelManager(ckpt_dir, device="cpu").load(None)  # without a built-in model there is nothing to fall back on


def test_precision_applies_to_loaded_models(ckpt_dir, tmp_path):
    model = ModelManager(ckpt_dir, device="cpu", precision="bf16").load("tiny")
    assert model.dtype == torch.bfloat16
    assert {p.dtype for p in model.pipe.unet.parameters()} == {torch.bfloat16}


def test_sd2_without_yaml_or_config_folder_asks_the_unet_and_rebuilds_on_the_v_config(tmp_path, monkeypatch):
    """AUTOMATIC1111's v-prediction test decides for a plain SD 2.x file (tiny shipped-style configs here)."""
    pipe = tiny_pipeline("sd2")
    pipe.save_pretrained(tmp_path / "two")
    state = pipeline_to_ldm(pipe, "sd2")
    (tmp_path / "ckpt").mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "ckpt" / "two.safetensors"))
    configs = tmp_path / "configs"
    write_config_folder(tmp_path / "two", configs / "sd2")
    write_config_folder(tmp_path / "two", configs / "sd2-v")
    unet_config = json.loads((configs / "sd2-v" / "unet" / "config.json").read_text())
    (configs / "sd2-v" / "unet" / "config.json").write_text(json.dumps({**unet_config, "upcast_attention": True}))
    monkeypatch.setattr(convert, "CONFIGS_DIR", configs)
    monkeypatch.setattr(convert, "guess_v_prediction", lambda unet: True)
    v_pipe, arch = load_single_file(tmp_path / "ckpt" / "two.safetensors")
    assert arch == "sd2-v" and v_pipe.scheduler.config.prediction_type == "v_prediction"
    assert v_pipe.unet.config.upcast_attention is True
    assert_same_weights(pipe.unet, v_pipe.unet)
    monkeypatch.setattr(convert, "guess_v_prediction", lambda unet: False)
    eps_pipe, arch = load_single_file(tmp_path / "ckpt" / "two.safetensors")
    assert arch == "sd2" and eps_pipe.scheduler.config.prediction_type == "epsilon"


def test_old_clip_key_names_are_renamed_like_automatic1111():
    state = {"cond_stage_model.transformer.embeddings.token_embedding.weight": torch.zeros(1),
             "cond_stage_model.transformer.text_model.encoder.layers.0.x": torch.zeros(1), "other": torch.zeros(1)}
    assert set(weights.normalize_keys(state)) == {
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
        "cond_stage_model.transformer.text_model.encoder.layers.0.x", "other"}


def test_sgm_yaml_with_v_scaling_means_v_prediction(tmp_path):
    (tmp_path / "xl.yaml").write_text("model:\n  params:\n    denoiser_config:\n      params:\n        scaling_config:\n"
                                      "          target: sgm.modules.diffusionmodules.denoiser_scaling.VScaling\n")
    (tmp_path / "plain.yaml").write_text("model:\n  params:\n    parameterization: eps\n")
    assert detect.yaml_prediction_type(tmp_path / "xl.safetensors") == "v_prediction"
    assert detect.yaml_prediction_type(tmp_path / "plain.safetensors") == "epsilon"
    assert detect.yaml_prediction_type(tmp_path / "none.safetensors") is None


def test_automatic1111_v_prediction_test_reads_the_unet_output():
    """A1111's test: mean(output - input) at t=999 below -1 means v-prediction."""
    unet = tiny_pipeline("sd2").unet
    with torch.no_grad():
        unet.conv_out.weight.zero_()
        unet.conv_out.bias.fill_(-5.0)  # output -5 everywhere: input 0.5, mean difference -5.5
        assert detect.guess_v_prediction(unet) is True
        unet.conv_out.bias.fill_(0.0)   # output 0: mean difference -0.5
        assert detect.guess_v_prediction(unet) is False
