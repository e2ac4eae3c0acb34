"""`waste-edge data check | split | download` through the real argument parser."""

from __future__ import annotations

import json
import socket

import pytest

from waste_edge import cli
from waste_edge.data import download
from waste_edge.data.check import DEFAULT_FINE_THRESHOLD, DEFAULT_THRESHOLD
from waste_edge.data.discovery import discover


def test_cli_defaults_match_the_library():
    args = cli.build_parser().parse_args(["data", "check", "somewhere"])
    assert args.radius == DEFAULT_THRESHOLD and args.fine_radius == DEFAULT_FINE_THRESHOLD
    assert args.fail_on == "never"


def test_data_check_prints_summary_writes_json_and_exits_0(small_dataset, tmp_path, capsys):
    root, _ = small_dataset
    out = tmp_path / "report.json"
    rc = cli.main(["data", "check", str(root), "--json", str(out), "--cache", str(tmp_path / "c"), "--workers", "1"])
    text = capsys.readouterr().out
    assert rc == 0  # problems found, but the check ran
    assert "LEAKAGE" in text and "near duplicates" in text and "unreadable files:        4" in text
    rep = json.loads(out.read_text(encoding="utf-8"))
    assert rep["summary"]["unreadable"] == 4 and rep["summary"]["near_duplicate_pairs"] >= 4
    assert cli.main(["data", "check", str(root), "--cache", str(tmp_path / "c"), "--fail-on", "leakage"]) == 1
    assert "found leakage" in capsys.readouterr().err


def test_data_check_bad_arguments(tmp_path, capsys):
    assert cli.main(["data", "check", str(tmp_path / "missing")]) == 1
    assert "dataset not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad:
        cli.main(["data", "check", str(tmp_path), "--radius", "40"])
    assert bad.value.code == 2 and "--radius" in capsys.readouterr().err
    with pytest.raises(SystemExit) as old:
        cli.main(["data", "check", str(tmp_path), "--threshold", "8"])  # the retired spelling names the new one
    assert old.value.code == 2 and "--threshold is now --radius" in capsys.readouterr().err


def test_data_split_cli(small_dataset, tmp_path, capsys):
    root, _ = small_dataset
    out = tmp_path / "split.csv"
    rc = cli.main(["data", "split", str(root), "--out", str(out), "--test-size", "0.25", "--seed", "1", "--cache", str(tmp_path / "c")])
    assert rc == 0 and "wrote" in capsys.readouterr().out
    ds = discover(out)
    assert set(ds.counts()) == {"train", "test"}
    # the train verb accepts it (the pipeline reads --split-file through discover)
    args = cli.build_parser().parse_args(["train", "linear", "--data", str(root), "--split-file", str(out), "--out", "r"])
    assert args.split_file == out


@pytest.fixture()
def no_credentials(tmp_path, monkeypatch):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "home" / ".kaggle"))


def test_download_without_credentials_fails_fast_with_manual_layout(no_credentials, capsys, monkeypatch):
    """Fast means: nothing touches the network before the credentials are known (checked by what is called, not by
    a clock: importing kagglehub alone takes seconds on a loaded machine)."""
    monkeypatch.setattr(download, "tcp_unreachable", lambda *a, **kw: pytest.fail("no network check before credentials"))
    monkeypatch.setattr(socket, "create_connection", lambda *a, **kw: pytest.fail("no connection before credentials"))
    assert cli.main(["data", "download"]) == 1
    err = capsys.readouterr().err
    assert "no Kaggle credentials" in err and "KAGGLE_USERNAME" in err and "kaggle.json" in err
    assert "TRAIN.1" in err and "TEST/{B,N}" in err


def test_download_without_network_fails_fast(no_credentials, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "0" * 32)
    monkeypatch.setattr(download, "tcp_unreachable", lambda *a, **kw: "gaierror: Name or service not known")
    assert cli.main(["data", "download"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach www.kaggle.com" in err and "TRAIN.n/{B,N}" in err


def test_download_finds_the_split_folders_inside_the_archive(no_credentials, monkeypatch, tmp_path, capsys):
    import kagglehub

    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "0" * 32)
    monkeypatch.setattr(download, "tcp_unreachable", lambda *a, **kw: None)
    calls = []

    def fake_download(handle, path=None, *, force_download=False, output_dir=None):
        calls.append((handle, output_dir))
        for part in ("TRAIN.1/B", "TRAIN.1/N", "TEST/B", "TEST/N"):
            (tmp_path / "dl" / "wrapper" / part).mkdir(parents=True, exist_ok=True)
        return str(tmp_path / "dl")

    monkeypatch.setattr(kagglehub, "dataset_download", fake_download)
    assert cli.main(["data", "download", "--out", str(tmp_path / "dl")]) == 0
    assert calls == [(download.DATASET, str(tmp_path / "dl"))]
    assert f"dataset in {tmp_path / 'dl' / 'wrapper'}" in capsys.readouterr().out


def test_download_reports_kagglehub_errors_in_one_line(no_credentials, monkeypatch, capsys):
    import kagglehub

    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "0" * 32)
    monkeypatch.setattr(download, "tcp_unreachable", lambda *a, **kw: None)

    def boom(*a, **kw):
        raise RuntimeError("403 Forbidden")

    monkeypatch.setattr(kagglehub, "dataset_download", boom)
    assert cli.main(["data", "download"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "403 Forbidden" in err and "by hand" in err
