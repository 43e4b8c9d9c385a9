"""Occlum 0.31 backend: Occlum.json and bom.yaml from a recipe, a plan and an image filesystem."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Annotated, Literal

import pytest
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from rootfs_factory import add_ppml_support, make_spark_rootfs

from ppml_build.cli import main
from ppml_build.errors import ManifestError, PlanError, RecipeError
from ppml_build.image.hashing import FileHasher
from ppml_build.image.rootfs import DirRootFS
from ppml_build.occlum.config import check_occlum_json, render_occlum
from ppml_build.occlum.entry import entry_script
from ppml_build.plan import make_plan
from ppml_build.recipe import load_recipe_text
from ppml_build.units import format_occlum_size, parse_occlum_size

PROJECT = Path(__file__).resolve().parents[2]
JDK = "/usr/lib/jvm/java-17-openjdk-amd64"

SPARK = """\
apiVersion: ppml-build/v1
kind: spark
name: spark-occlum
base: {image: "127.0.0.1:5000/ppml/spark-occlum:1"}
libos: {type: occlum, version: "0.31"}
app:
  files: [{src: job.py, dest: /app/job.py}]
  # Occlum has no fork: the JVM starts directly, with what spark-submit would have run
  command: [/usr/lib/jvm/java-17-openjdk-amd64/bin/java, -Xmx2g, -cp, "/opt/spark/jars/*",
            org.apache.spark.deploy.SparkSubmit, --master, "local[2]", /app/job.py]
  env: {SPARK_LOCAL_IP: 127.0.0.1, GREETING: "a b=c"}
  passthrough_env: [RUN_ID, AWS_REGION]
enclave: {isv_prod_id: 7, isv_svn: 3}
files:
  trusted: [/etc/os-release]
  allowed: [/data/in/]
  encrypted: [{path: /data/enc, uri: "file:/srv/enc"}]
  tmpfs: [/tmp, /scratch]
"""


FLINK_JAVA_COMMAND = "[java, -Xmx1g, -cp, '/app/wc.jar:/opt/flink/lib/*', WordCount]"


def flink_recipe_text(command: str = FLINK_JAVA_COMMAND) -> str:
    """The repository's PyFlink example, switched to Occlum (and so to a Java job: PyFlink's
    Python cannot start its JVM there, see the refusal test)."""
    text = (PROJECT / "recipes/flink/pyflink-table/recipe.yaml").read_text()
    text = re.sub(r"(?m)^libos:\n(  .*\n)+", 'libos: {type: occlum, version: "0.31"}\n', text)
    text = re.sub(r"(?m)^  command: .*$", f"  command: {command}", text)
    assert "type: occlum" in text and command in text
    return text


# ---------------------------------------------------------------------------------------------
# Occlum 0.31's Occlum.json, written from Occlum's tools/gen_internal_conf/src/main.rs
# (OcclumConfiguration, the keys it deserialises) and etc/template/Occlum.json, independently of
# ppml_build.occlum.config:
# required keys, types, and every key we may write (extra keys would be silently dropped by
# gen_internal_conf, so emitting one is a bug).

_UNITS = [("KB", 1024), ("MB", 1024**2), ("GB", 1024**3), ("TB", 1024**4), ("B", 1)]


def occlum_bytes(text: str) -> int:
    text = text.strip()
    for unit, factor in _UNITS:
        if text.endswith(unit):
            number = text[: -len(unit)].strip()
            assert re.fullmatch(r"[0-9]+", number), f"{text!r}: not a whole number"
            return int(number) * factor
    raise AssertionError(f"{text!r}: Occlum needs a KB/MB/GB/TB/B suffix")


def _size(text: str) -> str:
    value = occlum_bytes(text)
    assert value % 4096 == 0, f"{text} is not page-aligned"
    return text


def _absolute(path: str) -> str:
    assert path.startswith("/"), f"{path!r} is not absolute"
    return path


def _hex64(text: str) -> str:
    assert re.fullmatch(r"0x[0-9a-fA-F]{1,16}", text), text
    return text


Size = Annotated[str, AfterValidator(_size)]
AbsPath = Annotated[str, AfterValidator(_absolute)]
U16 = Annotated[int, Field(ge=0, le=0xFFFF)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ResourceLimits(_Strict):
    kernel_space_heap_size: Size
    kernel_space_heap_max_size: Size | None = None
    kernel_space_stack_size: Size
    user_space_size: Size
    user_space_max_size: Size | None = None
    max_num_of_threads: Annotated[int, Field(ge=1, le=2**32 - 1)]
    init_num_of_threads: int | None = None


class Process(_Strict):
    default_stack_size: Size
    default_heap_size: Size
    default_mmap_size: Size


class Env(_Strict):
    default: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*=[^\x00]*$")]]
    untrusted: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]]


class MetaId(_Strict):
    high: Annotated[str, AfterValidator(_hex64)]
    low: Annotated[str, AfterValidator(_hex64)]


class Metadata(_Strict):
    product_id: U16
    version_number: U16
    debuggable: bool
    disable_log: bool | None = None
    enable_kss: bool
    family_id: MetaId
    ext_prod_id: MetaId


class Feature(_Strict):
    amx: Annotated[int, Field(ge=0, le=2)] = 0
    pkru: Annotated[int, Field(ge=0, le=2)] = 0
    io_uring: Annotated[int, Field(ge=0, le=16)] = 0
    enable_edmm: bool = False
    enable_posix_shm: bool = False


class MountOptions(_Strict):
    MAC: str | None = None
    layers: list["Mount"] | None = None
    temporary: bool | None = None
    cache_size: Size | None = None
    disk_size: Size | None = None
    index: int | None = None


class Mount(_Strict):
    type: Literal["sefs", "hostfs", "ramfs", "unionfs", "devfs", "procfs", "ext2"]
    target: AbsPath
    source: str | None = None
    options: MountOptions | None = None


class OcclumJson031(_Strict):
    resource_limits: ResourceLimits
    process: Process
    entry_points: list[AbsPath] = Field(min_length=1)
    env: Env
    metadata: Metadata
    feature: Feature
    mount: list[Mount]

    @model_validator(mode="after")
    def _root(self) -> "OcclumJson031":
        roots = [m for m in self.mount if m.target == "/" and m.type == "unionfs"]
        assert len(roots) == 1, "exactly one root unionfs"
        layers = roots[0].options.layers or []
        assert any(
            layer.type == "sefs"
            and layer.target == "/"
            and layer.options is not None
            and layer.options.MAC is not None
            for layer in layers
        ), "image SEFS layer"
        targets = [m.target for m in self.mount]
        assert "/proc" not in targets and "/dev" not in targets  # gen_internal_conf adds them
        assert len(targets) == len(set(targets)), "duplicate mount target"
        for mount in self.mount:
            if mount.type in ("hostfs", "sefs") and mount.target != "/":
                assert mount.source, f"{mount.target}: {mount.type} needs a source"
        return self


# ---------------------------------------------------------------------------------------------


def add_flink(root: Path) -> None:
    """A Flink distribution behind a version-less symlink, as the Flink base image has it."""
    dist = root / "opt/flink-1.17.2"
    for rel, data in (
        ("bin/flink", "#!/usr/bin/env bash\n"),
        ("lib/flink-dist.jar", "jar"),
        ("lib/flink-python.jar", "jar"),
        ("conf/flink-conf.yaml", "a: b\n"),
        ("opt/flink-s3.jar", "jar"),
    ):
        (dist / rel).parent.mkdir(parents=True, exist_ok=True)
        (dist / rel).write_text(data)
    os.symlink("flink-1.17.2", root / "opt/flink")


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory) -> Path:
    root = make_spark_rootfs(tmp_path_factory.mktemp("occlum") / "rootfs")
    add_flink(root)
    return root


def render(rootfs: Path, text: str = SPARK):
    recipe = load_recipe_text(text)
    plan = make_plan(recipe)
    return recipe, plan, render_occlum(recipe, plan, DirRootFS(rootfs, FileHasher(use_cache=False)))


def env_of(doc: dict) -> dict[str, str]:
    return dict(item.split("=", 1) for item in doc["env"]["default"])


def bom_targets(bom: dict) -> dict[str, dict]:
    return {item["target"]: item for item in bom["targets"]}


def copied_dirs(bom: dict) -> set[str]:
    return {d for t in bom["targets"] for c in t.get("copy", []) for d in c.get("dirs", [])}


def copied_files(bom: dict) -> dict[str, str | None]:
    out = {}
    for t in bom["targets"]:
        for c in t.get("copy", []):
            for f in c.get("files", []):
                name, digest = (f, None) if isinstance(f, str) else (f["name"], f.get("hash"))
                out[name] = digest
    return out


# ---------------------------------------------------------------------------------------------
# Occlum.json


@pytest.mark.parametrize("which", ["spark", "flink"])
def test_occlum_json_is_valid_for_occlum_031(rootfs, which):
    text = SPARK if which == "spark" else flink_recipe_text()
    recipe, plan, rendered = render(rootfs, text)
    parsed = json.loads(rendered.occlum_json_text)
    OcclumJson031.model_validate(parsed)
    assert parsed == rendered.occlum_json
    assert parsed["resource_limits"]["max_num_of_threads"] == plan.max_threads
    assert parsed["metadata"]["debuggable"] is False
    env = env_of(parsed)
    assert env["JAVA_HOME"] == JDK
    # Only ppml-build's entry script may be started: it holds the command
    assert parsed["entry_points"] == ["/ppml/entry"]
    assert rendered.entry_program == "/ppml/entry/start.sh"
    if which == "flink":
        assert env["FLINK_HOME"] == "/opt/flink"
        assert rendered.command[:2] == (f"{JDK}/bin/java", "-Xmx1g")  # PATH found it
    else:
        assert env["SPARK_HOME"] == "/opt/spark"
        assert rendered.command[0] == f"{JDK}/bin/java"  # java itself, no spark-submit


def test_sizes_are_written_in_occlums_syntax():
    assert format_occlum_size(32 * 2**20) == "32MB"
    assert format_occlum_size(2**30) == "1GB"
    assert format_occlum_size(1536 * 2**20) == "1536MB"
    assert format_occlum_size(8 * 1024) == "8KB"
    assert format_occlum_size(4097) == "4097B"
    for value in (0, 4096, 5 * 2**30, 1536 * 2**20 + 4096, 12345):
        assert parse_occlum_size(format_occlum_size(value)) == value
        assert occlum_bytes(format_occlum_size(value)) == value
    assert parse_occlum_size(" 8 MB ") == 8 * 2**20
    for bad in ("32M", "1.5GB", "32mb", "GB", "-1MB", "32 G"):
        with pytest.raises(ValueError):
            parse_occlum_size(bad)


def test_every_size_in_the_output_is_occlum_syntax_and_a_bad_one_is_refused(rootfs):
    recipe, _, rendered = render(rootfs)
    doc = rendered.occlum_json
    for section in ("resource_limits", "process"):
        for key, value in doc[section].items():
            if key.endswith("_size"):
                assert re.fullmatch(r"[0-9]+(KB|MB|GB)", value), (key, value)
    bad = copy.deepcopy(doc)
    bad["resource_limits"]["user_space_size"] = "4992M"
    with pytest.raises(ManifestError, match="user_space_size"):
        check_occlum_json(bad, recipe)


def test_user_space_holds_the_apps_memory_and_kernel_heap_follows_threads(rootfs):
    recipe, plan, rendered = render(rootfs)
    limits = rendered.occlum_json["resource_limits"]
    user = occlum_bytes(limits["user_space_size"])
    app_terms = {t.name: t.value for t in plan.memory_terms}
    # The JVM's reservations all live in Occlum's user space (the Gramine LibOS term does not).
    assert (
        user
        >= sum(v for k, v in app_terms.items() if k.startswith("jvm_"))
        + app_terms["thread_stacks"]
        + app_terms["glibc_arenas"]
    )
    assert user % (64 * 2**20) == 0

    bigger = SPARK.replace("-Xmx2g", "-Xmx6g")
    assert bigger != SPARK
    _, _, more = render(rootfs, bigger)
    grown = occlum_bytes(more.occlum_json["resource_limits"]["user_space_size"])
    assert grown >= user + 4 * 2**30

    threads = SPARK.replace("enclave: {", "enclave: {max_threads: 512, ")
    _, _, many = render(rootfs, threads)
    assert many.occlum_json["resource_limits"]["max_num_of_threads"] == 512
    assert occlum_bytes(
        many.occlum_json["resource_limits"]["kernel_space_heap_size"]
    ) > occlum_bytes(limits["kernel_space_heap_size"])


def test_explicit_enclave_size_bounds_the_whole_enclave(rootfs):
    recipe, plan, rendered = render(rootfs, SPARK.replace("enclave: {", "enclave: {size: 16G, "))
    limits = rendered.occlum_json["resource_limits"]
    threads = limits["max_num_of_threads"]
    used = (
        occlum_bytes(limits["user_space_size"])
        + occlum_bytes(limits["kernel_space_heap_size"])
        + threads * occlum_bytes(limits["kernel_space_stack_size"])
    )
    assert 12 * 2**30 < used < 16 * 2**30
    assert rendered.sizing.enclave_size_estimate == 16 * 2**30


def test_env_is_split_into_trusted_defaults_and_untrusted_names(rootfs):
    recipe, plan, rendered = render(rootfs)
    env = rendered.occlum_json["env"]
    defaults = env_of(rendered.occlum_json)
    assert defaults["GREETING"] == "a b=c"  # recipe env, verbatim
    assert defaults["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert defaults["MALLOC_ARENA_MAX"] == "4"  # plan's extra_env
    assert "-XX:ActiveProcessorCount=" in defaults["JAVA_TOOL_OPTIONS"]
    # Occlum's own JVM flags (demos/java/run_java_on_occlum.sh), in the measured env.default
    assert {"-XX:-UseCompressedOops", "-Dos.name=Linux"} <= set(
        defaults["JAVA_TOOL_OPTIONS"].split()
    )
    assert defaults["JAVA_HOME"] == JDK and defaults["HOME"] == "/root"
    assert f"{JDK}/lib/server" in defaults["LD_LIBRARY_PATH"].split(":")
    assert env["untrusted"] == ["AWS_REGION", "RUN_ID"]
    assert not set(env["untrusted"]) & set(defaults)
    names = [item.split("=", 1)[0] for item in env["default"]]
    assert names == sorted(set(names))  # unique, stable order


def test_metadata_carries_the_recipes_ids_and_no_kss(rootfs):
    _, _, rendered = render(rootfs)
    metadata = rendered.occlum_json["metadata"]
    assert (metadata["product_id"], metadata["version_number"]) == (7, 3)
    assert metadata["enable_kss"] is False
    assert metadata["family_id"] == metadata["ext_prod_id"] == {"high": "0x0", "low": "0x0"}
    assert metadata["disable_log"] is True


def test_debuggable_only_when_the_recipe_asks_for_a_debug_enclave(rootfs):
    recipe, _, rendered = render(rootfs)
    assert recipe.enclave.debug is False
    assert rendered.occlum_json["metadata"]["debuggable"] is False
    tampered = copy.deepcopy(rendered.occlum_json)
    tampered["metadata"]["debuggable"] = True
    with pytest.raises(ManifestError, match="debuggable"):
        check_occlum_json(tampered, recipe)

    debug_recipe, _, debug = render(rootfs, SPARK.replace("enclave: {", "enclave: {debug: true, "))
    assert debug.occlum_json["metadata"]["debuggable"] is True
    assert debug.occlum_json["metadata"]["disable_log"] is False
    check_occlum_json(debug.occlum_json, debug_recipe)


def test_edmm_starts_small_and_grows_to_the_planned_user_space(rootfs):
    _, _, static = render(rootfs)
    assert static.occlum_json["feature"]["enable_edmm"] is False
    assert "user_space_max_size" not in static.occlum_json["resource_limits"]
    assert "kernel_space_heap_max_size" not in static.occlum_json["resource_limits"]

    _, _, edmm = render(rootfs, SPARK.replace("enclave: {", "enclave: {edmm: true, "))
    OcclumJson031.model_validate(edmm.occlum_json)
    limits = edmm.occlum_json["resource_limits"]
    assert edmm.occlum_json["feature"]["enable_edmm"] is True
    assert limits["user_space_max_size"] == static.occlum_json["resource_limits"]["user_space_size"]
    assert occlum_bytes(limits["user_space_size"]) < occlum_bytes(limits["user_space_max_size"])
    assert occlum_bytes(limits["kernel_space_heap_size"]) <= occlum_bytes(
        limits["kernel_space_heap_max_size"]
    )


def test_mounts_map_the_recipes_files_section(rootfs):
    _, _, rendered = render(rootfs)
    mounts = rendered.occlum_json["mount"]
    root = mounts[0]
    assert root["target"] == "/" and root["type"] == "unionfs"
    assert [layer["source"] for layer in root["options"]["layers"]] == [
        "./build/mount/__ROOT",
        "./run/mount/__ROOT",
    ]
    assert root["options"]["layers"][0]["options"] == {"MAC": ""}
    rest = {m["target"]: m for m in mounts[1:]}
    assert rest == {
        "/data/enc": {"target": "/data/enc", "type": "sefs", "source": "/srv/enc"},
        "/data/in": {"target": "/data/in", "type": "hostfs", "source": "/data/in"},
        "/scratch": {"target": "/scratch", "type": "ramfs"},
        "/tmp": {"target": "/tmp", "type": "ramfs"},
    }
    assert [m["target"] for m in mounts[1:]] == sorted(rest)
    # Occlum mounts onto existing directories: the bom creates every mount point.
    mkdirs = bom_targets(rendered.bom)["/"]["mkdirs"]
    assert {"data/enc", "data/in", "scratch", "tmp", "app"} <= set(mkdirs)


@pytest.mark.parametrize(
    "old, new, field",
    [
        ("allowed: [/data/in/]", "allowed: [/data/in/x.csv]", "files.allowed[0]"),
        (
            'uri: "file:/srv/enc"}',
            'uri: "file:/srv/enc", key_name: k2}',
            "files.encrypted[0].key_name",
        ),
        ("tmpfs: [/tmp, /scratch]", "tmpfs: [/tmp, /proc]", "files.tmpfs[1]"),
        ("tmpfs: [/tmp, /scratch]", "tmpfs: [/tmp, /data/in]", "files.allowed[0]"),
    ],
)
def test_mounts_occlum_cannot_express_are_refused(rootfs, old, new, field):
    assert old in SPARK
    with pytest.raises(RecipeError, match=re.escape(field)) as err:
        render(rootfs, SPARK.replace(old, new))
    assert "\n" not in str(err.value)


def test_the_schema_model_catches_what_occlum_would_drop_or_refuse(rootfs):
    _, _, rendered = render(rootfs)
    good = rendered.occlum_json
    for mutate in (
        lambda d: d["resource_limits"].update(user_space_size="32M"),
        lambda d: d["metadata"].update(pkru=0),  # moved to feature in 0.30.1
        lambda d: d.pop("feature"),
        lambda d: d["metadata"].pop("family_id"),
        lambda d: d["mount"].append({"target": "/proc", "type": "procfs"}),
        lambda d: d["mount"][1].update(options={"key": "secret"}),
    ):
        bad = copy.deepcopy(good)
        mutate(bad)
        with pytest.raises(ValueError):
            OcclumJson031.model_validate(bad)


# ---------------------------------------------------------------------------------------------
# bom.yaml


def test_bom_copies_the_jdk_the_distribution_and_pinned_app_files(rootfs):
    _, _, rendered = render(rootfs)
    bom = yaml.safe_load(rendered.bom_text)
    assert bom == rendered.bom
    assert bom["includes"] == ["base.yaml"]
    dirs = copied_dirs(bom)
    assert f"{JDK}/" in dirs and "/opt/spark/" in dirs
    targets = bom_targets(bom)
    # Copied as content, at the path the app is configured with (Spark is behind a symlink).
    assert targets["/opt/spark"]["copy"] == [{"dirs": ["/opt/spark/"]}]
    files = copied_files(bom)
    job = (rootfs / "app/job.py").read_bytes()
    assert files["/app/job.py"] == hashlib.sha256(job).hexdigest().upper()
    assert files["/etc/os-release"] == hashlib.sha256(b"PRETTY_NAME=image\n").hexdigest().upper()
    for nss in ("libnss_files.so.2", "libnss_dns.so.2", "libresolv.so.2"):  # dlopen'ed
        assert f"/opt/occlum/glibc/lib/{nss}" in files
    # PySpark: the interpreter (a link to the real binary, recreated) and its stdlib.
    assert targets["/usr/bin"]["createlinks"] == [{"src": "python3.11", "linkname": "python3"}]
    assert files["/usr/bin/python3.11"] == hashlib.sha256(b"python binary").hexdigest().upper()
    assert {"/usr/lib/python3.11/", "/usr/lib/python3/"} <= dirs
    # Spark lies inside the copied distribution: nothing of it listed twice.
    assert not any(name.startswith("/opt/spark") for name in files)
    # A dangling link would make rsync (and copy_bom) fail: excluded, and the user is told.
    assert bom["excludes"] == ["/jars/dangling"]
    assert any("dangling" in warning for warning in rendered.warnings)
    assert rendered.image_file_count > 12 + 3
    for target in bom["targets"]:
        assert set(target) <= {"target", "mkdirs", "createlinks", "copy"}


def test_flink_bom_lists_the_flink_distribution(rootfs):
    _, _, rendered = render(rootfs, flink_recipe_text())
    dirs = copied_dirs(rendered.bom)
    assert {"/opt/flink/", f"{JDK}/"} <= dirs
    assert "/opt/spark/" not in dirs
    assert "/app/job.py" in copied_files(rendered.bom)


def test_a_symlinked_java_launcher_stays_a_link_into_the_jdk(rootfs):
    start = SPARK.index("  # Occlum has no fork")
    end = SPARK.index("/app/job.py]\n", start) + len("/app/job.py]\n")
    text = SPARK[:start] + "  command: [/usr/bin/java, -Xmx1g, -cp, /app, Main]\n" + SPARK[end:]
    text = text.replace("kind: spark", "kind: java")
    _, _, rendered = render(rootfs, text)
    targets = bom_targets(rendered.bom)
    assert {"src": f"{JDK}/bin/java", "linkname": "java"} in targets["/usr/bin"]["createlinks"]
    assert "/usr/bin/java" not in copied_files(rendered.bom)  # no detached launcher copy
    assert rendered.command[:2] == ("/usr/bin/java", "-Xmx1g")


def test_a_missing_runtime_is_a_one_line_error_naming_the_field(rootfs):
    text = SPARK.replace("libos: {", "runtime: {spark_home: /opt/nope}\nlibos: {")
    with pytest.raises(ManifestError, match=r"runtime\.spark_home: /opt/nope") as err:
        render(rootfs, text)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# The CLI: ppml-build manifest RECIPE --rootfs DIR --output-dir OUT


def write_recipe(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "job.py").write_text("print('job')\n")
    path = directory / "recipe.yaml"
    path.write_text(text)
    return path


def test_cli_writes_both_files_reproducibly(rootfs, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r", SPARK)
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert (
            main(
                [
                    "manifest",
                    str(recipe),
                    "--rootfs",
                    str(rootfs),
                    "--output-dir",
                    str(out),
                    "--no-cache",
                    "--json",
                ]
            )
            == 0
        )
        summary = json.loads(capsys.readouterr().out)
        assert sorted(p.name for p in out.iterdir()) == ["Occlum.json", "bom.yaml"]
        assert summary["manifest"] == str(out / "Occlum.json")
        assert summary["trusted_files_list"] == str(out / "bom.yaml")
        assert summary["libos"] == "occlum" and summary["max_threads"] > 0
        assert summary["hashed_files"] >= 3
        outputs.append(((out / "Occlum.json").read_bytes(), (out / "bom.yaml").read_bytes()))
    assert outputs[0] == outputs[1]
    OcclumJson031.model_validate(json.loads(outputs[0][0]))
    assert str(tmp_path) not in outputs[0][0].decode() + outputs[0][1].decode()

    # The plain-text summary prints the same keys the Gramine path prints.
    assert (
        main(
            ["manifest", str(recipe), "--rootfs", str(rootfs), "--output-dir", str(tmp_path / "c")]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "Occlum.json" in text and "bom.yaml" in text and "max_threads" in text


def test_cli_bad_size_exits_2_with_one_line_and_writes_nothing(rootfs, tmp_path, capsys):
    text = SPARK.replace("enclave: {", "enclave: {size: 256M, ")
    recipe = write_recipe(tmp_path / "r", text)
    out = tmp_path / "out"
    assert main(["manifest", str(recipe), "--rootfs", str(rootfs), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ppml-build: error: ")
    assert str(recipe) in err and "enclave.size" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_occlum_jvm_flags_leave_the_apps_own_choice_alone(rootfs):
    text = SPARK.replace(
        'GREETING: "a b=c"}', 'GREETING: "a b=c", JAVA_TOOL_OPTIONS: "-XX:+UseCompressedOops"}'
    )
    assert "JAVA_TOOL_OPTIONS" in text
    _, _, rendered = render(rootfs, text)
    flags = env_of(rendered.occlum_json)["JAVA_TOOL_OPTIONS"].split()
    assert "-XX:+UseCompressedOops" in flags and "-XX:-UseCompressedOops" not in flags
    assert "-Dos.name=Linux" in flags


def test_gramine_jvms_get_no_occlum_flags():
    from ppml_build.plan import make_plan
    from ppml_build.recipe import load_recipe_text

    gramine = SPARK.replace(
        '{type: occlum, version: "0.31"}', '{type: gramine, version: "1.9"}'
    ).replace('  encrypted: [{path: /data/enc, uri: "file:/srv/enc"}]\n', "")
    gramine = gramine.replace("tmpfs: [/tmp, /scratch]", "tmpfs: [/scratch]")
    assert "gramine" in gramine and "encrypted" not in gramine
    plan = make_plan(load_recipe_text(gramine, "recipe.yaml"))
    assert "-Dos.name=Linux" not in plan.extra_env.get("JAVA_TOOL_OPTIONS", "")


def test_a_shell_script_entry_point_is_refused_with_the_direct_command(rootfs):
    start = SPARK.index("  # Occlum has no fork")
    end = SPARK.index("/app/job.py]\n", start) + len("/app/job.py]\n")
    text = (
        SPARK[:start]
        + "  command: [/opt/spark/bin/spark-class, org.apache.spark.deploy.SparkSubmit, /app/job.py]\n"
        + SPARK[end:]
    )
    with pytest.raises(RecipeError) as err:
        render(rootfs, text)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("app.command[0]: /opt/spark/bin/spark-class is a bash script")
    assert "Occlum has no fork()" in message
    assert f"[{JDK}/bin/java, -cp" in message and "org.apache.spark.deploy.SparkSubmit" in message


SPARK_SUBMIT_COMMAND = '  command: [/opt/spark/bin/spark-submit, --master, "local[2]", --class, Pi, /app/pi.jar, "9"]\n'


def spark_submit_recipe(command: str = SPARK_SUBMIT_COMMAND) -> str:
    start = SPARK.index("  # Occlum has no fork")
    end = SPARK.index("/app/job.py]\n", start) + len("/app/job.py]\n")
    return SPARK[:start] + command + SPARK[end:]


def test_spark_submit_becomes_the_launchers_jvm_command_fixed_in_the_entry_script(rootfs, tmp_path):
    """spark-submit forks (bash); on Occlum the entry script execs the JVM command Spark's
    launcher computed at build time, and refuses host arguments (run by a real sh here)."""
    recipe = load_recipe_text(spark_submit_recipe())
    plan = make_plan(recipe)
    assert plan.launch.form == "spark-jvm"
    assert plan.launch.occlum_entry == "/ppml/entry/start.sh"
    add_ppml_support(rootfs, plan)
    rendered = render_occlum(recipe, plan, DirRootFS(rootfs, FileHasher(use_cache=False)))
    command = rendered.command
    assert command[0] == f"{JDK}/bin/java" and "org.apache.spark.deploy.SparkSubmit" in command
    assert command[-2:] == ("/app/pi.jar", "9") and "--class" in command
    # Hadoop's local file system without chmod processes, from ppml-build's jar (in the bom)
    assert "spark.hadoop.fs.file.impl=org.ppmlbuild.enclave.hadoop.NioLocalFileSystem" in command
    script = rendered.entry_script
    assert script is not None and script.startswith("#!/bin/sh\n")
    pins = {
        item["name"]: item["hash"]
        for target in rendered.bom["targets"]
        for copy_ in target.get("copy", [])
        for item in copy_.get("files", [])
        if isinstance(item, dict)
    }
    assert pins["/ppml/entry/start.sh"] == hashlib.sha256(script.encode()).hexdigest().upper()
    assert "/ppml/lib/ppml-enclave-hadoop.jar" in pins
    assert "/bin/dash" in pins  # /bin/sh, the script's interpreter (a link to dash)

    # The script itself, under a real POSIX sh: the fixed argv reaches the program, in workdir;
    # any host argument stops it with one line and exit 2.
    fake_java = tmp_path / "java"
    fake_java.write_text('#!/bin/sh\npwd\nfor a in "$@"; do printf "[%s]\\n" "$a"; done\n')
    fake_java.chmod(0o755)
    local = script.replace(f"{JDK}/bin/java", str(fake_java)).replace("cd /app", f"cd {tmp_path}")
    path = tmp_path / "start.sh"
    path.write_text(local)
    path.chmod(0o755)
    ran = subprocess.run([str(path)], capture_output=True, text=True, check=True)
    lines = ran.stdout.splitlines()
    assert lines[0] == str(tmp_path)
    assert lines[1:] == [f"[{arg}]" for arg in command[1:]]
    refused = subprocess.run(
        [str(path), "--class", "Evil"], capture_output=True, text=True, check=False
    )
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "fixed at build time" in refused.stderr


def test_a_recipe_value_cannot_become_shell_syntax_in_the_entry_script(tmp_path):
    hostile = ["/bin/echo", "$(touch pwned)", "`id`", "a'b", "; rm -rf /", "*"]
    script = entry_script(hostile, str(tmp_path))
    path = tmp_path / "start.sh"
    path.write_text(script)
    path.chmod(0o755)
    ran = subprocess.run([str(path)], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert ran.stdout == " ".join(hostile[1:]) + "\n"
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(RecipeError, match="NUL or newline"):
        entry_script(["/bin/echo", "two\nlines"], "/app")


@pytest.mark.parametrize(
    "command, message",
    [
        (
            '  command: [/opt/spark/bin/spark-submit, --master, "local-cluster[2,1,1024]", '
            "/app/pi.jar]\n",
            "starts executor JVMs as child processes",
        ),
        (
            "  command: [/opt/spark/bin/spark-submit, --conf, spark.python.use.daemon=true, "
            "/app/job.py]\n",
            "pyspark's worker daemon forks its workers",
        ),
    ],
)
def test_spark_launchers_that_fork_or_start_jvms_are_refused_in_one_line(command, message):
    with pytest.raises(PlanError) as err:
        make_plan(load_recipe_text(spark_submit_recipe(command)))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_pyspark_on_occlum_spawns_its_workers_without_the_forking_daemon():
    command = '  command: [/opt/spark/bin/spark-submit, --master, "local[2]", /app/job.py]\n'
    launch = make_plan(load_recipe_text(spark_submit_recipe(command))).launch
    assert launch.form == "spark-jvm"
    args = launch.spark_launcher_args
    assert args[args.index("spark.python.use.daemon=false") - 1] == "--conf"
    assert args[-1] == "/app/job.py"


def test_insecure_host_argv_keeps_the_programs_directory_as_entry_point(rootfs):
    text = SPARK.replace("  passthrough_env:", "  insecure_host_argv: true\n  passthrough_env:")
    _, _, rendered = render(rootfs, text)
    assert rendered.entry_script is None
    assert rendered.occlum_json["entry_points"] == [f"{JDK}/bin"]
    assert any("Occlum takes argv from the host" in w for w in rendered.warnings)


# ---------------------------------------------------------------------------------------------
# The bundled Occlum recipes: JVM flags and sizes by Occlum's rules, and what `plan` says

BUNDLED_OCCLUM = [
    PROJECT / "recipes/spark/spark-java-pi/recipe.occlum.yaml",
    PROJECT / "recipes/flink/flink-java-wordcount/recipe.occlum.yaml",
]


@pytest.mark.parametrize("path", BUNDLED_OCCLUM, ids=lambda p: p.parent.name)
def test_bundled_occlum_recipes_size_the_jvm_inside_occlums_limits(path):
    from ppml_build.occlum.sizing import KERNEL_HEAP_BASE, occlum_sizing
    from ppml_build.recipe import load_recipe

    recipe = load_recipe(path)
    assert recipe.libos.type == "occlum" and recipe.libos.version == "0.31"
    plan = make_plan(recipe)
    assert plan.launch.occlum_entry == "/ppml/entry/start.sh"
    flags = plan.extra_env["JAVA_TOOL_OPTIONS"].split()
    # Occlum's demos/java/run_java_on_occlum.sh flags, and every reservation pinned by a flag
    assert {"-XX:-UseCompressedOops", "-Dos.name=Linux"} <= set(flags)
    for pinned in ("MaxMetaspaceSize", "CompressedClassSpaceSize", "MaxDirectMemorySize"):
        assert any(flag.startswith(f"-XX:{pinned}=") for flag in flags), pinned
    sizing = occlum_sizing(recipe, plan)
    jvm_terms = sum(t.value for t in plan.memory_terms if t.name.startswith(("jvm_", "flink_")))
    assert jvm_terms < sizing.user_space_size  # the heap and off-heap fit the user space
    # Occlum's user space holds much more than the heap (BigDL: ~1.7x for large heaps, 3-4.5x
    # for small ones); ours is derived term by term and lands in that range.
    assert 1.7 <= sizing.user_space_size / plan.jvm.heap <= 4.5
    assert sizing.kernel_space_heap_size >= KERNEL_HEAP_BASE + plan.max_threads * 2**20
    assert sizing.max_num_of_threads == plan.max_threads >= plan.max_threads_estimate
    assert sizing.enclave_size_estimate >= sizing.user_space_size + sizing.kernel_space_heap_size


def test_plan_prints_occlums_sizes_term_by_term(capsys):
    assert main(["plan", str(BUNDLED_OCCLUM[0])]) == 0
    out = capsys.readouterr().out
    assert "entry: occlum run /ppml/entry/start.sh" in out
    for needle in (
        "user_space_size = ",
        "kernel_space_heap_size = ",
        "max_num_of_threads = ",
        "JVM heap -Xmx1G",
        "occlum_process_areas",
    ):
        assert needle in out, needle
    assert main(["plan", str(BUNDLED_OCCLUM[0]), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    limits = document["occlum"]["resource_limits"]
    assert limits["max_num_of_threads"] == document["max_threads"]
    assert parse_occlum_size(limits["user_space_size"]) % (64 * 2**20) == 0


@pytest.mark.parametrize(
    "text, hint",
    [
        (lambda: flink_recipe_text("[/opt/pyflink/bin/python3, /app/job.py]"), "gramine"),
        (
            lambda: spark_submit_recipe("  command: [/opt/pyspark/bin/python3, /app/job.py]\n"),
            "spark-submit ... job.py",
        ),
    ],
    ids=["pyflink", "pyspark"],
)
def test_python_first_jvm_apps_are_refused_on_occlum_in_one_line(text, hint):
    """Their gateway launchers fork (Popen with preexec_fn), which Occlum cannot."""
    with pytest.raises(PlanError) as err:
        make_plan(load_recipe_text(text()))
    message = str(err.value)
    assert "Occlum 0.31 has no fork" in message and hint in message and "\n" not in message
