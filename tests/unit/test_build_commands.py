"""`ppml-build build --base-index`: passed through to the build, bad values refused (exit 2)."""

from __future__ import annotations

from pathlib import Path

from ppml_build.cli import main
from ppml_build.pipeline import backends
from ppml_build.pipeline.options import BuildResult


def _fake_build(calls: list):
    def fake(options, say=lambda line: None):
        calls.append(options)
        out = Path(options.output_dir)
        record = {"mrenclave": "11" * 32, "mrsigner": "22" * 32}
        return BuildResult(record, out / "measurement.json", out, "ppml/app:latest", {}, [])

    return fake


def test_base_index_defaults_to_registry_and_takes_engine(tmp_path, monkeypatch, capsys):
    calls: list = []
    monkeypatch.setattr(backends, "build", _fake_build(calls))
    args = [
        "build",
        str(tmp_path / "recipe.yaml"),
        "--key",
        str(tmp_path / "k.pem"),
        "--output-dir",
        str(tmp_path / "out"),
    ]
    assert main(args) == 0
    assert main(args + ["--base-index", "engine"]) == 0
    assert [c.base_index for c in calls] == ["registry", "engine"]


def test_a_bad_base_index_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    calls: list = []
    monkeypatch.setattr(backends, "build", _fake_build(calls))
    code = main(
        [
            "build",
            str(tmp_path / "recipe.yaml"),
            "--key",
            str(tmp_path / "k.pem"),
            "--output-dir",
            str(tmp_path / "out"),
            "--base-index",
            "bogus",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    # A bad command line is one error line too (cli.main), naming the option and the choices.
    assert err.count("\n") == 1 and err.startswith("ppml-build: error: "), err
    assert "--base-index" in err and "registry" in err
    assert calls == [] and not (tmp_path / "out").exists()
