"""The shared YAML -> dataclass loader, and every shipped recipe config through its trainer's loader."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tts.config import ConfigError, from_dict, load_yaml

CONF = Path(__file__).resolve().parents[1] / "egs" / "synth_en" / "conf"


@dataclass
class Inner:
    size: int = 1
    levels: tuple[int, ...] = (2, 2)


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    maybe: Inner | None = None


def test_nested_union_and_tuple_fields():
    cfg = from_dict(Outer, {"inner": {"size": 3, "levels": [4, 5]}, "maybe": {"size": 7}})
    assert cfg.inner == Inner(3, (4, 5)) and cfg.maybe == Inner(7)
    assert from_dict(Outer, None) == Outer()


def test_unknown_and_bad_values_name_the_place(tmp_path):
    with pytest.raises(ConfigError, match=r"config\.inner: unknown field\(s\) \['sise'\]"):
        from_dict(Outer, {"inner": {"sise": 3}})
    with pytest.raises(ConfigError, match="expected a mapping"):
        from_dict(Outer, [1])
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(Outer, tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("inner: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(Outer, tmp_path / "bad.yaml")


def test_every_shipped_config_loads():
    from flow.train import FlowTrainConfig
    from tokenizer.config import load_config as tokenizer_config
    from tts.llm_train import load_config as llm_config
    from vocoder.train import load_config as vocoder_config

    loaders = {"tokenizer": tokenizer_config, "llm": llm_config, "flow": FlowTrainConfig.from_yaml,
               "vocoder": vocoder_config}
    paths = sorted(CONF.glob("*.yaml"))
    assert paths
    for path in paths:
        loaders[path.stem.split("_")[0]](path)  # raises on any unknown field
