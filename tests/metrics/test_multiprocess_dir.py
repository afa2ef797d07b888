"""The gateway's prometheus_client multiprocess directory (shared.metrics.prepare_multiprocess_dir, run by
gunicorn_config before the workers fork)."""

from __future__ import annotations

import os

from shared.metrics import prepare_multiprocess_dir


def test_without_a_directory_a_new_empty_one_is_made(monkeypatch):
    # (set, so that monkeypatch restores what this process had after prepare_multiprocess_dir changed it)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    directory = prepare_multiprocess_dir()
    try:
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == directory
        assert os.path.isdir(directory) and not os.listdir(directory)
    finally:
        os.rmdir(directory)


def test_an_earlier_runs_counts_are_removed_and_nothing_else(monkeypatch, tmp_path):
    # Given the directory of an earlier run, holding its counts and a file of the operator's
    (tmp_path / "counter_123.db").write_bytes(b"old counts")
    (tmp_path / "histogram_456.db").write_bytes(b"old counts")
    (tmp_path / "README").write_text("the operator's")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    # When the gateway starts
    assert prepare_multiprocess_dir() == str(tmp_path)
    # Then only prometheus_client's files are gone
    assert sorted(os.listdir(tmp_path)) == ["README"]
