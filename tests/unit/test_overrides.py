"""The recipe's ``manifest:`` escape hatch: what a user sees when adding Gramine manifest keys."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rootfs_factory import make_spark_rootfs

from ppml_build.cli import main
from ppml_build.errors import ManifestError, RecipeError
from ppml_build.gramine import build as gramine_build
from ppml_build.gramine.manifest import render_manifest
from ppml_build.gramine.overrides import OWNED, ManifestOptions, merge_overrides
from ppml_build.gramine.schema import ANY, GRAMINE_1_9, AnyOf, DictOf, ListOf, OneOf
from ppml_build.image.hashing import FileHasher
from ppml_build.image.rootfs import DirRootFS
from ppml_build.pipeline import backends
from ppml_build.pipeline.options import BuildOptions, BuildResult
from ppml_build.plan import format_plan, make_plan
from ppml_build.policy.model import EnclaveValues
from ppml_build.recipe import load_recipe_text

HEAD = """\
apiVersion: ppml-build/v1
kind: {kind}
name: overrides-demo
base: {{image: "127.0.0.1:5000/ppml/spark:1"}}
app:
  command: {command}
"""
# Commands the enclave runs as written (launch.py's "exec" form), so no image built by
# `ppml-build build` is needed to render them.
COMMANDS = {
    "spark": '[java, -cp, "/opt/spark/jars/*", org.example.Main]',
    "flink": "[java, -cp, /opt/flink/lib/flink.jar, Main]",
    "java": "[java, -jar, /app/app.jar]",
    "python": "[python3, /app/job.py]",
}
ALLOW_ALL = ManifestOptions(allow_insecure_manifest=True, allow_jvm_without_exinfo=True)


def recipe_text(manifest: str = "", kind: str = "spark") -> str:
    return HEAD.format(kind=kind, command=COMMANDS[kind]) + manifest


@pytest.fixture()
def rootfs(tmp_path) -> Path:
    root = make_spark_rootfs(tmp_path / "rootfs")
    (root / "opt/flink/lib").mkdir(parents=True)
    (root / "opt/flink/lib/flink.jar").write_bytes(b"flink jar")
    return root


def render(rootfs: Path, text: str, options: ManifestOptions = ManifestOptions()):
    recipe = load_recipe_text(text)
    fs = DirRootFS(rootfs, FileHasher(use_cache=False))
    return render_manifest(recipe, make_plan(recipe), fs, options=options)


def recipe_error(text: str) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe_text(text, "recipe.yaml")
    assert "\n" not in str(info.value)
    return str(info.value)


def write_recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe" / "recipe.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def cli(capsys, *args) -> tuple[int, str, list[str]]:
    capsys.readouterr()
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


# --- reading the recipe -----------------------------------------------------------------------


def test_dotted_and_nested_keys_become_one_table_and_reach_the_manifest(rootfs):
    text = recipe_text(
        "manifest:\n"
        "  sgx.preheat_enclave: true\n"
        "  sys: {stack: {size: 2M}}\n"
        "  sys.brk.max_size: 4M\n"
        "  libos: {check_invalid_pointers: false}\n"
    )
    assert load_recipe_text(text).manifest == {
        "sgx": {"preheat_enclave": True},
        "sys": {"stack": {"size": "2M"}, "brk": {"max_size": "4M"}},
        "libos": {"check_invalid_pointers": False},
    }
    manifest = tomllib.loads(render(rootfs, text).text)
    assert manifest["sgx"]["preheat_enclave"] is True
    assert manifest["sys"]["stack"] == {"size": "2M"}
    assert manifest["sys"]["brk"] == {"max_size": "4M"}
    # tables merge key by key: the template's own keys stay
    assert manifest["sys"]["enable_extra_runtime_domain_names_conf"] is True
    assert manifest["libos"]["entrypoint"] == "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"
    assert manifest["libos"]["check_invalid_pointers"] is False


def test_no_manifest_key_changes_nothing(rootfs):
    plain = render(rootfs, recipe_text())
    assert plain.recipe_keys == () and plain.warnings == ()
    assert render(rootfs, recipe_text("manifest: {}\n")).text == plain.text


def test_appended_trusted_files_are_expanded_and_hashed(rootfs):
    text = recipe_text(
        "manifest:\n"
        '  sgx.trusted_files: ["file:/opt/spark/conf/", "file:/usr/bin/env"]\n'
        '  sgx.allowed_files: ["file:/data/in.csv"]\n'
    )
    rendered = render(rootfs, text)
    entries = {e["uri"]: e["sha256"] for e in tomllib.loads(rendered.text)["sgx"]["trusted_files"]}
    conf = rootfs / "opt/spark-3.5.3/conf/spark-defaults.conf"
    assert (
        entries["file:/opt/spark-3.5.3/conf/spark-defaults.conf"]
        == hashlib.sha256(conf.read_bytes()).hexdigest()
    )
    assert entries["file:/usr/bin/env"] == hashlib.sha256(b"env binary").hexdigest()
    # appended after the template's entries, which are all still there
    assert "file:/usr/lib/x86_64-linux-gnu/gramine/runtime/glibc/libc.so.6" in entries
    assert any(tf.uri == "file:/usr/bin/env" for tf in rendered.trusted_files)
    assert tomllib.loads(rendered.text)["sgx"]["allowed_files"] == ["file:/data/in.csv"]


def test_lists_append_tables_merge_other_values_replace():
    template = {
        "fs": {"mounts": [{"path": "/lib", "uri": "file:/g"}], "start_dir": "/app"},
        "sgx": {"trusted_files": ["file:/a"], "allowed_files": [], "debug": False},
        "loader": {"log_level": "error"},
        "sys": {"stack": {"size": "1M"}},
    }
    merged = merge_overrides(
        template,
        {
            "fs": {"mounts": [{"type": "tmpfs", "path": "/s"}]},
            "sgx": {"trusted_files": ["file:/b"], "allowed_files": ["file:/c"]},
            "loader": {"log_level": "warning"},
            "sys": {"stack": {"size": "4M"}, "allowed_ioctls": [{"request_code": 1}]},
        },
    )
    assert merged["fs"]["mounts"] == [
        {"path": "/lib", "uri": "file:/g"},
        {"type": "tmpfs", "path": "/s"},
    ]
    assert merged["fs"]["start_dir"] == "/app"
    assert merged["sgx"]["trusted_files"] == ["file:/a", "file:/b"]
    assert merged["sgx"]["allowed_files"] == ["file:/c"]
    assert merged["loader"]["log_level"] == "warning"
    assert merged["sys"] == {"stack": {"size": "4M"}, "allowed_ioctls": [{"request_code": 1}]}
    assert template["sgx"]["trusted_files"] == ["file:/a"]  # the input is not changed


def test_a_misspelt_key_names_it_with_its_line():
    message = recipe_error(recipe_text("manifest:\n  sgx.preheat_enclav: true\n"))
    assert message == (
        "recipe.yaml:8:3: manifest.sgx.preheat_enclav: not a Gramine 1.9 "
        "manifest key; check the spelling (Documentation/manifest-syntax.rst)"
    )
    nested = recipe_error(recipe_text("manifest:\n  sys:\n    stak: {size: 2M}\n"))
    assert nested.startswith("recipe.yaml:9:5: manifest.sys.stak: not a Gramine 1.9 manifest key")


def test_a_wrong_type_names_the_key():
    assert (
        recipe_error(recipe_text('manifest:\n  sgx.preheat_enclave: "yes"\n'))
        == "recipe.yaml:8:24: manifest.sgx.preheat_enclave: must be true or false, got str"
    )
    # YAML's true is a bool, never the whole number 1
    assert "manifest.sys.fds.limit: must be a whole number, got bool" in recipe_error(
        recipe_text("manifest:\n  sys.fds.limit: true\n")
    )
    assert "manifest.sys.stack: expected a table" in recipe_error(
        recipe_text("manifest:\n  sys.stack: 2M\n")
    )
    assert "manifest.sys.allowed_ioctls[0].request_code: required" in recipe_error(
        recipe_text("manifest:\n  sys.allowed_ioctls: [{struct: s}]\n")
    )
    assert "manifest.fs.mounts[0].uri: required for a chroot mount" in recipe_error(
        recipe_text("manifest:\n  fs.mounts: [{path: /x}]\n")
    )
    assert "manifest.sgx.trusted_files[0]: '/etc/x' is not a file: URI" in recipe_error(
        recipe_text("manifest:\n  sgx.trusted_files: [/etc/x]\n")
    )


@pytest.mark.parametrize(
    "value, says",
    [
        ("1.5", "1.5 is a float"),
        ("null", "has no value (null)"),
        ("", "has no value (null)"),
        ("2024-01-01", "2024-01-01 is a date or time"),
        ("[1, 2.5]", "2.5 is a float"),
    ],
)
def test_values_toml_cannot_hold_as_gramine_uses_it_are_refused(value, says):
    message = recipe_error(recipe_text(f"manifest:\n  sys.stack.size: {value}\n"))
    assert message.startswith("recipe.yaml:8:") and f"manifest.sys.stack.size: {says}" in message


def test_a_key_given_dotted_and_nested_is_refused():
    message = recipe_error(
        recipe_text("manifest:\n  sgx.preheat_enclave: true\n  sgx:\n    preheat_enclave: false\n")
    )
    assert message.startswith("recipe.yaml:10:5: manifest.sgx.preheat_enclave: given twice")
    assert "keep one" in message
    # the same table reached both ways is fine
    recipe = load_recipe_text(
        recipe_text("manifest:\n  sgx.preheat_enclave: true\n  sgx: {use_exinfo: true}\n")
    )
    assert recipe.manifest == {"sgx": {"preheat_enclave": True, "use_exinfo": True}}


@pytest.mark.parametrize(
    "key, field",
    [
        ("sgx.enclave_size: 4G", "enclave.size"),
        ("sgx.max_threads: 8", "enclave.max_threads"),
        ("sgx.edmm_enable: true", "enclave.edmm"),
        ("sgx.isvprodid: 1", "enclave.isv_prod_id"),
        ("sgx.isvsvn: 1", "enclave.isv_svn"),
        ("sgx.remote_attestation: none", "enclave.remote_attestation"),
        ("loader.argv: [x]", "app.command"),
        ('loader.entrypoint.uri: "file:/x"', "app.command"),
        ("libos.entrypoint: /bin/sh", "app.command"),
        ("loader.env.FOO: bar", "app.env"),
        ("loader: {env: {FOO: bar}}", "app.env"),
        ('fs.root.uri: "file:/"', "app.workdir"),
        ("fs.start_dir: /", "app.workdir"),
        ("loader.insecure__use_cmdline_argv: true", "app.insecure_host_argv"),
        ('loader.argv_src_file: "file:/argv"', "app.command"),
    ],
)
def test_keys_the_recipe_owns_point_at_its_field(key, field):
    message = recipe_error(recipe_text(f"manifest:\n  {key}\n"))
    assert message.startswith("recipe.yaml:8:")
    assert f"set from the recipe's {field}" in message and "one home per fact" in message


def test_an_occlum_recipe_has_no_manifest_keys():
    text = recipe_text(
        'libos: {type: occlum, version: "0.31"}\nmanifest: {sgx.preheat_enclave: true}\n'
    )
    message = recipe_error(text)
    assert message.startswith(
        "recipe.yaml:8:11: manifest: libos.type 'occlum' has no Gramine manifest"
    )


# --- the CLI: one line, exit 2, nothing written -----------------------------------------------


@pytest.mark.parametrize(
    "manifest, says",
    [
        (
            "manifest: {sgx.preheat_enclav: true}\n",
            "manifest.sgx.preheat_enclav: not a Gramine 1.9 manifest key; check the spelling",
        ),
        ("manifest: {sys.stack.size: 2}\n", "manifest.sys.stack.size: must be a string"),
        (
            "manifest: {sgx.debug: true}\n",
            "manifest.sgx.debug: true is refused without --allow-insecure-manifest",
        ),
    ],
)
def test_manifest_command_refuses_with_one_line_and_writes_nothing(
    rootfs, tmp_path, capsys, manifest, says
):
    recipe = write_recipe(tmp_path, recipe_text(manifest))
    out = tmp_path / "out"
    code, _, err = cli(capsys, "manifest", recipe, "--rootfs", rootfs, "--output-dir", out)
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"ppml-build: error: {recipe}:") and says in err[0]
    assert not out.exists() or not any(out.iterdir())


def test_manifest_command_with_the_flag_warns_and_writes(rootfs, tmp_path, capsys):
    recipe = write_recipe(
        tmp_path, recipe_text("manifest:\n  sgx.debug: true\n  sys.stack.size: 2M\n")
    )
    out = tmp_path / "out"
    code, stdout, _ = cli(
        capsys,
        "manifest",
        recipe,
        "--rootfs",
        rootfs,
        "--output-dir",
        out,
        "--allow-insecure-manifest",
    )
    assert code == 0
    assert (
        "warning: INSECURE: manifest.sgx.debug = true from the recipe (--allow-insecure-manifest)"
    ) in stdout.splitlines()
    assert "manifest keys from the recipe: sgx.debug, sys.stack.size" in stdout
    manifest = tomllib.loads((out / "overrides-demo.manifest").read_text())
    assert manifest["sgx"]["debug"] is True and manifest["sys"]["stack"]["size"] == "2M"
    code, stdout, _ = cli(
        capsys,
        "manifest",
        recipe,
        "--rootfs",
        rootfs,
        "--output-dir",
        out,
        "--allow-insecure-manifest",
        "--json",
    )
    summary = json.loads(stdout)
    assert summary["recipe_manifest_keys"] == ["sgx.debug", "sys.stack.size"]
    assert any("INSECURE: manifest.sgx.debug" in w for w in summary["warnings"])


def test_build_passes_the_two_flags_down(tmp_path, monkeypatch, capsys):
    calls = []

    def fake(options, say=lambda line: None):
        calls.append(options)
        out = Path(options.output_dir)
        return BuildResult(
            {"mrenclave": "11" * 32, "mrsigner": "22" * 32},
            out / "measurement.json",
            out,
            "ppml/app:latest",
            {},
            [],
        )

    monkeypatch.setattr(backends, "build", fake)
    args = [
        "build",
        tmp_path / "recipe.yaml",
        "--key",
        tmp_path / "k.pem",
        "--output-dir",
        tmp_path / "out",
    ]
    assert cli(capsys, *args)[0] == 0
    assert cli(capsys, *args, "--allow-insecure-manifest")[0] == 0
    assert cli(capsys, *args, "--allow-jvm-without-exinfo")[0] == 0
    assert [c.manifest for c in calls] == [
        ManifestOptions(),
        ManifestOptions(allow_insecure_manifest=True),
        ManifestOptions(allow_jvm_without_exinfo=True),
    ]


# --- guarded keys -----------------------------------------------------------------------------

GUARDED = [
    (
        "sgx.insecure__allow_memfaults_without_exinfo: true",
        "sgx.insecure__allow_memfaults_without_exinfo = true",
    ),
    ("loader.insecure__use_host_env: true", "loader.insecure__use_host_env = true"),
    (
        'fs.insecure__keys.x: "00112233445566778899aabbccddeeff"',
        'fs.insecure__keys.x = "00112233445566778899aabbccddeeff"',
    ),
    ("sys.insecure__allow_eventfd: true", "sys.insecure__allow_eventfd = true"),
    ("sgx.debug: true", "sgx.debug = true"),
    ("sgx.file_check_policy: allow_all_but_log", 'sgx.file_check_policy = "allow_all_but_log"'),
    ('sgx.allowed_files: ["file:/data/"]', 'sgx.allowed_files = "file:/data/"'),
    ('sgx.allowed_files: ["file:/"]', 'sgx.allowed_files = "file:/"'),
    # no trailing '/', but a directory in the image: Gramine allows the tree below it too
    ('sgx.allowed_files: ["file:/opt/spark"]', 'sgx.allowed_files = "file:/opt/spark"'),
]


@pytest.mark.parametrize("key, shown", GUARDED, ids=[g[0].split(":")[0] for g in GUARDED])
def test_guarded_keys_need_the_flag_and_then_warn(rootfs, key, shown):
    text = recipe_text(f"manifest:\n  {key}\n")
    with pytest.raises(ManifestError) as info:
        render(rootfs, text)
    message = str(info.value)
    assert "\n" not in message and "--allow-insecure-manifest" in message
    assert message.startswith(f"manifest.{shown.split(' = ')[0]}: ")
    rendered = render(rootfs, text, ManifestOptions(allow_insecure_manifest=True))
    assert rendered.warnings == (
        f"INSECURE: manifest.{shown} from the recipe (--allow-insecure-manifest)",
    )
    # the JVM flag is not the insecure-manifest flag
    with pytest.raises(ManifestError):
        render(rootfs, text, ManifestOptions(allow_jvm_without_exinfo=True))


def test_safe_values_of_guarded_keys_need_no_flag(rootfs):
    rendered = render(
        rootfs,
        recipe_text(
            "manifest:\n  sgx.file_check_policy: strict\n"
            '  sgx.allowed_files: ["file:/etc/os-release"]\n'
        ),
    )
    assert rendered.warnings == ()


@pytest.mark.parametrize("kind", ["spark", "flink", "java"])
def test_every_jvm_manifest_has_exinfo_and_turning_it_off_needs_its_flag(rootfs, kind):
    assert tomllib.loads(render(rootfs, recipe_text(kind=kind)).text)["sgx"]["use_exinfo"] is True
    text = recipe_text("manifest: {sgx.use_exinfo: false}\n", kind=kind)
    with pytest.raises(ManifestError) as info:
        render(rootfs, text, ManifestOptions(allow_insecure_manifest=True))
    message = str(info.value)
    assert message.startswith(
        "manifest.sgx.use_exinfo: false is refused without --allow-jvm-without-exinfo"
    )
    assert "safepoint polls" in message and "pal_exception.c" in message
    rendered = render(rootfs, text, ManifestOptions(allow_jvm_without_exinfo=True))
    assert tomllib.loads(rendered.text)["sgx"]["use_exinfo"] is False
    assert rendered.warnings == (
        "JVM WITHOUT EXINFO: manifest.sgx.use_exinfo = false from the "
        "recipe (--allow-jvm-without-exinfo)",
    )


def test_a_python_app_keeps_gramines_exinfo_default(rootfs):
    assert (
        tomllib.loads(render(rootfs, recipe_text(kind="python")).text)["sgx"]["use_exinfo"] is False
    )
    text = recipe_text("manifest: {sgx.use_exinfo: false}\n", kind="python")
    assert render(rootfs, text).warnings == ()


# --- visibility -------------------------------------------------------------------------------


def test_plan_lists_the_recipes_manifest_keys(tmp_path, capsys):
    recipe = write_recipe(
        tmp_path,
        recipe_text(
            "manifest:\n  sys: {stack: {size: 2M}}\n"
            "  sgx.preheat_enclave: true\n"
            "  sgx.debug: true\n"
        ),
    )
    code, stdout, _ = cli(capsys, "plan", recipe)
    assert code == 0
    lines = stdout.splitlines()
    assert 'manifest key from the recipe: sys.stack.size = "2M"' in lines
    assert "manifest key from the recipe: sgx.preheat_enclave = true" in lines
    assert (
        "manifest key from the recipe: sgx.debug = true (INSECURE, needs --allow-insecure-manifest)"
    ) in lines
    code, stdout, _ = cli(capsys, "plan", recipe, "--json")
    planned = json.loads(stdout)
    assert planned["recipe_manifest"] == {
        "sgx.debug": True,
        "sgx.preheat_enclave": True,
        "sys.stack.size": "2M",
    }
    assert planned["recipe_manifest_guarded"] == {"sgx.debug": "--allow-insecure-manifest"}
    assert "manifest key" not in format_plan(make_plan(load_recipe_text(recipe_text())))


def test_the_record_names_the_recipes_keys_and_readers_do_not_need_them(rootfs):
    text = recipe_text("manifest:\n  sys.stack.size: 2M\n  sgx.preheat_enclave: true\n")
    recipe = load_recipe_text(text)
    plan = make_plan(recipe)
    rendered = render(rootfs, text)
    assert rendered.recipe_keys == ("sgx.preheat_enclave", "sys.stack.size")
    summary = {
        "mrenclave": "11" * 32,
        "mrsigner": "22" * 32,
        "isv_prod_id": 0,
        "isv_svn": 0,
        "debug": False,
        "attributes": {},
        "misc_select": "0x00000001",
        "date": "2026-01-01",
    }
    record = gramine_build.measurement_record(
        recipe=recipe,
        plan=plan,
        summary=summary,
        image="ppml/x:1",
        image_id="i",
        pushed_digest=None,
        base_digest="d",
        rendered=rendered,
    )
    # Fields added later come last, and a reader of older records does not need them.
    later = ["recipe_manifest_keys", "encryption_keys", "secret_provisioning"]
    assert list(record)[-3:] == later
    assert record["recipe_manifest_keys"] == ["sgx.preheat_enclave", "sys.stack.size"]
    older = {key: value for key, value in record.items() if key not in later}
    assert EnclaveValues.from_mapping(older).mrenclave == bytes.fromhex("11" * 32)


def test_build_says_the_recipes_keys_once(rootfs, monkeypatch):
    """`build` tells the keys through ``say`` right after rendering (Docker faked away)."""
    import contextlib
    from types import SimpleNamespace

    from ppml_build.gramine.overrides import describe_overrides

    recipe = load_recipe_text(recipe_text("manifest: {sys.stack.size: 2M}\n"))
    said: list[str] = []
    monkeypatch.setattr(
        backends, "load_and_plan_build", lambda path: (recipe, make_plan(recipe), {})
    )
    monkeypatch.setattr(backends, "read_passphrase", lambda path: None)
    monkeypatch.setattr(backends, "load_signing_key", lambda *a, **k: None)
    monkeypatch.setattr(backends, "key_needles", lambda path, key: [])

    @contextlib.contextmanager
    def fake_app_image(*args, **kwargs):
        yield SimpleNamespace(
            fs=DirRootFS(rootfs, FileHasher(use_cache=False)), client=None, auth=None
        )

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(gramine_build, "app_image", fake_app_image)
    monkeypatch.setattr(gramine_build, "gramine_version", stop)
    with pytest.raises(Stop):
        backends.build(BuildOptions(recipe=Path("r.yaml"), key=Path("k")), say=said.append)
    assert describe_overrides(recipe.manifest) == ['sys.stack.size = "2M"']
    assert said.count('manifest key from the recipe: sys.stack.size = "2M"') == 1


def test_init_writes_the_manifest_hint_into_the_starter_only(tmp_path, capsys):
    root = Path(__file__).resolve().parents[2]
    for kind in ("spark", "flink"):
        assert cli(capsys, "init", kind, tmp_path / kind)[0] == 0
        text = (tmp_path / kind / "recipe.yaml").read_text()
        assert "# manifest: {sgx.preheat_enclave: true}" in text
        assert load_recipe_text(text).manifest == {}
        # uncommented, the example is a valid recipe
        enabled = text.replace("# manifest: {", "manifest: {")
        assert load_recipe_text(enabled).manifest == {"sgx": {"preheat_enclave": True}}
    for bundled in (root / "recipes").glob("*/*/recipe.yaml"):
        assert "sgx.preheat_enclave" not in bundled.read_text()
        assert load_recipe_text(bundled.read_text()).manifest == {}


# --- no input crashes with anything but our errors --------------------------------------------


def _schema_keys(shape, prefix=()) -> list[str]:
    out = []
    if isinstance(shape, dict):
        for key, child in shape.items():
            out.append(".".join(prefix + (key,)))
            out += _schema_keys(child, prefix + (key,))
    return out


_KEYS = st.one_of(
    st.sampled_from(_schema_keys(GRAMINE_1_9)),
    st.sampled_from(
        [
            "sgx",
            "sys",
            "fs",
            "loader",
            "libos",
            "size",
            "uri",
            "path",
            "type",
            "request_code",
            "x",
            "a.b",
            "",
        ]
    ),
    st.text(max_size=8),
)
_SCALARS = st.one_of(
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.none(),
    st.floats(allow_nan=False),
    st.text(max_size=10),
    st.sampled_from(
        [
            "file:/etc/passwd",
            "file:/opt/spark/",
            "file:/nope",
            "file:/",
            "2M",
            "tmpfs",
            "chroot",
            "strict",
            "allow_all_but_log",
            "file:/etc/../x",
            "dev:",
            "/app",
            "error",
        ]
    ),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(_KEYS, children, max_size=3)
    ),
    max_leaves=10,
)


def _plausible(shape, path=()) -> st.SearchStrategy:
    """Values of the shape Gramine's schema wants (keys the recipe owns mostly left out), now
    and then of another."""
    if isinstance(shape, dict):
        free = {key: child for key, child in shape.items() if path + (key,) not in OWNED}
        return st.dictionaries(
            st.sampled_from(sorted(shape)), _VALUES, max_size=1
        ) | st.fixed_dictionaries(
            {}, optional={key: _plausible(child, path + (key,)) for key, child in free.items()}
        )
    if isinstance(shape, ListOf):
        return st.lists(_plausible(shape.item, path), max_size=2)
    if isinstance(shape, OneOf):
        return st.sampled_from(shape.values)
    if isinstance(shape, (AnyOf, DictOf)) or shape is ANY:
        return _VALUES
    return {
        str: _SCALARS.filter(lambda v: isinstance(v, str)),
        int: st.integers(-5, 5),
        bool: st.booleans(),
    }[shape] | _SCALARS


_PLAUSIBLE_TABLES = _plausible(GRAMINE_1_9)
_DOTTED_TABLES = st.dictionaries(st.sampled_from(_schema_keys(GRAMINE_1_9)), _VALUES, max_size=3)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    table=_PLAUSIBLE_TABLES | _DOTTED_TABLES | st.dictionaries(_KEYS, _VALUES, max_size=4),
    kind=st.sampled_from(list(COMMANDS)),
    allow=st.booleans(),
)
def test_random_override_tables_render_or_fail_with_our_errors(rootfs, table, kind, allow):
    text = recipe_text(yaml.safe_dump({"manifest": table}), kind=kind)
    options = ALLOW_ALL if allow else ManifestOptions()
    try:
        rendered = render(rootfs, text, options)
    except (ManifestError, RecipeError) as err:
        assert "\n" not in str(err)
        return
    tomllib.loads(rendered.text)  # what we wrote parses back
