"""Every shipped YAML under configs/ is validated: its first line names the verb (`# midtrain: VERB`)."""

from pathlib import Path

import pytest
import yaml

from midtrain.config import load_config
from midtrain.stages import stage

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = sorted(p for p in CONFIGS.rglob("*.yaml") if "accelerate" not in p.parts and "lm-eval" not in p.parts)  # lm-eval: tests/eval


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_config_validates(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# midtrain: "), f"{path}: first line must be '# midtrain: VERB'"
    verb = first.removeprefix("# midtrain: ").strip()
    _, cls = stage(verb).resolve()
    cfg = load_config(cls, path)
    assert cfg.to_dict()


def test_accelerate_configs_parse():
    for path in (CONFIGS / "accelerate").glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        assert data["compute_environment"] == "LOCAL_MACHINE" and "distributed_type" in data, path
