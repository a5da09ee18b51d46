"""Module parity with the reference implementation's own outputs: the tiny cases on the
fixtures the repository carries (tests/data), the SD1.5-shape ones on ../shared's
(DIFFPLUGIN_SHARED; skipped without them)."""

import copy
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from plugin_core.models import convert_reference_plugin, load_plugin, load_reference_plugin
from plugin_core.selector import apply_selection_rule, load_selector


def assert_close_rel(actual, expected, rtol=1e-5):
    scale = expected.abs().max().clamp_min(1e-12)
    error = (actual - expected).abs().max() / scale
    assert error <= rtol, f"relative error {error:.3g} > {rtol}"


def reference(fixtures_dir, name):
    return load_file(fixtures_dir / "reference" / f"{name}.safetensors")


def fixtures_for(request, variant):
    """tiny: the repository's fixtures; sd15: ../shared's (a skip without them)."""
    return request.getfixturevalue("sd15_fixtures_dir" if variant == "sd15" else "fixtures_dir")


@pytest.mark.parametrize("variant,batch", [("sd15", 1), ("tiny", 2)])
def test_tpb_matches_reference(request, variant, batch):
    fixtures_dir = fixtures_for(request, variant)
    ref = reference(fixtures_dir, f"tpb_{variant}")
    plugin = load_plugin(fixtures_dir / variant / "derain")
    prefix = f"{variant}.derain.b{batch}"
    with torch.no_grad():
        fp = plugin.visual_prompt(ref[f"{prefix}.input.hidden_states_24"])
    assert_close_rel(fp, ref[f"{prefix}.output.image_embeds"])


SCB_CASES = [
    ("sd15", "derain", 1), ("sd15", "derain", 2),
    ("tiny", "derain", 1), ("tiny", "derain", 2), ("tiny", "desnow", 1),
]


@pytest.mark.parametrize("variant,task,batch", SCB_CASES)
def test_scb_matches_reference(request, variant, task, batch):
    fixtures_dir = fixtures_for(request, variant)
    ref = reference(fixtures_dir, f"scb_{variant}")
    prefix = f"{variant}.{task}.b{batch}"
    folder = fixtures_dir / variant / task
    if not (folder / "scb").is_dir():
        pytest.skip("no SCB in this fixture folder")
    plugin = load_plugin(folder)
    scb = plugin.scb
    latent = ref[f"{prefix}.input.cond_img"]
    t = ref[f"{prefix}.input.timestep"]
    with torch.no_grad():
        residuals = plugin.skip_residuals(latent, t, ref[f"{prefix}.input.encoder_hidden_states"])
        temb = scb.time_embedding_for(t, latent.shape[0])
    assert len(residuals) == 3
    for i, residual in enumerate(residuals):
        assert_close_rel(residual, ref[f"{prefix}.output.down_block_res_samples.{i}"])
    assert_close_rel(temb, ref[f"{prefix}.intermediate.temb"])


def test_selector_matches_reference(sd15_fixtures_dir):
    """Scores within 1e-5 relative, beyond the reference's own float32 rounding.

    The fixture's cases are built near ties: in `plugin_and_null` proj_t maps a text vector
    of norm 184 to one of norm 3.6, so the reference's float32 scores are themselves
    ~1.2e-5 (relative) away from the exact value. The exact value is recomputed here in
    float64 and that measured reference error is allowed on top of the 1e-5.
    """
    ref = reference(sd15_fixtures_dir, "selector")
    selector, _ = load_selector(sd15_fixtures_dir / "sd15" / "plugin_selector" / "PromptTunner.pt")
    exact = copy.deepcopy(selector).double()
    prompts = ref["selector.input.plug_in_embeddings"].amax(1)  # max-pooled Fp rows, the null (" ") row last
    for case in ("random", "all_negative", "mixed", "plugin_and_null"):
        text = ref[f"selector.{case}.input.clip_t"][:, 0]
        expected = ref[f"selector.{case}.output.raw_scores"][:, 0]
        with torch.no_grad():
            scores = selector.score(text, prompts[None, :-1], null=prompts[-1])[0, 0]
            truth = exact.score(text.double(), prompts[None, :-1].double(),
                                null=prompts[-1].double())[0, 0]
        reference_error = (expected.double() - truth).abs().max()
        bound = 1e-5 * expected.abs().max() + reference_error
        assert (scores - expected).abs().max() <= bound, case
        ruled, selected = apply_selection_rule(scores)
        assert selected == ref[f"selector.{case}.output.selected_index"].tolist(), case
        assert torch.allclose(ruled, ref[f"selector.{case}.output.scores_after_rule"], rtol=1e-5, atol=bound.item())


def test_module_prefixed_tpb_gives_same_outputs(sd15_fixtures_dir, fixtures_dir):
    """sd15/desnow/tpb.pt holds derain's tensors under `module.` keys."""
    plain = load_reference_plugin(sd15_fixtures_dir / "sd15" / "derain")
    prefixed_state = torch.load(sd15_fixtures_dir / "sd15" / "desnow" / "tpb.pt", weights_only=True)["model"]
    assert all(k.startswith("module.") for k in prefixed_state)
    tiny = load_plugin(fixtures_dir / "tiny" / "desnow")  # module.-prefixed tiny TPB
    assert tiny.task == "desnow"
    # Put desnow's prefixed TPB beside derain's SCB and load it like any task folder.
    ref = reference(sd15_fixtures_dir, "tpb_sd15")
    x = ref["sd15.derain.b1.input.hidden_states_24"]
    with torch.no_grad():
        assert torch.equal(plain.visual_prompt(x), _tpb_from(sd15_fixtures_dir / "sd15" / "desnow" / "tpb.pt", plain)(x))


def _tpb_from(path, like):
    from plugin_core.formats import read_torch_pickle, unwrap_state_dict
    from plugin_core.models import TaskPromptBranch

    tpb = TaskPromptBranch(like.config)
    tpb.load_state_dict(unwrap_state_dict(read_torch_pickle(path), path))
    return tpb.eval()


@pytest.mark.parametrize("config_name", ["lowlight_scb_config.json", "desnow_scb_config.json"])
def test_extra_config_keys_are_ignored(sd15_fixtures_dir, tmp_path, config_name, caplog):
    fixtures_dir = sd15_fixtures_dir
    task = tmp_path / "lowlight"
    shutil.copytree(fixtures_dir / "sd15" / "derain", task)
    shutil.copy(fixtures_dir / "sd15" / "config_variants" / config_name, task / "scb" / "config.json")
    with caplog.at_level("INFO", logger="diffplugin"):
        variant = load_plugin(task)
    assert "use_vae_conditioning" in caplog.text
    assert variant.start_mode == "noise"  # lowlight starts from pure noise
    base = load_plugin(fixtures_dir / "sd15" / "derain")
    ref = reference(fixtures_dir, "scb_sd15")
    args = (ref["sd15.derain.b1.input.cond_img"], ref["sd15.derain.b1.input.timestep"], ref["sd15.derain.b1.input.encoder_hidden_states"])
    with torch.no_grad():
        for a, b in zip(variant.skip_residuals(*args), base.skip_residuals(*args)):
            assert torch.equal(a, b)


@pytest.mark.parametrize("variant,task", [("sd15", "derain"), ("tiny", "derain"), ("tiny", "desnow")])
def test_converted_safetensors_gives_identical_modules(request, tmp_path, variant, task):
    fixtures_dir = fixtures_for(request, variant)
    source = fixtures_dir / variant / task
    out = convert_reference_plugin(source, tmp_path / f"{task}.safetensors")
    a, b = load_plugin(source), load_plugin(out)
    assert a.config == b.config and a.info.task == b.info.task and a.start_mode == b.start_mode
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    ref = reference(fixtures_dir, f"scb_{variant}")
    prefix = f"{variant}.{task}.b1"
    args = (ref[f"{prefix}.input.cond_img"], ref[f"{prefix}.input.timestep"], ref[f"{prefix}.input.encoder_hidden_states"])
    with torch.no_grad():
        for x, y in zip(a.skip_residuals(*args), b.skip_residuals(*args)):
            assert torch.equal(x, y)


def test_the_repositorys_tiny_fixtures_are_the_shared_ones(fixtures_dir, sd15_fixtures_dir):
    """tests/data/fixtures: byte copies of ../shared's tiny plugins; its reference files hold a
    subset of ../shared's tensors, under the same names, bit for bit, with the same metadata."""
    copies = sorted(p.relative_to(fixtures_dir) for p in (fixtures_dir / "tiny").rglob("*") if p.is_file())
    originals = sorted(p.relative_to(sd15_fixtures_dir) for p in (sd15_fixtures_dir / "tiny").rglob("*") if p.is_file())
    assert copies == originals and len(copies) == 6
    for path in copies:
        assert (fixtures_dir / path).read_bytes() == (sd15_fixtures_dir / path).read_bytes(), path
    for name in ("tpb_tiny", "scb_tiny"):
        trimmed, full = (folder / "reference" / f"{name}.safetensors" for folder in (fixtures_dir, sd15_fixtures_dir))
        with safe_open(trimmed, "pt") as a, safe_open(full, "pt") as b:
            assert a.metadata() == b.metadata() and set(a.keys()) < set(b.keys())
            for key in a.keys():
                x, y = a.get_tensor(key), b.get_tensor(key)
                assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y), key
