"""Hostile and careless recipes through `validate`, `plan`, `manifest` and `k8s`, as a user runs
them: the bundled recipes with values replaced, keys deleted or added, containers of the wrong
type, deep nesting, YAML aliases and tags, and their raw bytes mangled (not UTF-8, truncated).

Whatever the recipe, the CLI exits 0, 1 or 2 with one error line (fuzz_support.assert_clean),
and `manifest` / `k8s` write all their files or none.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from fuzz_support import (
    SCALE,
    World,
    assert_all_or_none,
    assert_clean,
    fuzz_settings,
    hostile_values,
    mutated_bytes,
    mutated_tree,
    run_bounded,
    run_cli,
    snapshot,
)
from hypothesis import given
from hypothesis import strategies as st
from rootfs_factory import add_ppml_support, make_spark_rootfs

from ppml_build.pipeline.stages import load_and_plan

REPO = Path(__file__).resolve().parents[2]
BUNDLED = sorted(REPO.glob("recipes/*/*/recipe.yaml"))
NAMES = [path.parent.name for path in BUNDLED]
IMAGE = "127.0.0.1:5000/ppml/app@sha256:" + "ab" * 32
# Files `build` would have put in the image for the bundled recipes (app.files, build outputs).
IMAGE_EXTRAS = [
    "app/query.sql",
    "app/data/sales.csv",
    "app/spark-java-pi.jar",
    "app/flink-java-wordcount.jar",
    "opt/flink/lib/flink-dist.jar",
    "opt/flink/conf/config.yaml",
    "opt/flink/bin/flink",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Copies of the bundled recipe directories, an image-like rootfs every one of them renders
    against, and a place for output directories."""
    base = tmp_path_factory.mktemp("fuzz-recipes")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PPML_BUILD_CACHE_DIR", str(base / "cache"))
        rootfs = make_spark_rootfs(base / "rootfs")
        for rel in IMAGE_EXTRAS:
            (rootfs / rel).parent.mkdir(parents=True, exist_ok=True)
            (rootfs / rel).write_text(f"stand-in {rel}\n")
        dirs = {}
        for recipe in BUNDLED:
            target = shutil.copytree(recipe.parent, base / "recipes" / recipe.parent.name)
            add_ppml_support(rootfs, load_and_plan(target / "recipe.yaml")[1])
            dirs[recipe.parent.name] = target
        (base / "outs").mkdir()
        yield World(name="recipes world", base=base, rootfs=rootfs, dirs=dirs, outs=base / "outs")


@functools.cache
def original_text(name: str) -> str:
    return BUNDLED[NAMES.index(name)].read_text()


def original_tree(name: str) -> dict:
    return yaml.safe_load(original_text(name))


def dump(tree, draw) -> bytes:
    text = yaml.safe_dump(
        tree,
        allow_unicode=draw(st.booleans()),
        default_flow_style=draw(st.sampled_from([False, None, True])),
        sort_keys=False,
        width=draw(st.sampled_from([80, 10**6])),
    )
    return text.encode("utf-8", "surrogatepass")


# YAML that PyYAML's SafeLoader treats specially: aliases, merges, tags, complex keys.
YAML_TRICKS = [
    "app: &a {command: [x]}\nextra: *a\n",
    "base: &b {image: x}\nlibos: *b\n",
    "app:\n  <<: {command: [java]}\n  workdir: /app\n",
    "enclave: {size: !!binary aGVsbG8=}\n",
    "enclave: {size: !!float 1e3}\n",
    "enclave: {debug: !!str true}\n",
    "enclave: {isv_svn: !!int '0x10'}\n",
    "enclave: {isv_svn: 0o17}\n",
    "enclave: {isv_svn: 1_000}\n",
    "enclave: {isv_svn: 190:20:30}\n",
    "enclave: {isv_svn: .inf}\n",
    "enclave: {isv_prod_id: 2000-01-01}\n",
    "app: {env: !!set {a, b}}\n",
    "app: {command: !!omap [a: 1]}\n",
    "app: {env: {? [a, b] : c}}\n",
    "app: {env: {? {a: 1} : c}}\n",
    "app: {env: {1: x, 2.5: y, null: z}}\n",
    "name: !!python/object/apply:os.system [id]\n",
    "name: !custom x\n",
    "enclave: {max_threads: 00012}\n",
    "a: &x [*x]\n",
    "app: {command: [" + "[" * 500 + "]" * 500 + "]}\n",
    "app: {command: [" + "{a: " * 300 + "1" + "}" * 300 + "]}\n",
    "enclave: {isv_svn: " + "9" * 5000 + "}\n",
    'app: {command: ["\\x1b[31m\\r\\u202e"]}\n',
    "\ufeffapiVersion: ppml-build/v1\n",
    "%YAML 1.2\n---\napiVersion: ppml-build/v1\n",
    "--- a\n--- b\n",
    "apiVersion: ppml-build/v1\napiVersion: ppml-build/v1\n",
]


# Values of the right type but a wrong or odd meaning, for the fields that the plan, the launch
# and the manifest read (a type error stops at validation; these get further).
SIZES = st.one_of(
    st.sampled_from(
        [
            "1.5g",
            "lots",
            "0",
            "0g",
            "-1g",
            "1",
            "1k",
            "1023",
            "4097m",
            "1024G",
            "1025g",
            "2t",
            "1p",
            "9" * 31 + "g",
            "9" * 29 + "k",
            "１g",
            "1g ",
            " 1g",
            "1 g",
            "1gb",
            "1GiB",
            "1e3m",
            "0x10m",
            "1_000m",
            "auto",
            "",
            "\x1b1g",
            "1g\x00",
            2**40,
            1,
            0,
            -5,
            1.5,
            True,
        ]
    ),
    st.integers(-(2**70), 2**70),
    st.from_regex(r"\A-?[0-9]{1,25}[kmgtpKMGTP]?[bB]?\Z"),
)
WORDS = st.one_of(
    st.sampled_from(
        [
            "'",
            '"',
            "\\",
            "a'b",
            '"x',
            "-Xmx1.5g",
            "-Xmx",
            "-Xss",
            "-Xmx" + "9" * 40 + "g",
            "-XX:MaxDirectMemorySize=lots",
            "-XX:ActiveProcessorCount=0",
            "-Dx=\x1b[31m",
            "$(id)",
            "--conf",
            "spark.driver.memory=1.5g",
            "=",
            "-c",
            "\r",
        ]
    ),
    st.text(max_size=12),
)
SPARK_FLAGS = st.sampled_from(
    [
        "--driver-memory",
        "--executor-memory",
        "--executor-cores",
        "--conf",
        "-c",
        "--master",
        "--num-executors",
        "--class",
        "--py-files",
        "--jars",
        "--driver-java-options",
        "--driver-class-path",
        "--total-executor-cores",
        "--verbose",
        "--deploy-mode",
        "--properties-file",
        "--name",
    ]
)
FLAG_VALUES = st.one_of(
    SIZES.map(str),
    WORDS,
    st.sampled_from(
        [
            "local[2]",
            "local[0]",
            "local[*]",
            "local[" + "9" * 40 + "]",
            "local[-1]",
            "local[1.5]",
            "yarn",
            "k8s://x",
            "spark.executor.cores=0",
            "spark.executor.cores=lots",
            "spark.driver.memoryOverhead=1.5g",
            "spark.executor.memory=" + "9" * 50,
            "spark.sql.execution.arrow.pyspark.enabled=true",
            "noequals",
            "=1g",
        ]
    ),
)


@st.composite
def spark_command(draw) -> list[str]:
    argv = [
        draw(
            st.sampled_from(
                [
                    "/opt/spark/bin/spark-submit",
                    "spark-submit",
                    "pyspark",
                    "/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
                    "java",
                    "python3",
                    "/opt/flink/bin/flink",
                    "sh",
                ]
            )
        )
    ]
    for _ in range(draw(st.integers(0, 5))):
        argv.append(draw(SPARK_FLAGS))
        if draw(st.integers(0, 5)):
            argv.append(draw(FLAG_VALUES))
    argv += draw(
        st.lists(
            st.sampled_from(
                [
                    "/app/job.py",
                    "/app/x.jar",
                    "-Xmx1g",
                    "-cp",
                    "x",
                    "org.x.Main",
                    "-m",
                    "mod",
                    "-c",
                    "print(1)",
                ]
            ),
            max_size=3,
        )
    )
    return argv


MANIFEST_KEYS = st.sampled_from(
    [
        "sgx.preheat_enclave",
        "sys.stack.size",
        "sys.brk.max_size",
        "sgx.use_exinfo",
        "sgx.debug",
        "sgx.enclave_size",
        "loader.argv",
        "loader.env.X",
        "sgx.trusted_files",
        "sgx.allowed_files",
        "fs.mounts",
        "sys.allowed_ioctls",
        "sgx.file_check_policy",
        "libos.check_invalid_pointers",
        "sgx.insecure__rpc_thread_num",
        "loader.log_level",
        "sys.enable_extra_runtime_domain_names_conf",
        "fs.insecure__keys.default",
        "sgx.cpu_features.avx",
        "x.y",
        "sgx",
        "sgx.",
        ".sgx",
        "sgx..a",
        "sgx.trusted_files.0",
    ]
)
MANIFEST_VALUES = st.one_of(
    st.sampled_from(
        [
            True,
            False,
            "2M",
            "1.5g",
            "lots",
            0,
            -1,
            2**64,
            "file:/",
            "file:",
            "dev:/x",
            "/etc/passwd",
            "allow_all_but_log",
            "strict",
            "error",
            "all",
            [],
            {},
            ["file:/app/"],
            [{"uri": "file:/x", "sha256": "zz"}],
            [{"path": "/x", "uri": "file:/x", "type": "encrypted"}],
            [{"path": "/", "uri": "file:/"}],
            [{"request_code": 1}],
        ]
    ),
    hostile_values,
)
ENV_NAMES = st.sampled_from(
    [
        "JAVA_TOOL_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "_JAVA_OPTIONS",
        "PYSPARK_SUBMIT_ARGS",
        "SPARK_SUBMIT_OPTS",
        "FLINK_ENV_JAVA_OPTS",
        "LD_PRELOAD",
        "PATH",
        "SPARK_HOME",
        "A",
        "a-b",
        "1A",
        "",
    ]
)
PATHS = st.one_of(
    st.sampled_from(
        [
            "/",
            "/tmp",
            "/tmp/",
            "/app/",
            "/app",
            "/data/in/",
            "/etc/passwd",
            "/proc/self/",
            "/dev/",
            "/a/../b",
            "/a//b",
            "/./x",
            "relative",
            "",
            "/\x00",
            "/x\ny",
            "/" + "a" * 5000,
            "/opt/spark/",
            "/usr/lib/x86_64-linux-gnu/gramine/",
        ]
    ),
    st.from_regex(r"\A/[a-z./]{0,20}\Z"),
)
TARGETED = [
    (("app", "command"), spark_command()),
    (
        ("app", "env"),
        st.dictionaries(ENV_NAMES, WORDS.map(str) | st.lists(WORDS).map(" ".join), max_size=3),
    ),
    (("app", "passthrough_env"), st.lists(ENV_NAMES, max_size=3)),
    (("app", "workdir"), PATHS),
    (
        ("app", "files"),
        st.lists(
            st.fixed_dictionaries(
                {
                    "src": st.sampled_from(
                        [
                            "job.py",
                            "src/",
                            "src",
                            ".",
                            "./",
                            "..",
                            "../job.py",
                            "/etc/passwd",
                            "missing.py",
                            "data/",
                            "job.py/",
                            "fuzz.yaml",
                            "recipe.yaml",
                            "",
                        ]
                    ),
                    "dest": PATHS,
                }
            ),
            max_size=3,
        ),
    ),
    (("resources", "spark", "spark.driver.memory"), SIZES),
    (("resources", "spark", "spark.executor.memory"), SIZES),
    (("resources", "spark", "spark.executor.cores"), SIZES),
    (("resources", "spark", "spark.memory.offHeap.size"), SIZES),
    (("resources", "flink", "taskmanager.memory.process.size"), SIZES),
    (("resources", "flink", "taskmanager.numberOfTaskSlots"), SIZES),
    (
        ("resources", "jvm"),
        st.dictionaries(
            st.sampled_from(["heap", "metaspace", "direct_memory", "code_cache", "thread_stack"]),
            SIZES,
            max_size=3,
        ),
    ),
    (("resources", "cpus"), SIZES),
    (("resources", "app_threads"), SIZES),
    (("enclave", "size"), SIZES),
    (("enclave", "max_threads"), SIZES),
    (("enclave", "edmm"), st.sampled_from([True, False, "true", 1, None])),
    (("enclave", "remote_attestation"), st.sampled_from(["none", "dcap", "epid", "", None])),
    (
        ("libos",),
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(["gramine", "occlum", "sgx"]),
                "version": st.sampled_from(["1.9", "0.31", "1.8", 1.9, "1.9.0"]),
            }
        ),
    ),
    (("manifest",), st.dictionaries(MANIFEST_KEYS, MANIFEST_VALUES, max_size=3)),
    (("files", "trusted"), st.lists(PATHS, max_size=3)),
    (("files", "allowed"), st.lists(PATHS, max_size=3)),
    (("files", "tmpfs"), st.lists(PATHS, max_size=3)),
    (("files", "scratch"), st.lists(PATHS, max_size=3)),
    (
        ("files", "encrypted"),
        st.lists(
            st.fixed_dictionaries(
                {"path": PATHS, "uri": PATHS.map(lambda p: "file:" + p), "key_name": WORDS}
            ),
            max_size=2,
        ),
    ),
    (("runtime", "java_home"), PATHS),
    (("runtime", "python"), PATHS),
    (
        ("build",),
        st.fixed_dictionaries(
            {
                "packages": st.lists(WORDS, max_size=2),
                "steps": st.lists(WORDS, max_size=2),
                "sources": st.lists(
                    st.fixed_dictionaries(
                        {"src": st.sampled_from(["src/", "..", "x"]), "dest": PATHS}
                    ),
                    max_size=2,
                ),
                "outputs": st.lists(
                    st.fixed_dictionaries({"src": PATHS, "dest": PATHS}), max_size=2
                ),
            }
        ),
    ),
    (("name",), WORDS),
    (("kind",), st.sampled_from(["spark", "flink", "java", "python"])),
    (
        ("base", "digest"),
        st.sampled_from(["sha256:" + "a" * 64, "sha256:" + "A" * 64, "sha256:", "md5:x", None]),
    ),
]


@st.composite
def targeted_tree(draw, name: str) -> dict:
    """The bundled recipe with a few fields set to type-correct but odd values."""
    tree = original_tree(name)
    for _ in range(draw(st.integers(1, 3))):
        path, values = draw(st.sampled_from(TARGETED))
        node = tree
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = draw(values)
    return tree


@st.composite
def hostile_recipe(draw) -> tuple[str, bytes]:
    """(bundled recipe name, the bytes of a mangled version of it)."""
    name = draw(st.sampled_from(NAMES))
    how = draw(
        st.sampled_from(["tree", "tree", "targeted", "targeted", "targeted", "bytes", "trick"])
    )
    if how == "tree":
        return name, dump(draw(mutated_tree(original_tree(name))), draw)
    if how == "targeted":
        return name, dump(draw(targeted_tree(name)), draw)
    if how == "bytes":
        return name, draw(mutated_bytes(original_text(name).encode()))
    # A trick appended: later keys duplicate earlier ones, or the trick alone.
    trick = draw(st.sampled_from(YAML_TRICKS))
    alone = draw(st.booleans())
    text = trick if alone else original_text(name) + "\n" + trick
    return name, text.encode("utf-8", "surrogatepass")


def recipe_file(world, name: str, data: bytes) -> Path:
    path = world["dirs"][name] / "fuzz.yaml"  # beside the recipe: app.files resolve
    path.write_bytes(data)
    return path


@fuzz_settings(150)
@given(
    case=hostile_recipe(),
    command=st.sampled_from([["validate"], ["validate", "--json"], ["plan"], ["plan", "--json"]]),
)
def test_validate_and_plan_survive_any_recipe(world, case, command):
    path = recipe_file(world, *case)
    assert_clean(run_cli([command[0], path, *command[1:]]))


def _new_output_dir(world, draw) -> Path:
    """A new or existing (possibly non-empty) output directory."""
    parent = Path(tempfile.mkdtemp(dir=world["outs"]))
    out = parent / "out"
    if draw(st.booleans()):
        out.mkdir()
        if draw(st.booleans()):
            (out / "old.txt").write_text("kept\n")
    return out


@fuzz_settings(60)
@given(case=hostile_recipe(), data=st.data(), json_out=st.booleans())
def test_manifest_writes_both_files_or_neither(world, case, data, json_out):
    path = recipe_file(world, *case)
    out = _new_output_dir(world, data.draw)
    before = snapshot(out.parent)
    outcome = assert_clean(
        run_cli(
            ["manifest", path, "--rootfs", world["rootfs"], "--output-dir", out]
            + (["--json"] if json_out else [])
        )
    )
    after = snapshot(out.parent)
    if outcome.code == 0:
        new = {Path(n).name for n in set(after) - set(before)}
        gramine = "trusted-files.json" in new and any(n.endswith(".manifest") for n in new)
        assert gramine or {"Occlum.json", "bom.yaml"} <= new, outcome.describe()
    else:
        assert_all_or_none(outcome, before, after, [])
    shutil.rmtree(out.parent)


@fuzz_settings(40)
@given(case=hostile_recipe(), data=st.data())
def test_k8s_writes_all_files_or_none(world, case, data):
    path = recipe_file(world, *case)
    out = _new_output_dir(world, data.draw)
    before = snapshot(out.parent)
    outcome = assert_clean(run_cli(["k8s", path, "--image", IMAGE, "--output-dir", out]))
    after = snapshot(out.parent)
    if outcome.code == 0:
        assert set(after) - set(before), "exit 0 and nothing written:\n" + outcome.describe()
    else:
        assert_all_or_none(outcome, before, after, [])
    shutil.rmtree(out.parent)


# --- reproducers of what the fuzzing found -------------------------------------------------------


@pytest.mark.parametrize(
    "field,long_path", [("java_home", "/" + "a" * 5000), ("flink_home", "/opt/" + "n" * 300)]
)
def test_an_image_path_longer_than_the_host_allows_is_missing_in_one_line(world, field, long_path):
    """rootfs.DirRootFS.lstat raised ENAMETOOLONG for a runtime path past PATH_MAX (or with a
    name past NAME_MAX): no such name can be in the image."""
    tree = original_tree("pyflink-table")
    tree["runtime"][field] = long_path
    tree["files"]["trusted"] = [long_path + "/"]
    path = recipe_file(world, "pyflink-table", yaml.safe_dump(tree).encode())
    out = Path(tempfile.mkdtemp(dir=world["outs"])) / "out"
    outcome = assert_clean(
        run_cli(["manifest", path, "--rootfs", world["rootfs"], "--output-dir", out])
    )
    assert outcome.code == 2 and "no such file or directory in the image" in outcome.err, (
        outcome.describe()
    )
    assert not out.exists()


# --- bombs: bounded in memory and time, in a child process -------------------------------------


def billion_laughs(levels: int, fan: int) -> str:
    lines = ["l0: &l0 [lol]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * fan) + "]")
    return HEADER + "\n".join(lines) + f"\napp: {{command: [x], files: *l{levels - 1}}}\n"


HEADER = "apiVersion: ppml-build/v1\nkind: spark\nname: bomb\nbase: {image: x}\n"
BOMBS = {
    "billion-laughs": billion_laughs(9, 9),
    "wide-laughs": billion_laughs(3, 2000),
    "deep-flow-lists": "app: " + "[" * 5_000 + "]" * 5_000 + "\n",
    "deep-block-maps": "".join(" " * i + "k:\n" for i in range(1000)) + " " * 1000 + "v\n",
    "long-key": "a" * 100_000 + ": 1\n",
    "huge-int": HEADER + "app: {command: [x]}\nenclave: {isv_svn: " + "9" * 100_000 + "}\n",
    "huge-float": HEADER + "app: {command: [x]}\nenclave: {size: 1" + "0" * 100_000 + ".5}\n",
    "huge-size": HEADER
    + "app: {command: [x]}\nresources: {spark: {spark.driver.memory: "
    + "9" * 100_000
    + "g}}\n",
    "huge-flag-size": HEADER
    + "app: {command: [spark-submit, --driver-memory, "
    + "9" * 100_000
    + "g, /app/x.py]}\n",
    "long-argv": HEADER + "app: {command: [x" + "a" * 1_000_000 + "]}\n",
    "just-over-limit": "#" * (1024 * 1024 + 1),
}
if SCALE > 1:  # seconds each (PyYAML composes 100,000 nodes first): only in the longer runs
    BOMBS["many-values"] = (
        HEADER + "app: {command: [x], passthrough_env: [" + "A," * 100_001 + "]}\n"
    )
    BOMBS["many-keys"] = "".join(f"k{i}: {i}\n" for i in range(60_000))


@pytest.fixture(scope="module")
def bomb_outcomes(world):
    cases = []
    for name, text in BOMBS.items():
        path = world["dirs"]["pyspark-sql-agg"] / f"bomb-{name}.yaml"
        path.write_text(text)
        cases.append((["validate", path], 20.0))
        if name in PLAN_BOMBS:
            cases.append((["plan", "--json", path], 20.0))
    outcomes = run_bounded(cases, env={"PPML_BUILD_CACHE_DIR": str(world["base"] / "cache")})
    return {(c.argv[0], Path(c.argv[-1]).stem[len("bomb-") :]): c for c in outcomes}


# plan reads what validate does first; these get further (spark-submit's flags, a long argv).
PLAN_BOMBS = ("billion-laughs", "huge-flag-size", "long-argv")


@pytest.mark.parametrize(
    "bomb,command",
    [(bomb, "validate") for bomb in sorted(BOMBS)] + [(bomb, "plan") for bomb in PLAN_BOMBS],
)
def test_recipe_bombs_end_within_bounds(bomb_outcomes, bomb, command):
    """Each runs in a process limited to 1 GiB of address space and 20 s."""
    outcome = assert_clean(bomb_outcomes[(command, bomb)])
    # A long argument is fine; spark-submit's flags are read by the plan, not by validate.
    if bomb != "long-argv" and (bomb, command) != ("huge-flag-size", "validate"):
        assert outcome.code == 2, outcome.describe()
