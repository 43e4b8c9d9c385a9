"""The recipe's `build:` section: validation, the multi-stage Dockerfile, staging, CA bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rootfs_factory import add_ppml_support, make_spark_rootfs

from ppml_build.cli import main
from ppml_build.errors import ImageError, RecipeError
from ppml_build.gramine.build import BuildOptions, app_dockerfile
from ppml_build.gramine.manifest import render_manifest
from ppml_build.image import app_layer
from ppml_build.image.rootfs import DirRootFS
from ppml_build.plan import make_plan
from ppml_build.recipe import load_recipe_text

ROOT = Path(__file__).resolve().parents[2]
BASE = "127.0.0.1:5000/ppml/spark@sha256:" + "1" * 64

RECIPE = """\
apiVersion: ppml-build/v1
kind: spark
name: java-job
base:
  image: 127.0.0.1:5000/ppml/spark:1
build:
  packages: [openjdk-17-jdk-headless]
  sources:
    - src: src/
      dest: /build/src/
    - src: pom.properties
      dest: /build/pom.properties
  steps:
    - javac -d /build/classes $(find /build/src -name '*.java')
    - |
      jar --create --file /build/app.jar -C /build/classes .
      echo "done \\"quoted\\""
  outputs:
    - src: /build/app.jar
      dest: /app/app.jar
    - src: /build/lib/
      dest: /app/lib/
app:
  command: [/opt/spark/bin/spark-submit, --class, Main, /app/app.jar]
"""


def error_of(text: str) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe_text(text, "recipe.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_build_section_parses():
    recipe = load_recipe_text(RECIPE)
    stage = recipe.build
    assert stage.packages == ["openjdk-17-jdk-headless"]
    assert [(s.src, s.dest) for s in stage.sources] == [
        ("src/", "/build/src/"),
        ("pom.properties", "/build/pom.properties"),
    ]
    assert [o.is_dir for o in stage.outputs] == [False, True]
    assert (
        load_recipe_text(RECIPE.split("build:")[0] + "app:" + RECIPE.split("app:")[1]).build is None
    )


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            ("      dest: /app/lib/", "      dest: /app/lib"),
            "recipe.yaml:21:7: build.outputs[1]: src '/build/lib/' and dest '/app/lib' must both end "
            "with '/'",
        ),
        (
            ("    - src: /build/app.jar", "    - src: build/app.jar"),
            "recipe.yaml:19:12: build.outputs[0].src: 'build/app.jar' must be an absolute path",
        ),
        (
            ("      dest: /app/app.jar", "      dest: /app/../etc/app.jar"),
            "recipe.yaml:20:13: build.outputs[0].dest: '/app/../etc/app.jar' must not contain '..'",
        ),
        (
            ("    - src: src/", "    - src: ../elsewhere/"),
            "recipe.yaml:9:12: build.sources[0].src: '../elsewhere/' must be a relative path inside "
            "the recipe's directory",
        ),
        (
            ("  packages: [openjdk-17-jdk-headless]", '  packages: ["openjdk; rm -rf /"]'),
            "recipe.yaml:7:13: build.packages: 'openjdk; rm -rf /' is not a Debian package name",
        ),
        (("  steps:\n", "  stepz:\n"), "recipe.yaml:13:3: build.stepz: unknown key"),
        (
            ("    - javac -d", "    - ''\n    - javac -d"),
            "recipe.yaml:14:5: build.steps: step 0 is empty; remove it",
        ),
    ],
)
def test_build_section_errors_point_at_the_yaml(change, expected):
    message = error_of(RECIPE.replace(*change))
    assert message.startswith(expected), message


def test_a_build_stage_needs_outputs():
    text = RECIPE.split("  outputs:")[0] + "app:" + RECIPE.split("app:")[1]
    assert "build.outputs: list at least one output" in error_of(text)


def test_dockerfile_without_build_stage_is_unchanged():
    recipe = load_recipe_text(RECIPE.split("build:")[0] + "app:" + RECIPE.split("app:")[1])
    text = app_dockerfile(recipe, make_plan(recipe), BASE)
    assert text.splitlines()[0] == f"FROM {BASE} AS app"
    assert "AS build" not in text and "--from=build" not in text
    # ppml-build's support files are made FROM the app stage and copied onto it
    assert "FROM app AS ppml-support" in text.splitlines()
    assert text.splitlines()[-2:] == [
        "FROM app",
        "COPY --from=ppml-support /ppml-support/out/ /ppml/",
    ]
    # and a CA bundle has nowhere to go without a build stage
    assert app_dockerfile(recipe, make_plan(recipe), BASE, ca_bundle=True) == text


def stages(text: str) -> tuple[list[str], list[str]]:
    lines = text.splitlines()
    second = [i for i, line in enumerate(lines) if line.startswith("FROM ")][1]
    return lines[:second], lines[second:]


def test_dockerfile_with_build_stage():
    recipe = load_recipe_text(RECIPE)
    build, final = stages(app_dockerfile(recipe, make_plan(recipe), BASE))
    assert build[0] == f"FROM {BASE} AS build"
    run_apt = [line for line in build if "apt-get" in line]
    assert (
        len(run_apt) == 1
        and "install -y --no-install-recommends openjdk-17-jdk-headless" in run_apt[0]
    )
    assert 'COPY ["build-src/0", "/build/src/"]' in build
    assert 'COPY ["build-src/1", "/build/pom.properties"]' in build
    steps = [json.loads(line[len("RUN ") :]) for line in build if line.startswith("RUN [")]
    assert steps[-1] == ["/bin/sh", "-ec", recipe.build.steps[1]]  # newlines and quotes intact
    assert "\n" in steps[-1][2]
    assert final[0] == f"FROM {BASE} AS app"
    assert 'COPY --from=build ["/build/app.jar", "/app/app.jar"]' in final
    assert 'COPY --from=build ["/build/lib/", "/app/lib/"]' in final
    assert not any("ca-bundle" in line or "CERT" in line for line in build + final)


def test_ca_bundle_goes_to_the_build_stage_only():
    recipe = load_recipe_text(RECIPE)
    build, final = stages(app_dockerfile(recipe, make_plan(recipe), BASE, ca_bundle=True))
    assert "COPY ppml-ca-bundle.pem /etc/ppml-build/ca-bundle.pem" in build
    env = [line for line in build if line.startswith("ENV ")]
    for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        assert f"{name}=/etc/ppml-build/ca-bundle.pem" in env[0]
    assert (
        "Acquire::https::CAInfo=/etc/ppml-build/ca-bundle.pem"
        in [line for line in build if "apt-get" in line][0]
    )
    assert not any("ca-bundle" in line or "CERT" in line for line in final)


def write_recipe(directory: Path, text: str = RECIPE) -> Path:
    (directory / "src/org").mkdir(parents=True)
    (directory / "src/org/Main.java").write_text("class Main {}\n")
    (directory / "pom.properties").write_text("version=1\n")
    path = directory / "recipe.yaml"
    path.write_text(text)
    return path


def test_sources_are_staged_by_index(tmp_path):
    path = write_recipe(tmp_path / "recipe")
    recipe = load_recipe_text(path.read_text())
    context = tmp_path / "context"
    context.mkdir()
    app_layer.stage_app_files(recipe, path.parent, context, str(path))
    assert (context / "build-src/0/org/Main.java").read_text() == "class Main {}\n"
    assert (context / "build-src/1").read_text() == "version=1\n"


def test_a_file_source_needs_a_file_dest(tmp_path):
    path = write_recipe(
        tmp_path / "recipe", RECIPE.replace("dest: /build/pom.properties", "dest: /build/")
    )
    recipe = load_recipe_text(path.read_text())
    with pytest.raises(RecipeError) as info:
        app_layer.stage_app_files(recipe, path.parent, tmp_path, str(path))
    assert "build.sources[1].dest: '/build/' ends with '/' but the source is a file" in str(
        info.value
    )


def test_validate_checks_build_sources(tmp_path, capsys):
    path = write_recipe(tmp_path / "recipe")
    (path.parent / "pom.properties").unlink()
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"ppml-build: error: {path}: build.sources[1].src: 'pom.properties' does not "
        f"exist (looked in {path.parent})"
    ]


PEM = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"


def test_ca_bundle_is_staged_only_for_a_build_stage(tmp_path, monkeypatch):
    bundle = tmp_path / "proxy-ca.pem"
    bundle.write_text(PEM)
    recipe = load_recipe_text(RECIPE)
    plain = load_recipe_text(RECIPE.split("build:")[0] + "app:" + RECIPE.split("app:")[1])
    monkeypatch.delenv("PIP_CERT", raising=False)
    options = BuildOptions(recipe=tmp_path / "r.yaml", key=tmp_path / "k.pem", ca_bundle=bundle)
    said: list[str] = []

    context = tmp_path / "c1"
    context.mkdir()
    assert app_layer.stage_ca_bundle(options.ca_bundle, plain, context, said.append) is False
    assert not (context / "ppml-ca-bundle.pem").exists()

    assert app_layer.stage_ca_bundle(options.ca_bundle, recipe, context, said.append) is True
    assert (context / "ppml-ca-bundle.pem").read_text() == PEM
    assert "build stage only" in said[-1]

    # No --ca-bundle: $PIP_CERT, as `base bootstrap` does; neither: nothing staged.
    default = BuildOptions(recipe=tmp_path / "r.yaml", key=tmp_path / "k.pem")
    other = tmp_path / "c2"
    other.mkdir()
    assert app_layer.stage_ca_bundle(default.ca_bundle, recipe, other, said.append) is False
    monkeypatch.setenv("PIP_CERT", str(bundle))
    assert app_layer.stage_ca_bundle(default.ca_bundle, recipe, other, said.append) is True
    assert "$PIP_CERT" in said[-1]

    bundle.write_text("not a certificate\n")
    with pytest.raises(ImageError) as info:
        app_layer.stage_ca_bundle(options.ca_bundle, recipe, tmp_path / "c3", said.append)
    assert "not a PEM certificate bundle" in str(info.value)


def test_build_outputs_are_trusted_in_the_manifest(tmp_path):
    root = make_spark_rootfs(tmp_path / "rootfs")
    (root / "app/lib").mkdir(parents=True)
    (root / "app/app.jar").write_bytes(b"PK jar")
    (root / "app/lib/dep.jar").write_bytes(b"PK dep")
    text = RECIPE.replace("/opt/spark/bin/spark-submit", "spark-submit")
    recipe = load_recipe_text(text)
    add_ppml_support(root, make_plan(recipe))
    rendered = render_manifest(recipe, make_plan(recipe), DirRootFS(root))
    uris = [tf.uri for tf in rendered.trusted_files]
    assert "file:/app/app.jar" in uris and "file:/app/lib/dep.jar" in uris


def test_bundled_recipes_with_a_build_stage_are_reproducible_by_construction():
    """Jars carry timestamps and directory order: the bundled build stages pin both, so
    MRENCLAVE is stable across rebuilds without Docker's cache."""
    from ppml_build.recipe import load_recipe

    staged = [load_recipe(p) for p in sorted((ROOT / "recipes").glob("*/*/recipe.yaml"))]
    staged = [r for r in staged if r.build is not None]
    assert {r.name for r in staged} >= {"spark-java-pi", "flink-java-wordcount"}
    for recipe in staged:
        jar_steps = [s for s in recipe.build.steps if "jar --create" in s]
        assert jar_steps and all("--date" in s and "sort" in s for s in jar_steps), recipe.name
