"""course_lib.profiles: one place for sizes, chosen by COURSE_PROFILE."""

import pytest

from course_lib import profiles
from course_lib.profiles import PROFILES


def test_environment_chooses_the_profile(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "cpu")
    assert profiles.get_profile().name == "cpu"
    assert profiles.get_profile("ci").name == "ci"  # an explicit name wins


def test_default_follows_the_hardware(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    import torch

    assert profiles.get_profile().name == ("gpu" if torch.cuda.is_available() else "cpu")


def test_unknown_profile_is_named(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "laptop")
    with pytest.raises(ValueError, match="COURSE_PROFILE='laptop' is not a profile; choose one of ci, cpu, gpu"):
        profiles.get_profile()


def test_every_profile_has_every_setting():
    assert set(profiles.PROFILES) == set(profiles.PROFILE_NAMES)
    for name, profile in profiles.PROFILES.items():
        assert profile.name == name
        assert "vocab_size" in profiles.describe(profile)


def test_work_dir_is_created_under_course_work_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_WORK_DIR", str(tmp_path))
    assert profiles.work_dir("a", "b") == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()


def test_set_seed_repeats_random_draws():
    import torch

    profiles.set_seed(3)
    a = torch.rand(3)
    profiles.set_seed(3)
    assert torch.equal(a, torch.rand(3))


def test_notebook_06s_probes_try_notebook_08s_strengths_outside_ci():
    from course_lib import downstream

    for name in ("cpu", "gpu"):
        assert PROFILES[name].transfer_probe_grid == downstream.PROBE_GRID
    assert set(PROFILES["ci"].transfer_probe_grid) <= set(downstream.PROBE_GRID)
