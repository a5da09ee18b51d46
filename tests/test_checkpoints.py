"""Loading and saving plugins and selectors: safety, formats, and the errors users see."""

import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from plugin_core import PluginFileError, find_plugins, load_plugin, load_selector, save_plugin
from plugin_core.cli import main
from plugin_core.formats import PLUGIN_FORMAT, read_safetensors


class _RunsCode:
    """Unpickling this would create `marker`: the proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write_evil(path, marker, wrapped):
    payload = {"proj_v.weight": _RunsCode(marker)}
    torch.save({"model": payload} if wrapped else payload, path)


@pytest.mark.parametrize("position", ["tpb.pt", "scb/diffusion_pytorch_model.bin", "plugin_selector/PromptTunner.pt"])
def test_code_running_pickles_are_refused(fixtures_dir, tmp_path, position):
    task = tmp_path / "derain"
    shutil.copytree(fixtures_dir / "tiny" / "derain", task)
    marker = tmp_path / "code-ran"
    if position == "plugin_selector/PromptTunner.pt":
        target = tmp_path / position
        target.parent.mkdir()
        _write_evil(target, marker, wrapped=True)
        load = lambda: load_selector(target)  # noqa: E731
    else:
        target = task / position
        _write_evil(target, marker, wrapped=position == "tpb.pt")
        load = lambda: load_plugin(task)  # noqa: E731
    with pytest.raises(PluginFileError, match="refused.*could run arbitrary code") as caught:
        load()
    assert str(target) in str(caught.value)
    assert not marker.exists(), "unpickling ran code"
    # The same payload really does run code when unpickled without the restriction.
    torch.load(target, weights_only=False)
    assert marker.exists()


def test_truncated_files_are_reported(fixtures_dir, tmp_path):
    task = tmp_path / "derain"
    shutil.copytree(fixtures_dir / "tiny" / "derain", task)
    data = (task / "tpb.pt").read_bytes()
    (task / "tpb.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(PluginFileError, match=r"tpb.pt: not a readable torch checkpoint \(truncated or corrupt"):
        load_plugin(task)
    converted = save_plugin(load_plugin(fixtures_dir / "tiny" / "derain"), tmp_path / "p.safetensors")
    blob = converted.read_bytes()
    converted.write_bytes(blob[: len(blob) - 1000])
    with pytest.raises(PluginFileError, match="not a readable .safetensors file"):
        load_plugin(converted)


def test_missing_parts_are_named(fixtures_dir, tmp_path):
    task = tmp_path / "derain"
    shutil.copytree(fixtures_dir / "tiny" / "derain", task)
    (task / "scb" / "diffusion_pytorch_model.bin").unlink()
    with pytest.raises(PluginFileError, match=r"missing .*scb/diffusion_pytorch_model"):
        load_plugin(task)
    with pytest.raises(PluginFileError, match="file not found"):
        load_plugin(tmp_path / "absent.safetensors")
    with pytest.raises(PluginFileError, match="a .safetensors file or a reference task folder"):
        load_plugin(task / "scb" / "config.json")


def test_wrong_shapes_name_the_key(fixtures_dir, tmp_path):
    path = save_plugin(load_plugin(fixtures_dir / "tiny" / "derain"), tmp_path / "p.safetensors")
    tensors, metadata = read_safetensors(path)
    tensors["scb.controlnet_down_blocks.1.weight"] = torch.zeros(32, 16, 1, 1)
    save_file(tensors, path, metadata)
    with pytest.raises(PluginFileError, match=r"'controlnet_down_blocks.1.weight': expected \[32, 32, 1, 1\], found \[32, 16, 1, 1\]"):
        load_plugin(path)


def test_a_file_that_is_not_a_plugin(tmp_path, fixtures_dir, selector_file):
    lora = tmp_path / "some_lora.safetensors"
    save_file({"lora_unet_down_blocks_0.alpha": torch.ones(())}, lora)
    with pytest.raises(PluginFileError, match="not a Diff-Plugin task plugin"):
        load_plugin(lora)
    reference_selector, selector_file = selector_file, tmp_path / "selector.safetensors"
    assert main(["convert", str(reference_selector), "-o", str(selector_file)]) == 0
    with pytest.raises(PluginFileError, match="Plugin-Selector file, not a Task-Plugin"):
        load_plugin(selector_file)
    plugin_file = save_plugin(load_plugin(fixtures_dir / "tiny" / "derain"), tmp_path / "p.safetensors")
    with pytest.raises(PluginFileError, match="Task-Plugin file, not a Plugin-Selector"):
        load_selector(plugin_file)


def test_metadata_round_trip(fixtures_dir, tmp_path):
    plugin = load_plugin(fixtures_dir / "tiny" / "derain")
    plugin.info.instructions = ("remove the rain", "no more raindrops")
    plugin.info.extra = {"steps": 1000, "data": "my pairs"}
    path = save_plugin(plugin, tmp_path / "mine.safetensors", dtype=torch.float16)
    again = load_plugin(path)
    assert again.info.instructions == plugin.info.instructions and again.info.extra == plugin.info.extra
    assert again.config == plugin.config and again.start_mode == "input"
    assert load_file(path)["tpb.visual_projection.0.weight"].dtype == torch.float16
    assert next(again.parameters()).dtype == torch.float16


def test_find_plugins_sees_both_layouts(fixtures_dir, tmp_path):
    shutil.copytree(fixtures_dir / "tiny" / "derain", tmp_path / "derain")
    save_plugin(load_plugin(fixtures_dir / "tiny" / "desnow"), tmp_path / "desnow.safetensors")
    save_file({"x": torch.ones(1)}, tmp_path / "unrelated.safetensors")
    found = find_plugins(tmp_path)
    assert sorted(found) == ["derain", "desnow"]


def test_convert_a_pretrained_folder(fixtures_dir, sd15_fixtures_dir, tmp_path, capsys):
    out = tmp_path / "converted"
    assert main(["convert", str(fixtures_dir / "tiny"), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["derain.safetensors", "desnow.safetensors"]
    # derain + selector (desnow has no scb); derain.safetensors exists from the tiny conversion
    assert main(["convert", str(sd15_fixtures_dir / "sd15"), "-o", str(out), "--overwrite"]) == 0
    assert (out / "selector.safetensors").is_file()
    assert read_safetensors(out / "derain.safetensors")[1]["format"] == PLUGIN_FORMAT
    assert main(["info", str(out / "derain.safetensors")]) == 0
    text = capsys.readouterr().out
    assert "task: derain" in text and "context width 768, SCB channels 320" in text
    assert main(["info", str(out / "selector.safetensors")]) == 0
    assert "Plugin-Selector" in capsys.readouterr().out


def test_written_files_get_umask_permissions_and_no_temp_leftovers(fixtures_dir, tmp_path):
    """Atomic writes go through mkstemp (owner-only); the final file must be readable as any
    file the user writes, e.g. by a ComfyUI running under another account."""
    old = os.umask(0o022)
    try:
        path = save_plugin(load_plugin(fixtures_dir / "tiny" / "derain"), tmp_path / "derain.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["derain.safetensors"]
