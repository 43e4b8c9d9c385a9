"""Hostile and careless recipes: each ends in one line naming the file, the field and the fix,
exit 2, never a traceback or a hang (issue: hostile and careless input)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml

from ppml_build.cli import main
from ppml_build.errors import printable
from ppml_build.limits import MAX_RECIPE_VALUES

ROOT = Path(__file__).resolve().parents[2]
PYSPARK = ROOT / "recipes" / "spark" / "pyspark-sql-agg"


def write_recipe(tmp_path: Path, edit=None, *, text: str | None = None) -> Path:
    """The bundled PySpark recipe (with its job.py) in tmp_path, after ``edit(data)``."""
    shutil.copy(PYSPARK / "job.py", tmp_path / "job.py")
    if text is None:
        data = yaml.safe_load((PYSPARK / "recipe.yaml").read_text())
        if edit is not None:
            edit(data)
        text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error(capsys, *argv: str) -> str:
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ppml-build: error: "), err
    return lines[0]


def add_args(*extra: str):
    def edit(data):
        data["app"]["command"] = (
            data["app"]["command"][:-1] + list(extra) + data["app"]["command"][-1:]
        )

    return edit


@pytest.mark.parametrize(
    "args, shown",
    [
        (("--driver-memory", "1.5g"), "spark.driver.memory = '1.5g'"),
        (("--conf", "spark.executor.memory=lots"), "spark.executor.memory = 'lots'"),
        (("--conf", "spark.executor.memory=0"), "spark.executor.memory = '0'"),
        (("--executor-cores", "two"), "spark.executor.cores = 'two'"),
    ],
)
def test_spark_submit_sizes_and_counts_that_spark_cannot_read(tmp_path, capsys, args, shown):
    line = one_error(capsys, "plan", str(write_recipe(tmp_path, add_args(*args))))
    assert f"app.command: {shown}" in line
    assert "e.g." in line or "whole number" in line


@pytest.mark.parametrize(
    "flag, message",
    [
        ("-Xss0", "a size of 0"),
        ("-Xss64k", "below HotSpot's minimum of 136K"),
        ("-Xmx0", "a size of 0"),
        ("-XX:ActiveProcessorCount=0", "from 1 to 1024"),
        ("-Xmx" + "9" * 40, "digits is not a size"),
    ],
)
def test_jvm_flags_the_plan_cannot_size_for(tmp_path, capsys, flag, message):
    def edit(data):
        data["app"]["env"]["JAVA_TOOL_OPTIONS"] = flag

    line = one_error(capsys, "plan", str(write_recipe(tmp_path, edit)))
    assert message in line and "JAVA_TOOL_OPTIONS" in line


def test_an_unbalanced_quote_in_java_tool_options(tmp_path, capsys):
    def edit(data):
        data["app"]["env"]["JAVA_TOOL_OPTIONS"] = "-Dname='a b"

    line = one_error(capsys, "validate", str(write_recipe(tmp_path, edit)))
    assert "app.env: JAVA_TOOL_OPTIONS: No closing quotation" in line
    assert "balance the quotes" in line


@pytest.mark.parametrize("value", ["-1", "0", "lots", "４"])
def test_malloc_arena_max_must_be_a_count(tmp_path, capsys, value):
    def edit(data):
        data["app"]["env"]["MALLOC_ARENA_MAX"] = value

    line = one_error(capsys, "plan", str(write_recipe(tmp_path, edit)))
    assert "app.env.MALLOC_ARENA_MAX" in line and "from 1 to 1024" in line


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("isv_svn", True, "enclave.isv_svn: must be a whole number, got bool"),
        ("isv_prod_id", "1", "enclave.isv_prod_id: must be a whole number, got str"),
        ("debug", "yes", "enclave.debug: must be true or false, got str"),
        ("edmm", 1, "enclave.edmm: must be true or false, got int"),
    ],
)
def test_strict_types_where_a_wrong_value_changes_the_enclave(
    tmp_path, capsys, field, value, message
):
    line = one_error(
        capsys,
        "validate",
        str(write_recipe(tmp_path, lambda d: d["enclave"].update({field: value}))),
    )
    assert message in line


def test_yaml_1_1_yes_is_not_taken_for_true(tmp_path, capsys):
    text = (PYSPARK / "recipe.yaml").read_text().replace("debug: false", "debug: on")
    line = one_error(capsys, "validate", str(write_recipe(tmp_path, text=text)))
    assert "enclave.debug: 'on' is read as a boolean by YAML 1.1; write true or false" in line


def test_full_width_digits_are_not_a_size(tmp_path, capsys):
    def edit(data):
        data["resources"]["spark"]["spark.driver.memory"] = "１g"

    line = one_error(capsys, "validate", str(write_recipe(tmp_path, edit)))
    assert "resources.spark.spark.driver.memory: not a size" in line


def test_a_number_past_the_digit_limit(tmp_path, capsys):
    text = (PYSPARK / "recipe.yaml").read_text().replace("isv_svn: 1", "isv_svn: " + "9" * 5000)
    line = one_error(capsys, "validate", str(write_recipe(tmp_path, text=text)))
    assert "enclave.isv_svn: a number of more than 30 digits" in line


@pytest.mark.parametrize("where", ["argv", "env"])
def test_nul_in_argv_or_env_is_refused_naming_the_field(tmp_path, capsys, where):
    def edit(data):
        if where == "argv":
            data["app"]["command"].append("a\0b")
        else:
            data["app"]["env"]["X"] = "a\0b"

    line = one_error(capsys, "validate", str(write_recipe(tmp_path, edit)))
    assert ("app.command[8]" if where == "argv" else "app.env.X") in line
    assert "U+0000 (NUL)" in line and "C strings" in line


def test_a_lone_surrogate_is_refused_naming_it(tmp_path, capsys):
    text = (
        (PYSPARK / "recipe.yaml")
        .read_text()
        .replace("SPARK_LOCAL_IP: 127.0.0.1", 'SPARK_LOCAL_IP: "\\ud800"')
    )
    line = one_error(capsys, "validate", str(write_recipe(tmp_path, text=text)))
    assert "app.env.SPARK_LOCAL_IP: contains U+D800" in line


def test_deep_nesting_is_a_limit_not_a_recursion_error(tmp_path, capsys):
    path = write_recipe(tmp_path, text="a: " + "[" * 3000 + "]" * 3000 + "\n")
    assert "nest deeper than 64 levels" in one_error(capsys, "validate", str(path))
    path = write_recipe(tmp_path, text="a: " + "[" * 70 + "]" * 70 + "\n")
    assert "nest deeper than 64 levels" in one_error(capsys, "validate", str(path))


def test_billion_laughs_stops_at_the_value_limit_quickly(tmp_path, capsys):
    lines = ["apiVersion: ppml-build/v1", "a: &a [x, x, x, x, x, x, x, x, x]"]
    for name, prev in zip("bcdefghi", "abcdefgh"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    path = write_recipe(tmp_path, text="\n".join(lines) + "\n")
    assert len(path.read_bytes()) < 800
    start = time.monotonic()
    line = one_error(capsys, "validate", str(path))
    assert time.monotonic() - start < 5
    assert f"expands to more than {MAX_RECIPE_VALUES:,} values" in line


def test_a_self_referring_alias(tmp_path, capsys):
    path = write_recipe(tmp_path, text="a: &a [*a]\n")
    assert "alias refers to itself" in one_error(capsys, "validate", str(path))


def test_a_huge_file_is_not_read_whole(tmp_path, capsys):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    assert "larger than 1,048,576 bytes" in one_error(capsys, "validate", str(path))


def test_non_utf8_recipe_says_where(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"apiVersion: ppml-build/v1\nname: \xff\n")
    assert "not UTF-8 text (byte 32)" in one_error(capsys, "validate", str(path))


def test_control_characters_in_a_path_are_escaped(tmp_path, capsys):
    line = one_error(capsys, "validate", str(tmp_path / "x\x1b[31mred\rz.yaml"))
    assert "\x1b" not in line and "\r" not in line
    assert "x\\x1b[31mred\\rz.yaml: no such recipe file" in line


def test_control_characters_in_a_value_are_escaped(tmp_path, capsys):
    line = one_error(
        capsys,
        "validate",
        str(write_recipe(tmp_path, lambda d: d.update(name="a\x1b]0;pwned\x07"))),
    )
    assert "\x1b" not in line and "\x07" not in line and "name: must be lowercase" in line


def test_printable_escapes_what_acts_on_a_terminal():
    assert printable("a\x1b[2Jb\r\n\u202ec\x00\x85😀é") == "a\\x1b[2Jb\\r\\n\\u202ec\\x00\\x85😀é"


@pytest.mark.parametrize("name", ["LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH", "LD_AUDIT"])
def test_passthrough_of_loader_variables_needs_the_insecure_flag(tmp_path, capsys, name):
    path = write_recipe(tmp_path, lambda d: d["app"].update(passthrough_env=[name]))
    code, out, _ = run(capsys, "plan", str(path))
    assert code == 0
    assert f'warning: app.passthrough_env: "{name}" needs --allow-insecure-manifest' in out
    line = one_error(capsys, "build", str(path), "--key", str(tmp_path / "no-key.pem"))
    assert f'app.passthrough_env: "{name}" is refused without --allow-insecure-manifest' in line


@pytest.mark.parametrize("name", ["JAVA_TOOL_OPTIONS", "MALLOC_ARENA_MAX", "PYSPARK_SUBMIT_ARGS"])
def test_passthrough_cannot_replace_what_the_plan_sets(tmp_path, capsys, name):
    path = write_recipe(tmp_path, lambda d: d["app"].update(passthrough_env=[name]))
    line = one_error(capsys, "plan", str(path))
    assert f"app.passthrough_env[0]: {name} is set by ppml-build" in line


@pytest.mark.parametrize("allowed", ["/", "/.", "//"])
def test_an_allowed_tree_of_the_whole_file_system(tmp_path, capsys, allowed):
    path = write_recipe(tmp_path, lambda d: d["files"].update(allowed=[allowed]))
    code, out, _ = run(capsys, "plan", str(path))
    assert code == 0 and 'warning: files.allowed: "/" needs --allow-insecure-manifest' in out
    line = one_error(capsys, "build", str(path), "--key", str(tmp_path / "no-key.pem"))
    assert 'files.allowed: "/" is refused without --allow-insecure-manifest' in line


def test_a_trusted_tree_deeper_than_the_limit(tmp_path):
    from ppml_build.errors import InputLimitError
    from ppml_build.gramine.trusted import expand_trusted_file_list
    from ppml_build.image.rootfs import DirRootFS
    from ppml_build.limits import MAX_TREE_DEPTH

    deep = tmp_path / "d"
    leaf = deep.joinpath(*["x"] * (MAX_TREE_DEPTH + 5))
    leaf.mkdir(parents=True)
    (leaf / "f").write_text("x")
    with pytest.raises(InputLimitError, match=f"more than {MAX_TREE_DEPTH} directory levels"):
        expand_trusted_file_list(["file:/d/"], DirRootFS(tmp_path))
    shallow = tmp_path / "s" / "a" / "b"
    shallow.mkdir(parents=True)
    (shallow / "f").write_text("x")
    assert [tf.uri for tf in expand_trusted_file_list(["file:/s/"], DirRootFS(tmp_path))] == [
        "file:/s/a/b/f"
    ]


def test_a_file_name_that_is_not_utf8_in_a_trusted_tree(tmp_path):
    import os

    from ppml_build.errors import ManifestError
    from ppml_build.gramine.trusted import expand_trusted_file_list
    from ppml_build.image.rootfs import DirRootFS

    (tmp_path / "d").mkdir()
    with open(os.path.join(os.fsencode(tmp_path / "d"), b"caf\xe9"), "wb") as handle:
        handle.write(b"x")
    with pytest.raises(ManifestError) as info:
        expand_trusted_file_list(["file:/d/"], DirRootFS(tmp_path))
    assert "/d/caf\\xe9 is not a UTF-8 file name" in str(info.value)


def test_a_huge_echoed_value_keeps_the_field_and_the_fix(tmp_path, capsys):
    path = write_recipe(
        tmp_path, lambda d: d["resources"]["spark"].update({"spark.driver.memory": "x" * 100_000})
    )
    line = one_error(capsys, "validate", str(path))
    assert len(line) < 2100 and "resources.spark.spark.driver.memory: not a size" in line
    assert "characters left out" in line and line.endswith("write e.g. 16G, 512M or 1728m")
