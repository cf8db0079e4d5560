"""The package as pip installs it: a wheel carries conf/ as clr_dist/conf, and an editable install
(`make setup`) reads the repository's conf/ live. The installs go into throwaway venvs that see
this venv's packages, so nothing is downloaded."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from clr_dist import config
from tests.conftest import REPO


def test_every_package_and_conf_folder_is_listed() -> None:
    """pyproject.toml lists the packages (find cannot map conf/ into clr_dist): a new subpackage
    or conf folder left out of the list would be left out of the wheel."""
    from setuptools import find_namespace_packages, find_packages

    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    conf = ["clr_dist.conf", *(f"clr_dist.conf.{name}" for name in find_namespace_packages(where=REPO / "conf"))]
    assert sorted(listed) == sorted([*find_packages(where=REPO, include=["clr_dist*"]), *conf])


def test_a_checkout_reads_the_repository_conf() -> None:
    assert config.CONF_DIR == str(REPO / "conf")


def _source_copy(dst: Path) -> Path:
    """What the build reads, copied: building in the checkout would leave build/ in it."""
    dst.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, dst / name)
    shutil.copytree(REPO / "conf", dst / "conf")
    shutil.copytree(REPO / "clr_dist", dst / "clr_dist", ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def _venv_with_our_dependencies(root: Path) -> tuple[Path, Path]:
    """A venv with nothing of its own that sees this venv's packages (torch, hydra, pip,
    setuptools) through a .pth file, after its own site-packages: what pip installs into it is
    what it imports. Its bin/ and site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site = next((root / "lib").glob("python3*/site-packages"))
    (site / "clr_dist_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root / "bin", site


def _pip_install(bin_dir: Path, *args: str) -> None:
    # --ignore-installed: pip sees this venv's clr-dist through the .pth and must leave it alone.
    command = [bin_dir / "python", "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    result = subprocess.run(
        [*command, "--no-index", "--ignore-installed", *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _run(bin_dir: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run([bin_dir / args[0], *args[1:]], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _where(bin_dir: Path, cwd: Path) -> tuple[Path, Path]:
    """The clr_dist package the venv imports, and the conf/ it composes from."""
    script = "import clr_dist, clr_dist.config as c; print(clr_dist.__file__); print(c.CONF_DIR)"
    package, conf = _run(bin_dir, ["python", "-c", script], cwd).stdout.split()
    return Path(package).parent, Path(conf)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_installed_wheel_composes_from_its_own_conf(tmp_path: Path) -> None:
    """`pip install .` (not editable), run from elsewhere with the source gone: the configs
    come from the installed package."""
    source = _source_copy(tmp_path / "source")
    bin_dir, site = _venv_with_our_dependencies(tmp_path / "venv")
    _pip_install(bin_dir, str(source))
    shutil.rmtree(source)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert _where(bin_dir, elsewhere) == (site / "clr_dist", site / "clr_dist" / "conf")
    assert (site / "clr_dist" / "conf" / "experiment" / "paper" / "cifar10_triangular2.yaml").is_file()

    job = _run(bin_dir, ["clr-dist", "train", "--cfg", "job", "experiment=demo", "trainer.max_steps=7"], elsewhere)
    assert "max_steps: 7" in job.stdout and "stop_after_cycles: 3" in job.stdout  # experiment=demo's
    _run(
        bin_dir,
        ["clr-dist", "schedule", "--csv", "lr.csv", "--steps-per-epoch", "5", "trainer.max_steps=40"],
        elsewhere,
    )
    with (elsewhere / "lr.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 40


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_editable_install_reads_the_source_conf_live(tmp_path: Path) -> None:
    """`pip install -e .`, as `make setup` installs: a preset added to conf/ after the install
    is there at once."""
    source = _source_copy(tmp_path / "source")
    bin_dir, _ = _venv_with_our_dependencies(tmp_path / "venv")
    _pip_install(bin_dir, "--editable", str(source))
    (source / "conf" / "model" / "added_later.yaml").write_text("name: resnet18\n")
    assert _where(bin_dir, tmp_path) == (source / "clr_dist", source / "conf")
    job = _run(bin_dir, ["clr-dist", "train", "--cfg", "job", "model=added_later"], tmp_path)
    assert "name: resnet18" in job.stdout
