"""engines/unet_graph.py: the CUDA-graph UNet step, its eager fallback and its bookkeeping.

On the CPU the context manager must leave the UNet eager and change nothing. The runner's logic
(keys, warm-up, capture, static buffers, LRU, invalidation, failures) is tested on the CPU with
``ReexecutingGraph``, a stand-in for ``torch.cuda.CUDAGraph`` whose replay re-runs the recorded
function into the same static output tensor, as a real replay rewrites it. Only the real capture
needs a GPU; those tests are skipped here with the reason.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from agentic_edit.engines import compiled_forward, unet_graph
from agentic_edit.engines.unet_graph import (UNetGraphRunner, _NotGraphable, cuda_graphs_setting, graphed_unet,
                                             release_graphs, runner_for, step_key, timestep_tensor, why_not_graphed)

NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU: recording and replaying a real CUDA graph")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_unet(sdxl: bool, seed: int = 0):
    """9-channel inpainting UNets with the real block types, tiny widths (tests/tiny_models' recipe)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    extra = dict(addition_embed_type="text_time", addition_time_embed_dim=8, use_linear_projection=True,
                 projection_class_embeddings_input_dim=6 * 8 + 32, transformer_layers_per_block=(1, 2),
                 attention_head_dim=(2, 4)) if sdxl else dict(attention_head_dim=4)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=9,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=16,
                                cross_attention_dim=64 if sdxl else 32, **extra)
    return unet.eval()


def step_inputs(unet, step: int, side: int = 16, tokens: int = 77, batch: int = 2) -> dict:
    """Arguments of one CFG denoising step as the inpainting pipelines pass them."""
    generator = torch.Generator().manual_seed(100 + step)
    width = unet.config.cross_attention_dim
    inputs = {"sample": torch.randn(batch, 9, side, side, generator=generator),
              "timestep": torch.tensor(999 - 37 * step),
              "encoder_hidden_states": torch.randn(batch, tokens, width, generator=generator)}
    if unet.config.addition_embed_type == "text_time":
        inputs["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, 32, generator=generator),
                                       "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * batch)}
    return inputs


def call(fn, inputs: dict) -> torch.Tensor:
    inputs = dict(inputs)
    return fn(inputs.pop("sample"), inputs.pop("timestep"), return_dict=False, **inputs)[0]


class ReexecutingGraph:
    """CPU stand-in for a CUDA graph: ``capture`` records the function and leaves its output as
    garbage (a real capture runs nothing); ``replay`` re-runs it into that same tensor."""

    def __init__(self, device):
        self.device = device

    def capture(self, fn):
        self.fn = fn
        self.output = fn()
        self.output.fill_(float("nan"))
        return self.output

    def replay(self):
        with torch.inference_mode():  # a replay writes its output whatever mode it was recorded in
            self.output.copy_(self.fn())


class FailingGraph(ReexecutingGraph):
    def capture(self, fn):
        raise RuntimeError("operation not permitted when stream is capturing")


@pytest.fixture(params=[False, True], ids=["sd15", "sdxl"])
def unet(request):
    return tiny_unet(sdxl=request.param)


# ---- the eager fallback -------------------------------------------------------------------------------

def test_on_the_cpu_the_context_leaves_the_unet_eager_and_outputs_identical(unet):
    inputs = step_inputs(unet, 0)
    with torch.no_grad():
        bare = call(unet, inputs)
        with graphed_unet(unet) as runner:
            assert runner is None
            assert "forward" not in unet.__dict__
            ours = call(unet, inputs)
    assert torch.equal(bare, ours)
    assert "CUDA" in why_not_graphed(unet)


def test_a_pipeline_on_the_cpu_gives_the_same_image_inside_the_context(models_root):
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline.from_pretrained(str(models_root / "diffusers" / "stable-diffusion-inpainting"),
                                                          safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    image, mask = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)), torch.zeros(1, 1, 64, 64)
    mask[..., 16:40, 20:50] = 1
    args = dict(prompt="a cup", image=image, mask_image=mask, height=64, width=64, num_inference_steps=3,
                output_type="np")
    bare = pipe(**args, generator=torch.Generator().manual_seed(5)).images
    with graphed_unet(pipe.unet):
        ours = pipe(**args, generator=torch.Generator().manual_seed(5)).images
    assert np.array_equal(bare, ours)


def test_the_setting_and_the_reasons_for_staying_eager(unet, monkeypatch):
    for value, expected in [("", True), ("1", True), ("on", True), ("0", False), ("false", False), ("OFF", False)]:
        monkeypatch.setenv(unet_graph.ENV, value)
        assert cuda_graphs_setting() is expected
    monkeypatch.setenv(unet_graph.ENV, "0")
    assert "AGENTIC_EDIT_CUDA_GRAPHS=0" in why_not_graphed(unet)
    monkeypatch.delenv(unet_graph.ENV)
    assert "caller" in why_not_graphed(unet, enabled=False)
    unet.train()
    assert "training" in why_not_graphed(unet)
    unet.eval()
    unet._hf_hook = object()  # what accelerate's offloading leaves on a module
    assert "hooks" in why_not_graphed(unet)
    del unet._hf_hook
    assert "CUDA" in why_not_graphed(unet, enabled=True)
    assert "not a torch module" in why_not_graphed(lambda *a: None)


# ---- keys ------------------------------------------------------------------------------------------------

def key_of(unet, inputs: dict, **extra) -> tuple:
    arguments = {**inputs, **extra}
    arguments["timestep"] = timestep_tensor(arguments["timestep"], torch.device("cpu"))
    return step_key(arguments, torch.device("cpu"))


def test_keys_follow_shapes_and_dtypes_not_values():
    sdxl = tiny_unet(sdxl=True)
    base = key_of(sdxl, step_inputs(sdxl, 0))
    assert key_of(sdxl, step_inputs(sdxl, 5)) == base  # other latents, timestep, embeddings: same graph
    assert key_of(sdxl, step_inputs(sdxl, 0, side=24)) != base  # another working size
    assert key_of(sdxl, step_inputs(sdxl, 0, tokens=154)) != base  # a longer prompt embedding
    assert key_of(sdxl, step_inputs(sdxl, 0, batch=1)) != base  # no CFG
    half = {k: v.half() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
            for k, v in step_inputs(sdxl, 0).items()}
    assert key_of(sdxl, half) != base
    inputs = step_inputs(sdxl, 0)
    inputs["added_cond_kwargs"] = dict(inputs["added_cond_kwargs"], image_embeds=[torch.zeros(2, 1, 32)])
    assert key_of(sdxl, inputs) != base  # IP-Adapter embeddings are inputs of their own
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert key_of(sdxl, step_inputs(sdxl, 0)) != base
    # Python numbers are baked into the recorded kernels, so they are part of the key.
    scaled = key_of(sdxl, step_inputs(sdxl, 0), cross_attention_kwargs={"scale": 0.5})
    assert scaled != base and scaled != key_of(sdxl, step_inputs(sdxl, 0), cross_attention_kwargs={"scale": 0.7})


def test_timesteps_become_tensors_the_way_the_unet_makes_them():
    cpu = torch.device("cpu")
    assert timestep_tensor(10, cpu).dtype == torch.int64 and timestep_tensor(10, cpu).shape == (1,)
    assert timestep_tensor(10.5, cpu).dtype == torch.float64
    t = torch.tensor(3)
    assert timestep_tensor(t, cpu) is t
    # a number changes every step; as a tensor it is an input of one graph, not a key per step
    sd = tiny_unet(sdxl=False)
    assert key_of(sd, dict(step_inputs(sd, 0), timestep=999)) == key_of(sd, dict(step_inputs(sd, 0), timestep=1))


def test_arguments_a_graph_cannot_take_are_refused():
    sd = tiny_unet(sdxl=False)
    with pytest.raises(_NotGraphable, match="on meta"):
        key_of(sd, dict(step_inputs(sd, 0), encoder_hidden_states=torch.empty(2, 77, 32, device="meta")))
    with pytest.raises(_NotGraphable, match="cross_attention_kwargs.*object"):
        key_of(sd, step_inputs(sd, 0), cross_attention_kwargs={"hook": object()})
    with pytest.raises(_NotGraphable, match="timestep is a str"):
        timestep_tensor("999", torch.device("cpu"))


# ---- the runner, with a stand-in graph -------------------------------------------------------------------

def test_replays_match_eager_step_after_step_and_outputs_are_not_aliased(unet):
    runner = UNetGraphRunner(unet, graph_factory=ReexecutingGraph)
    with torch.no_grad():
        outputs = []
        for step in range(5):
            inputs = step_inputs(unet, step)
            ours = call(runner, inputs)
            assert torch.equal(ours, call(unet, inputs)), f"step {step}"
            outputs.append(ours)
        # a scheduler may keep earlier outputs: later replays must not have overwritten them
        for step, kept in enumerate(outputs):
            assert torch.equal(kept, call(unet, step_inputs(unet, step)))
    assert (runner.stats.eager_calls, runner.stats.captures, runner.stats.replays) == (1, 1, 4)
    assert runner.stats.last_eager_reason == "warm-up call of a new shape"


def test_steps_under_inference_mode_as_comfyui_runs_nodes(unet):
    """ComfyUI executes nodes under torch.inference_mode(): the static buffers, made as plain
    tensors, take each step's inputs in place there, and still outside it (diffusers' no_grad)."""
    runner = UNetGraphRunner(unet, warmup_calls=0, graph_factory=ReexecutingGraph)
    with torch.inference_mode():
        for step in range(3):
            inputs = step_inputs(unet, step)
            assert torch.equal(call(runner, inputs), call(unet, inputs))
    with torch.no_grad():
        inputs = step_inputs(unet, 3)
        assert torch.equal(call(runner, inputs), call(unet, inputs))
    assert runner.stats.captures == 1 and runner.stats.replays == 4


def test_return_dict_and_positional_arguments(unet):
    runner = UNetGraphRunner(unet, warmup_calls=0, graph_factory=ReexecutingGraph)
    inputs = step_inputs(unet, 1)
    with torch.no_grad():
        expected = call(unet, inputs)
        out = runner(inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"],
                     added_cond_kwargs=inputs.get("added_cond_kwargs"))
        assert torch.equal(out.sample, expected)
        assert torch.equal(call(runner, inputs), expected)  # keywords, defaults left out: the same graph
        assert runner.stats.captures == 1 and runner.stats.replays == 2
        # a number becomes a [1] tensor (as in the UNet), unlike the 0-dim one: a graph of its own
        assert torch.equal(call(runner, dict(inputs, timestep=int(inputs["timestep"]))), expected)
    assert runner.stats.captures == 2 and runner.stats.replays == 3


def test_least_recently_used_graph_goes_first(unet):
    runner = UNetGraphRunner(unet, max_graphs=2, warmup_calls=0, graph_factory=ReexecutingGraph)
    with torch.no_grad():
        for side in (16, 24, 16, 32):  # 16 is used again before 32 arrives, so 24 is dropped
            call(runner, step_inputs(unet, 0, side=side))
        assert runner.stats.captures == 3 and sample_sides(runner) == [16, 32]
        inputs = step_inputs(unet, 2, side=24)  # seen before: recorded again at once, 16 goes
        assert torch.equal(call(runner, inputs), call(unet, inputs))
    assert runner.stats.captures == 4 and sample_sides(runner) == [32, 24]


def sample_sides(runner) -> list[int]:
    """The latent side of each kept graph, oldest first (a key holds ("tensor", shape, ...) per argument)."""
    return [dict(key[1])["sample"][1][-1] for key in runner.keys()]


def test_moved_weights_or_new_attention_processors_drop_the_graphs(unet):
    from diffusers.models.attention_processor import AttnProcessor

    runner = UNetGraphRunner(unet, warmup_calls=0, graph_factory=ReexecutingGraph)
    assert runner.refresh() is False
    with torch.no_grad():
        call(runner, step_inputs(unet, 0))
    assert runner.graph_count == 1 and runner.refresh() is False  # nothing changed
    unet.set_attn_processor(AttnProcessor())  # what IP-Adapter switching does
    assert runner.refresh() is True and runner.graph_count == 0
    with torch.no_grad():
        call(runner, step_inputs(unet, 0))
    unet.to(torch.float64).to(torch.float32)  # an offload and reload: the weights live elsewhere now
    assert runner.refresh() is True and runner.graph_count == 0


def test_gradients_or_a_failed_capture_fall_back_to_eager_and_warn_once(unet, caplog):
    inputs = step_inputs(unet, 3)
    runner = UNetGraphRunner(unet, warmup_calls=0, graph_factory=ReexecutingGraph)
    with torch.enable_grad():
        call(runner, inputs)
    assert runner.stats.last_eager_reason == "gradients are enabled" and runner.graph_count == 0

    failing = UNetGraphRunner(unet, warmup_calls=0, graph_factory=FailingGraph)
    with caplog.at_level(logging.WARNING, logger=unet_graph.__name__), torch.no_grad():
        expected = call(unet, inputs)
        for side in (16, 16, 24):
            out = call(failing, step_inputs(unet, 3, side=side))
            if side == 16:
                assert torch.equal(out, expected)
    warnings = [r for r in caplog.records if "capture" in r.getMessage()]
    assert len(warnings) == 1 and "runs eagerly" in warnings[0].getMessage()
    assert failing.stats.failures == 2 and failing.stats.eager_calls == 3 and failing.graph_count == 0


def test_the_context_patches_and_restores_forward_and_nests(unet, monkeypatch):
    monkeypatch.setattr(unet_graph, "why_not_graphed", lambda unet, enabled=None: None)
    monkeypatch.setattr(unet_graph, "CudaGraph", ReexecutingGraph)
    try:
        with torch.no_grad(), graphed_unet(unet) as runner:
            assert runner is runner_for(unet) and unet.__dict__["forward"] is runner
            with graphed_unet(unet) as inner:
                assert inner is runner
            assert unet.__dict__["forward"] is runner  # the inner block did not unpatch
            for step in range(3):
                call(unet, step_inputs(unet, step))
        assert "forward" not in unet.__dict__
        assert runner.stats.replays == 2
    finally:
        release_graphs(unet)
    assert runner_for(unet).graph_count == 0


# ---- through the engine ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models_root(inpaint_models_root):
    return inpaint_models_root


@pytest.mark.parametrize("name, guidance", [("stable-diffusion-inpainting", 1.0),
                                            ("stable-diffusion-xl-1.0-inpainting-0.1", None)])
def test_the_engine_gives_the_same_image_with_its_steps_replayed(models_root, monkeypatch, name, guidance):
    """guidance 1 turns CFG off, so the UNet's output goes to the scheduler as is: PNDM keeps it
    across steps, which catches a replay that hands out its static output buffer."""
    from agentic_edit.engines.inpaint import InpaintEngine

    engine = InpaintEngine(name, device="cpu", dtype=torch.float32)
    image = np.random.default_rng(0).random((48, 72, 3), dtype=np.float32)
    mask = np.zeros((48, 72), np.float32)
    mask[10:30, 20:50] = 1
    args = dict(steps=5, resolution=64, guidance=guidance, seed=3, mode="full")
    bare = engine.inpaint(image, mask, "a cup", **args).images[0]
    monkeypatch.setattr(unet_graph, "why_not_graphed", lambda unet, enabled=None: None)
    monkeypatch.setattr(unet_graph, "CudaGraph", ReexecutingGraph)
    with engine.load().use() as model:
        unet = model.pipe.unet
    try:
        ours = engine.inpaint(image, mask, "a cup", **args).images[0]
        runner = runner_for(unet)
        unet_calls = model.pipe.num_timesteps
        assert unet_calls >= 4
        assert runner.stats.captures == 1 and runner.stats.eager_calls == 1
        assert runner.stats.replays == unet_calls - 1
        assert "forward" not in unet.__dict__
    finally:
        release_graphs(unet)
    assert np.array_equal(bare, ours)


# ---- on a GPU ------------------------------------------------------------------------------------------------

@NEEDS_CUDA
@pytest.mark.parametrize("sdxl", [False, True], ids=["sd15", "sdxl"])
def test_cuda_graph_replays_equal_eager_steps(sdxl):
    device = torch.device("cuda")
    unet = tiny_unet(sdxl).to(device, torch.float16)
    half = lambda t: t.to(device, torch.float16) if t.is_floating_point() else t.to(device)  # noqa: E731
    steps = [unet_graph._map_tensors(step_inputs(unet, step), half) for step in range(4)]
    with torch.no_grad():
        expected = [call(unet, inputs) for inputs in steps]
        with graphed_unet(unet) as runner:
            assert runner is not None, why_not_graphed(unet)
            ours = [call(unet, inputs) for inputs in steps]
    assert runner.stats.captures == 1 and runner.stats.replays == 3 and runner.stats.failures == 0
    for step, (a, b) in enumerate(zip(ours, expected)):
        torch.testing.assert_close(a, b, rtol=2e-3, atol=2e-3, msg=f"step {step}")
    release_graphs(unet)


# ---- AGENTIC_EDIT_COMPILE and the release hook ------------------------------------------------------------

def test_compile_is_opt_in_and_the_warm_up_call_takes_the_capture_call_form(unet, monkeypatch):
    """``AGENTIC_EDIT_COMPILE=1`` compiles the forward on CUDA only; the warm-up call passes every
    argument by name with the timestep as a tensor, exactly as the capture does, so a compiled
    forward meets the same guards twice (no recompile inside a capture)."""
    for value, expected in (("", False), ("0", False), ("1", True), ("yes", True), ("off", False)):
        monkeypatch.setenv(unet_graph.COMPILE_ENV, value)
        assert unet_graph.compile_setting() is expected
    runner = UNetGraphRunner(unet, graph_factory=ReexecutingGraph)
    assert runner._forward(unet) is type(unet).forward   # on the CPU compile stays off
    forms = []

    def recording(self, *args, **kwargs):
        forms.append((len(args), sorted(kwargs), type(kwargs.get("timestep")).__name__))
        return type(self).forward(self, *args, **kwargs)

    monkeypatch.setattr(runner, "_forward", lambda unet: recording)
    inputs = step_inputs(unet, 0)
    inputs["timestep"] = 999   # a plain number, as some pipelines pass it
    with torch.no_grad():
        warm, captured = call(runner, inputs), call(runner, inputs)
        assert torch.equal(warm, call(unet, inputs)) and torch.equal(captured, warm)
    assert runner.stats.captures == 1 and len(forms) >= 2   # the stand-in graph re-runs it on replay too
    assert all(form == forms[0] for form in forms) and forms[0][0] == 0 and forms[0][2] == "Tensor"


def test_a_compiled_forward_is_dropped_when_the_weights_change_layout(unet):
    """Inductor asserts the weights' strides instead of guarding them: a UNet turned channels_last
    after its compile must compile again, not fail (or keep the program) on the next call."""
    import functools

    runner = UNetGraphRunner(unet, graph_factory=ReexecutingGraph)
    # What _forward builds on CUDA (the CPU never compiles): the compiled function bound to a layout key.
    compiled = functools.partial(compiled_forward.layout_keyed_forward,
                                 weight_layout_key=compiled_forward.weight_layout(compiled_forward.weights_of(unet)))
    runner._compiled_forward = compiled
    runner.refresh()
    assert runner._compiled_forward is compiled           # moved or not, the same layout keeps it
    inputs = step_inputs(unet, 0)
    with torch.no_grad():
        assert torch.equal(call(lambda *a, **kw: compiled(unet, *a, **kw), inputs), call(unet, inputs))
    unet.to(memory_format=torch.channels_last)
    runner.refresh()
    assert runner._compiled_forward is None               # the next call binds the new key: a new program


def test_the_compiled_forward_gets_a_program_per_weight_layout(unet):
    """The layout key is guarded: a second key compiles again, the same key reuses its program."""
    programs = []

    def counting_backend(graph, example_inputs):
        programs.append(graph)
        return graph.forward

    torch._dynamo.reset()
    compiled = torch.compile(compiled_forward.layout_keyed_forward, backend=counting_backend, dynamic=False)
    inputs = step_inputs(unet, 0)
    counts = []
    with torch.no_grad():
        for key in (1, 1, 2, 1):
            call(lambda *a, key=key, **kw: compiled(unet, *a, weight_layout_key=key, **kw), inputs)
            counts.append(len(programs))
    torch._dynamo.reset()
    first = counts[0]
    assert first >= 1 and counts == [first, first, 2 * first, 2 * first]


@NEEDS_CUDA
def test_the_compiled_step_survives_a_channels_last_switch(unet, monkeypatch):
    monkeypatch.setenv(unet_graph.COMPILE_ENV, "1")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)   # compare programs, not TF32 rounding
    unet = unet.to("cuda")
    inputs = unet_graph._map_tensors(step_inputs(unet, 0), lambda t: t.to("cuda"))
    with torch.no_grad():
        expected = call(unet, inputs)
        with graphed_unet(unet) as runner:
            for _ in range(3):
                call(unet, inputs)
        unet.to(memory_format=torch.channels_last)
        with graphed_unet(unet) as runner:
            got = [call(unet, inputs) for _ in range(3)]
    assert runner.stats.compile_seconds > 0
    for output in got:
        torch.testing.assert_close(output, expected, rtol=2e-3, atol=2e-3)
    release_graphs(unet)


def test_the_inpaint_model_drops_its_graphs_when_the_store_offloads_it(unet, monkeypatch):
    from agentic_edit.engines.inpaint import InpaintModel

    runner = runner_for(unet)
    runner._graph_factory = ReexecutingGraph
    runner.warmup_calls = 0
    with torch.no_grad():
        call(runner, step_inputs(unet, 0))
    assert runner.graph_count == 1
    pipe = type("Pipe", (), {"unet": unet, "components": {"unet": unet}})()
    InpaintModel(pipe, "sdxl_inpaint", None, torch.nn.ModuleDict(), None).release_device_caches()
    assert runner.graph_count == 0


def test_the_store_asks_the_engine_object_to_release_device_caches_on_offload():
    """models/cache.py: ``LoadedModel.offload`` calls the object's ``release_device_caches`` first
    (the inpaint model drops its UNet graphs, SAM-2 its graphs and kept embedding)."""
    from pathlib import Path

    from agentic_edit.models import LoadedModel, ResolvedModel

    class Engine:
        def __init__(self):
            self.module, self.released = torch.nn.Linear(2, 2), 0

        def torch_modules(self):
            return [self.module]

        def release_device_caches(self):
            self.released += 1

    obj = Engine()
    resolved = ResolvedModel(path=Path("<test>/hook"), spec=None, source="path")
    loaded = LoadedModel(("<test>/hook", "cpu", "torch.float32"), resolved, "test", obj, torch.device("cpu"),
                         torch.float32)
    loaded.offload()
    assert obj.released == 1
