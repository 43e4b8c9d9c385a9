"""Recipe validation: what a user sees for good and bad recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppml_build.cli import main
from ppml_build.errors import RecipeError
from ppml_build.recipe import load_recipe, load_recipe_text
from ppml_build.units import GiB, MiB, Size

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = sorted((ROOT / "recipes").glob("*/*/recipe.yaml"))

GOOD = """\
apiVersion: ppml-build/v1
kind: spark
name: demo
base:
  image: 127.0.0.1:5000/ppml/spark:1
app:
  files:
    - src: job.py
      dest: /app/job.py
  command: [/opt/spark/bin/spark-submit, /app/job.py]
enclave:
  size: 16G
  max_threads: 64
"""


def error_of(text: str) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe_text(text, "recipe.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bundled_recipes_exist_for_both_engines():
    kinds = {path.parent.parent.name for path in BUNDLED}
    assert {"spark", "flink"} <= kinds


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_validate_accepts_every_bundled_recipe(path, capsys):
    assert main(["validate", str(path)]) == 0
    assert ": ok (" in capsys.readouterr().out


def test_good_recipe_defaults():
    recipe = load_recipe_text(GOOD)
    assert recipe.libos.type == "gramine" and recipe.libos.version == "1.9"
    assert recipe.libos.prefix == "/usr/lib/x86_64-linux-gnu/gramine/"
    assert recipe.enclave.size == Size(16 << 30, "16G") and recipe.enclave.size_bytes == 16 << 30
    assert recipe.enclave.debug is False


def test_unknown_key_points_at_the_key():
    text = GOOD.replace("  max_threads: 64\n", "  max_threads: 64\n  thread_num: 8\n")
    assert error_of(text) == (
        "recipe.yaml:14:3: enclave.thread_num: unknown key; check the "
        "spelling (see `ppml-build init` for a commented recipe)"
    )


def test_wrong_type():
    message = error_of(GOOD.replace("max_threads: 64", "max_threads: [1]"))
    assert message.startswith(
        "recipe.yaml:13:16: enclave.max_threads: must be 'auto' or a whole number"
    )


def test_missing_field():
    message = error_of(GOOD.replace("kind: spark\n", ""))
    assert message == "recipe.yaml:1:1: kind: required field is missing"
    message = error_of(GOOD.replace("  command: [/opt/spark/bin/spark-submit, /app/job.py]\n", ""))
    assert message.startswith("recipe.yaml:7:3: app.command: required field is missing")


def test_yaml_syntax_error():
    message = error_of(GOOD.replace("size: 16G", "size: [16G"))
    assert message.startswith("recipe.yaml:13:") and "YAML syntax error" in message


def test_sizes_are_parsed_once_into_bytes_keeping_the_text_for_messages():
    recipe = load_recipe_text(
        GOOD.replace("size: 16G", "size: 16384m").replace(
            "enclave:\n",
            "resources:\n  jvm: {heap: 3g, thread_stack: 1048576}\n"
            "  spark: {spark.driver.memory: 2048, spark.executor.memory: 4g}\n"
            "  flink: {taskmanager.memory.process.size: 1728m}\nenclave:\n",
        )
    )
    # enclave.size is written back in Gramine's spelling, as plan warnings show it.
    assert recipe.enclave.size == Size(16 * GiB, "16G") and str(recipe.enclave.size) == "16G"
    jvm, spark = recipe.resources.jvm, recipe.resources.spark
    assert jvm.heap == Size(3 * GiB, "3g") and jvm.thread_stack == Size(MiB, "1048576")
    # Spark reads a bare number as MiB, the JVM (and Flink) as bytes.
    assert spark.driver_memory == Size(2048 * MiB, "2048")
    assert spark.executor_memory == Size(4 * GiB, "4g")
    assert recipe.resources.flink.process_size == Size(1728 * MiB, "1728m")
    auto = load_recipe_text(GOOD.replace("size: 16G", "size: auto"))
    assert auto.enclave.size is None and auto.enclave.size_bytes is None


def test_non_power_of_two_size():
    assert error_of(GOOD.replace("16G", "12G")) == (
        "recipe.yaml:12:9: enclave.size: must be a power of two, e.g. 16G (got 12G)"
    )


def test_size_over_gramine_limit():
    assert "at most 1024G" in error_of(GOOD.replace("16G", "2048G"))


def test_threads_over_4096():
    assert error_of(GOOD.replace("64", "5000")) == (
        "recipe.yaml:13:16: enclave.max_threads: must be from 1 to 4096 (Gramine's limit), got 5000"
    )


@pytest.mark.parametrize("src", ["../etc/passwd", "/etc/passwd", "a/../../b"])
def test_path_traversal_in_app_files_src(src):
    message = error_of(GOOD.replace("src: job.py", f"src: {src}"))
    assert (
        message.startswith("recipe.yaml:8:12: app.files[0].src:")
        and "recipe's directory" in message
    )


def test_path_traversal_in_app_files_dest():
    message = error_of(GOOD.replace("dest: /app/job.py", "dest: /app/../etc/shadow"))
    assert "app.files[0].dest" in message and "'..'" in message


def test_duplicate_key():
    assert "duplicate key 'name'" in error_of(GOOD + "name: again\n")


def test_wrong_api_version():
    assert error_of(GOOD.replace("ppml-build/v1", "v2")) == (
        "recipe.yaml:1:13: apiVersion: must be 'ppml-build/v1', got 'v2'"
    )


def test_env_both_trusted_and_passthrough():
    text = GOOD.replace("  command:", "  env: {A: b}\n  passthrough_env: [A]\n  command:")
    assert "both set in app.env and passed through" in error_of(text)


def test_isv_ids_are_u16():
    message = error_of(GOOD.replace("max_threads: 64", "max_threads: 64\n  isv_svn: 70000"))
    assert message.startswith("recipe.yaml:14:12: enclave.isv_svn: ")


def test_missing_app_file_is_reported_by_validate(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(GOOD)
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"ppml-build: error: {recipe}: app.files[0].src: 'job.py' does not exist "
        f"(looked in {tmp_path})"
    )
    (tmp_path / "job.py").write_text("print(1)\n")
    assert main(["validate", str(recipe)]) == 0


def test_symlinked_app_file_cannot_escape(tmp_path, capsys):
    (tmp_path / "job.py").symlink_to("/etc/hostname")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(GOOD)
    assert main(["validate", str(recipe)]) == 2
    assert "leaves the recipe's directory" in capsys.readouterr().err


def test_missing_recipe_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"ppml-build: error: {tmp_path / 'nope.yaml'}: no such recipe file"
    )


def test_init_writes_a_recipe_that_validates(tmp_path, capsys):
    for kind in ("spark", "flink"):
        target = tmp_path / kind
        assert main(["init", kind, str(target)]) == 0
        recipe = load_recipe(target / "recipe.yaml")
        assert recipe.kind == kind
        assert main(["validate", str(target / "recipe.yaml")]) == 0
    # never overwrites
    assert main(["init", "spark", str(tmp_path / "spark")]) == 2
    assert "already exists" in capsys.readouterr().err


# Fuzzing: no input, however mangled, may crash with anything but a RecipeError.
_yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.text(max_size=20),
    st.floats(allow_nan=False),
)
_yaml_values = st.recursive(
    _yaml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_fuzz_arbitrary_text_never_crashes(text):
    try:
        load_recipe_text(text, "fuzz.yaml")
    except RecipeError as err:
        assert str(err).startswith("fuzz.yaml")
        assert "\n" not in str(err)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(
        [
            "apiVersion",
            "kind",
            "name",
            "base",
            "app",
            "enclave",
            "resources",
            "files",
            "libos",
            "runtime",
        ]
    ),
    _yaml_values,
)
def test_fuzz_replacing_a_section_never_crashes(key, value):
    import yaml

    data = yaml.safe_load(GOOD)
    data[key] = value
    try:
        load_recipe_text(yaml.safe_dump(data), "fuzz.yaml")
    except RecipeError as err:
        assert str(err).startswith("fuzz.yaml") and "\n" not in str(err)
