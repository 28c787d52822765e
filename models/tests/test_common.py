"""Run configs: run directories keep earlier configs, bundle directories hold only the current one."""
import json

from uigc_models.common import write_config


def test_run_dir_keeps_history_bundle_dir_does_not(tmp_path):
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    run.mkdir()
    bundle.mkdir()
    for i in range(3):
        write_config(str(run), {"step": i})
        write_config(str(bundle), {"step": i}, "export_config.json", keep_previous=False)
    assert sorted(p.name for p in run.iterdir()) == ["config.1.json", "config.2.json", "config.json"]
    assert json.loads((run / "config.1.json").read_text())["step"] == 0
    assert [p.name for p in bundle.iterdir()] == ["export_config.json"]
    assert json.loads((bundle / "export_config.json").read_text())["step"] == 2
