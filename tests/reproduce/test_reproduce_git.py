"""The report's git commit: the repository the command runs in or that holds the experiment, never the
repository that happens to enclose an installed package."""

import shutil
import subprocess

import pytest

from unet.reproduce.report import git_commit, render_markdown

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git program")


def _git(cwd, *args):
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A fresh repository with one commit that ignores ``venv/``; git looks no higher than tmp_path."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    root = tmp_path / "project"
    (root / "venv" / "site-packages").mkdir(parents=True)
    (root / ".gitignore").write_text("venv/\n")
    (root / "exp.yaml").write_text("name: e\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "first")
    return root


def test_commit_of_the_current_directory(repo, monkeypatch):
    monkeypatch.chdir(repo)
    got = git_commit()
    assert got["commit"] == _git(repo, "rev-parse", "HEAD") and got["dirty"] is False
    (repo / "exp.yaml").write_text("name: changed\n")
    assert git_commit()["dirty"] is True


def test_falls_back_to_the_experiment_file_then_unknown(repo, tmp_path, monkeypatch):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    monkeypatch.chdir(outside)
    assert git_commit() == {"commit": "unknown", "dirty": None}
    assert git_commit(outside, repo / "exp.yaml")["commit"] == _git(repo, "rev-parse", "HEAD")


def test_a_repository_ignoring_the_place_is_not_its_code(repo, tmp_path, monkeypatch):
    """A wheel installed in a repository's (ignored) virtual environment: not that repository's commit."""
    installed = repo / "venv" / "site-packages" / "exp.yaml"
    installed.write_text("name: e\n")
    monkeypatch.chdir(repo / "venv" / "site-packages")
    assert git_commit(repo / "venv" / "site-packages", installed) == {"commit": "unknown", "dirty": None}


def test_unknown_commit_renders_cleanly(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    g = git_commit()
    report = {"title": "t", "experiment": "e", "profile": "cpu", "profile_description": "", "metrics": [],
              "runs": [], "paper": [], "n_folds": 0, "folds": [], "kind": "isbi", "targets": [], "comparisons": [],
              "protocol": "p", "command": "unet reproduce e", "git": g,
              "machine": {"platform": "x", "cpu_count": 1, "torch": "2", "device": "cpu"},
              "started": "a", "finished": "b", "wall_seconds": 1.0, "base_config": "b.yaml"}
    assert "- git commit: `unknown`\n" in render_markdown(report)
