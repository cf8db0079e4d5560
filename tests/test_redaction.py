"""What counts as a secret in what a run records, and what is left alone."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from clr_dist import config
from clr_dist.redaction import PLACEHOLDER, argv_redacted, is_secret_name, redact_argv, redact_data, redact_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # An override whose key is named like a secret loses its whole value, spaces and all.
        ("+hydra.job.env_set.HF_TOKEN=hf_abc", "+hydra.job.env_set.HF_TOKEN=REDACTED"),
        ("hydra.job.env_set.WANDB_API_KEY='a b c'", "hydra.job.env_set.WANDB_API_KEY=REDACTED"),
        ("--password=hunter22", "--password=REDACTED"),
        ("+model.kwargs.apiKey=x", "+model.kwargs.apiKey=REDACTED"),
        # URLs keep their user and host, not their password; an HTTP URL's lone user may be a token.
        ("data.root=https://alice:pw@host/imagenet", "data.root=https://alice:REDACTED@host/imagenet"),
        ("https://ghp_0123456789@github.com/a/b.git", "https://REDACTED@github.com/a/b.git"),
        ("ssh://git@github.com/a/b.git", "ssh://git@github.com/a/b.git"),
        ("https://u:p@ss@host/x", "https://u:REDACTED@host/x"),
        # key=value pairs inside a longer text: Hydra's override_dirname, a URL's query.
        ("a=1,hydra.job.env_set.X_TOKEN=abc,b=2", "a=1,hydra.job.env_set.X_TOKEN=REDACTED,b=2"),
        ("https://host/w.pth?access_token=abc&v=2", "https://host/w.pth?access_token=REDACTED&v=2"),
        # The shapes of well-known API tokens, wherever they are.
        ("run sk-proj0123456789abcdefXYZ now", f"run {PLACEHOLDER} now"),
        ("hf_" + "a" * 34, PLACEHOLDER),
        # Left alone: ordinary overrides, paths, a git revision (40 hex digits like a W&B key).
        ("schedule.max_lr=0.02", "schedule.max_lr=0.02"),
        ("trainer.keep_checkpoints=3", "trainer.keep_checkpoints=3"),
        ("model.name=hf_hub:timm/resnet50.a1_in1k", "model.name=hf_hub:timm/resnet50.a1_in1k"),
        ("2637061b26a3a44435c24c3ecbafb1440c591cea", "2637061b26a3a44435c24c3ecbafb1440c591cea"),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text, env_secrets=[]) == expected


def test_the_value_of_an_environment_variable_named_like_a_secret_is_redacted_anywhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLR_TEST_API_TOKEN", "plantedenvvalue")
    monkeypatch.setenv("CLR_TEST_SHORT_TOKEN", "1")  # too short to search for
    monkeypatch.setenv("CLR_TEST_KEY_DIR", "/tmp")  # a path that exists: a place, not a secret
    monkeypatch.setenv("CLR_TEST_NOTES", "plainvalue12")  # not named like a secret
    assert redact_text("logger.run_name=x-plantedenvvalue-1") == f"logger.run_name=x-{PLACEHOLDER}-1"
    assert (
        redact_text("data.root=/tmp/data trainer.seed=1 plainvalue12")
        == "data.root=/tmp/data trainer.seed=1 plainvalue12"
    )


def test_redact_argv_covers_a_flag_followed_by_its_value() -> None:
    argv = ["clr-dist", "compare", "--token", "abc", "--out", "cmp", "logger.project=x"]
    assert redact_argv(argv) == ["clr-dist", "compare", "--token", PLACEHOLDER, "--out", "cmp", "logger.project=x"]


def test_argv_redacted_restores_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["train.py", "+hydra.job.env_set.HF_TOKEN=hf_x", "trainer.seed=1"])
    with argv_redacted():
        assert sys.argv == ["train.py", f"+hydra.job.env_set.HF_TOKEN={PLACEHOLDER}", "trainer.seed=1"]
    assert sys.argv[1] == "+hydra.job.env_set.HF_TOKEN=hf_x"


def test_redact_data_takes_whole_values_under_secret_keys_and_keeps_flags() -> None:
    record = {
        "env_set": {"HF_TOKEN": "hf_x", "OMP_NUM_THREADS": "1"},
        "auth": {"user": "alice", "port": 443},
        "use_auth": True,
        "api_key": None,
        "urls": ["https://alice:pw@host/a", "https://host/b"],
    }
    assert redact_data(record, env_secrets=[]) == {
        "env_set": {"HF_TOKEN": PLACEHOLDER, "OMP_NUM_THREADS": "1"},
        "auth": {"user": PLACEHOLDER, "port": PLACEHOLDER},
        "use_auth": True,
        "api_key": None,
        "urls": ["https://alice:REDACTED@host/a", "https://host/b"],
    }


def _keys(node: object, prefix: str = "") -> list[str]:
    if not dataclasses.is_dataclass(node):
        return []
    keys = []
    for f in dataclasses.fields(node):
        keys.append(f"{prefix}{f.name}")
        keys += _keys(getattr(node, f.name), f"{prefix}{f.name}.")
    return keys


def test_no_setting_of_the_config_is_taken_for_a_secret() -> None:
    """The W&B config and .hydra/config.yaml go through redact_data: a setting named like a
    secret would lose its value there."""
    keys = _keys(config.TrainConfig())
    assert "trainer.keep_checkpoints" in keys and "logger.record_host_and_git" in keys
    assert [k for k in keys if is_secret_name(k)] == []
