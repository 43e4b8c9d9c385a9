"""Links under app.files and build.sources: what `validate` refuses (one line, exit 2), what a
build stages (links as links, never a host file from outside the recipe's directory), and that
the trusted list made from the host files equals the one of the image Docker would build."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ppml_build.cli import main
from ppml_build.errors import RecipeError
from ppml_build.gramine.trusted import expand_trusted_file_list
from ppml_build.image import app_layer
from ppml_build.image.hashing import FileHasher
from ppml_build.image.rootfs import DirRootFS
from ppml_build.recipe import load_recipe

RECIPE = """\
apiVersion: ppml-build/v1
kind: spark
name: demo
base:
  image: 127.0.0.1:5000/ppml/spark:1
app:
  files:
    - src: job.py
      dest: /app/job.py
    - src: conf/
      dest: /app/conf/
{more}  command: [/opt/spark/bin/spark-submit, /app/job.py]
"""

BUILD_STAGE = """\
build:
  sources:
    - src: src/
      dest: /build/src/
  steps: [make]
  outputs:
    - {src: /build/app.jar, dest: /app/app.jar}
"""


def recipe_dir(tmp_path: Path, more: str = "", tail: str = "") -> Path:
    """tmp_path/recipe (job.py, conf/app.conf) and tmp_path/outside (a host secret, a dir)."""
    directory = tmp_path / "recipe"
    (directory / "conf").mkdir(parents=True)
    (directory / "job.py").write_text("print(1)\n")
    (directory / "conf" / "app.conf").write_text("threads=2\n")
    (directory / "recipe.yaml").write_text(RECIPE.format(more=more) + tail)
    (tmp_path / "outside" / "dir").mkdir(parents=True)
    (tmp_path / "outside" / "shadow").write_text("root:$6$secret\n")
    return directory


def validate(capsys, directory: Path) -> tuple[int, list[str]]:
    code = main(["validate", str(directory / "recipe.yaml")])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err.strip().splitlines()


def refused(capsys, directory: Path, field: str = "app.files[1].src") -> str:
    code, lines = validate(capsys, directory)
    assert code == 2 and len(lines) == 1, lines
    prefix = f"ppml-build: error: {directory / 'recipe.yaml'}: {field}: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix) :]


# --- what validate refuses --------------------------------------------------------------------


def test_an_absolute_link_to_a_host_secret(tmp_path, capsys):
    directory = recipe_dir(tmp_path)
    (directory / "conf" / "shadow").symlink_to(tmp_path / "outside" / "shadow")
    assert refused(capsys, directory) == (
        f"'conf/' holds a link 'conf/shadow' to '{tmp_path}/outside/shadow', outside the "
        "recipe's directory; copy the file in instead"
    )


def test_a_dotdot_chain_out_of_the_recipe(tmp_path, capsys):
    directory = recipe_dir(tmp_path)
    (directory / "conf" / "x").symlink_to("../../outside/shadow")
    assert refused(capsys, directory) == (
        f"'conf/' holds a link 'conf/x' (-> '../../outside/shadow') that leads to "
        f"'{tmp_path}/outside/shadow', outside the recipe's directory; copy the file in instead"
    )


def test_a_chain_of_links_through_the_recipe_directory_and_out(tmp_path, capsys):
    directory = recipe_dir(tmp_path)
    (directory / "conf" / "a").symlink_to("b")
    (directory / "conf" / "b").symlink_to("../hop")
    (directory / "hop").symlink_to(tmp_path / "outside" / "shadow")
    assert refused(capsys, directory) == (
        f"'conf/' holds a link 'conf/a' (-> 'b') that leads to '{tmp_path}/outside/shadow', "
        "outside the recipe's directory; copy the file in instead"
    )


def test_a_link_to_a_host_directory(tmp_path, capsys):
    directory = recipe_dir(tmp_path)
    (directory / "conf" / "etc").symlink_to(tmp_path / "outside" / "dir")
    assert refused(capsys, directory) == (
        f"'conf/' holds a link 'conf/etc' to '{tmp_path}/outside/dir', outside the recipe's "
        "directory; copy the directory in instead"
    )


def test_a_dangling_link(tmp_path, capsys):
    directory = recipe_dir(tmp_path)
    (directory / "conf" / "gone").symlink_to("removed.conf")
    assert refused(capsys, directory) == (
        "'conf/' holds a link 'conf/gone' (-> 'removed.conf') that dangles (nothing is there); "
        "remove it or copy the file in"
    )


def test_a_link_loop(tmp_path, capsys):
    directory = recipe_dir(tmp_path)
    (directory / "conf" / "ping").symlink_to("pong")
    (directory / "conf" / "pong").symlink_to("ping")
    assert refused(capsys, directory) == (
        "'conf/' holds a link 'conf/ping' (-> 'pong') that loops; remove it"
    )


def test_a_link_to_a_directory_inside_the_tree(tmp_path, capsys):
    """Gramine never descends a linked directory when it expands trusted files: the files
    behind it would be in the image but unreadable in the enclave. Refused, with the fix."""
    directory = recipe_dir(tmp_path)
    (directory / "conf" / "v1").mkdir()
    (directory / "conf" / "v1" / "app.conf").write_text("threads=4\n")
    (directory / "conf" / "current").symlink_to("v1")
    assert refused(capsys, directory) == (
        "'conf/' holds a link 'conf/current' (-> 'v1') to a directory; Gramine never trusts "
        "files reached through a linked directory, so they could not be read in the enclave: "
        "replace the link by the directory itself"
    )


def test_a_fifo(tmp_path, capsys):
    directory = recipe_dir(tmp_path)
    os.mkfifo(directory / "conf" / "pipe")
    assert refused(capsys, directory) == (
        "'conf/' holds 'conf/pipe', a FIFO, not a file, directory or link; remove it"
    )


def test_a_dangling_src_and_an_escaping_src(tmp_path, capsys):
    directory = recipe_dir(tmp_path)
    (directory / "job.py").unlink()
    (directory / "job.py").symlink_to("job-v2.py")
    assert refused(capsys, directory, "app.files[0].src") == (
        "'job.py' is a link that dangles (nothing is there); point it at a file inside the "
        "recipe's directory"
    )
    (directory / "job.py").unlink()
    (directory / "job.py").symlink_to(tmp_path / "outside" / "shadow")
    assert refused(capsys, directory, "app.files[0].src") == (
        f"'job.py' leaves the recipe's directory (it leads to '{tmp_path}/outside/shadow'); "
        "move the file next to the recipe"
    )


def test_build_sources_are_walked_too(tmp_path, capsys):
    directory = recipe_dir(tmp_path, tail=BUILD_STAGE)
    (directory / "src").mkdir()
    (directory / "src" / "Main.java").write_text("class Main {}\n")
    (directory / "src" / "id_rsa").symlink_to(tmp_path / "outside" / "shadow")
    assert refused(capsys, directory, "build.sources[0].src") == (
        f"'src/' holds a link 'src/id_rsa' to '{tmp_path}/outside/shadow', outside the "
        "recipe's directory; copy the file in instead"
    )
    (directory / "src" / "id_rsa").unlink()
    (directory / "src" / "lib").symlink_to(directory / "conf")  # absolute: not kept as a link
    assert refused(capsys, directory, "build.sources[0].src") == (
        f"'src/' holds a link 'src/lib' (-> '{directory}/conf') to a directory that the copied "
        "tree would not resolve to (the link is absolute or leaves 'src/'); make it a relative "
        "link inside it, or copy the directory in instead"
    )


# --- what a build stages ----------------------------------------------------------------------


def stage(directory: Path, tmp_path: Path) -> Path:
    context = tmp_path / "context"
    context.mkdir()
    app_layer.stage_app_files(
        load_recipe(directory / "recipe.yaml"), directory, context, "recipe.yaml"
    )
    return context


def test_links_inside_the_tree_stay_links_others_become_their_bytes(tmp_path, capsys):
    directory = recipe_dir(tmp_path)
    conf = directory / "conf"
    (conf / "sub").mkdir()
    (conf / "current.conf").symlink_to("app.conf")
    (conf / "sub" / "up.conf").symlink_to("../app.conf")
    (conf / "chain.conf").symlink_to("current.conf")
    (conf / "absolute.conf").symlink_to(conf / "app.conf")  # a host path: meaningless in the image
    (directory / "shared.conf").write_text("shared=1\n")
    (conf / "shared.conf").symlink_to("../shared.conf")  # leaves the tree: copied as its bytes
    assert validate(capsys, directory)[0] == 0
    staged = stage(directory, tmp_path) / "rootfs/app/conf"
    links = {
        path.relative_to(staged).as_posix(): os.readlink(path)
        for path in staged.rglob("*")
        if path.is_symlink()
    }
    assert links == {
        "current.conf": "app.conf",
        "sub/up.conf": "../app.conf",
        "chain.conf": "current.conf",
    }
    assert (staged / "absolute.conf").read_text() == "threads=2\n"
    assert (staged / "shared.conf").read_text() == "shared=1\n"


def test_build_sources_keep_a_relative_link_to_a_directory_of_their_tree(tmp_path):
    directory = recipe_dir(tmp_path, tail=BUILD_STAGE)
    (directory / "src" / "v1").mkdir(parents=True)
    (directory / "src" / "v1" / "Main.java").write_text("class Main {}\n")
    (directory / "src" / "current").symlink_to("v1")
    context = stage(directory, tmp_path)
    assert os.readlink(context / "build-src/0/current") == "v1"
    assert (context / "build-src/0/v1/Main.java").read_text() == "class Main {}\n"


def test_a_later_entry_replaces_a_link_instead_of_writing_through_it(tmp_path):
    more = "    - src: override.conf\n      dest: /app/conf/current.conf\n"
    directory = recipe_dir(tmp_path, more)
    (directory / "conf" / "current.conf").symlink_to("app.conf")
    (directory / "override.conf").write_text("threads=8\n")
    staged = stage(directory, tmp_path) / "rootfs/app/conf"
    assert not (staged / "current.conf").is_symlink()
    assert (staged / "current.conf").read_text() == "threads=8\n"
    assert (staged / "app.conf").read_text() == "threads=2\n"


def test_a_later_entry_over_a_links_target_is_refused(tmp_path):
    """The image's link would lead to the later file, the file view to the earlier one."""
    more = "    - src: override.conf\n      dest: /app/conf/app.conf\n"
    directory = recipe_dir(tmp_path, more)
    (directory / "conf" / "current.conf").symlink_to("app.conf")
    (directory / "override.conf").write_text("threads=8\n")
    with pytest.raises(RecipeError) as info:
        stage(directory, tmp_path)
    assert str(info.value) == (
        "recipe.yaml: app.files: the link 'conf/current.conf' would lead, in the image, to a "
        "file a later app.files entry puts over its target; give that entry another dest, or "
        "copy the file in instead of the link"
    )


def test_a_directory_where_an_earlier_entry_put_a_file(tmp_path):
    directory = recipe_dir(tmp_path)
    text = (directory / "recipe.yaml").read_text().replace("dest: /app/job.py", "dest: /app/conf")
    (directory / "recipe.yaml").write_text(text)
    with pytest.raises(RecipeError) as info:
        stage(directory, tmp_path)
    assert str(info.value) == (
        "recipe.yaml: app.files[1].dest: 'conf/' goes where an earlier entry put a file"
    )


# --- the trusted list agrees with the image ---------------------------------------------------


def trusted(fs, recipe) -> list[tuple[str, str]]:
    entries = [f"file:{item.dest}" for item in recipe.app.files]
    return [(tf.uri, tf.sha256) for tf in expand_trusted_file_list(entries, fs)]


def file_view_and_image(directory: Path, work: Path, monkeypatch) -> tuple[list, list]:
    """The trusted list as the build makes it (app_rootfs: the base index plus the app files,
    hashed at their source) and as the staged image has it (the context's rootfs on an empty
    base is exactly what `COPY rootfs/ /` builds)."""
    recipe = load_recipe(directory / "recipe.yaml")
    context = work / "context"
    context.mkdir()
    pairs = app_layer.stage_app_files(recipe, directory, context, "recipe.yaml")
    empty = work / "base"
    empty.mkdir()
    hasher = FileHasher(use_cache=False)
    monkeypatch.setattr(
        app_layer, "_base_index", lambda *args, **kwargs: (DirRootFS(empty, hasher), "cache")
    )
    view = app_layer.app_rootfs(None, "sha256:base", recipe, pairs, use_cache=False)
    image = DirRootFS(context / "rootfs", hasher)
    return trusted(view, recipe), trusted(image, recipe)


def test_kept_links_are_listed_as_the_image_has_them(tmp_path, monkeypatch):
    directory = recipe_dir(tmp_path)
    (directory / "conf" / "current.conf").symlink_to("app.conf")
    view, image = file_view_and_image(directory, tmp_path, monkeypatch)
    assert view == image
    assert [uri for uri, _ in image] == [
        "file:/app/job.py",
        "file:/app/conf/app.conf",
        "file:/app/conf/current.conf",
    ]


NAMES = ["a", "b", "d/e", "d/f"]
LINK_TEXTS = [
    "a",
    "b",
    "d/e",
    "../a",
    "../b",
    "d",
    "../d",
    "../shared",
    "../../shared",
    "../job.py",
    "../../outside",
    "missing",
    "ABSOLUTE_A",
    "ABSOLUTE_SHARED",
    "e",
    "f",
]


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    kinds=st.lists(
        st.one_of(st.just(None), st.binary(min_size=1, max_size=8), st.sampled_from(LINK_TEXTS)),
        min_size=4,
        max_size=4,
    ),
    override=st.sampled_from([None, "/app/conf/a", "/app/conf/b", "/app/conf/d/e"]),
)
def test_every_staged_tree_lists_what_its_image_has(kinds, override, monkeypatch):
    """Any mix of files and links (inside, outside, dangling, absolute, to directories) and an
    optional later entry over one of them: refused with a RecipeError, or the trusted list
    from the file view equals the image's, and no byte from outside the recipe is staged."""
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        more = f"    - src: shared\n      dest: {override}\n" if override else ""
        directory = recipe_dir(work, more)
        (directory / "shared").write_text("SHARED\n")
        (work / "outside" / "shadow").write_text("OUTSIDE-SECRET\n")
        conf = directory / "conf"
        (conf / "d").mkdir()
        for name, kind in zip(NAMES, kinds):
            if kind is None:
                continue
            if isinstance(kind, bytes):
                (conf / name).write_bytes(kind)
                continue
            text = {
                "ABSOLUTE_A": str(conf / "a"),
                "ABSOLUTE_SHARED": str(directory / "shared"),
                "../../outside": "../../outside/shadow",
            }.get(kind, kind)
            (conf / name).symlink_to(text)
        try:
            view, image = file_view_and_image(directory, work, monkeypatch)
        except RecipeError:
            event("refused")
            return
        event("staged")
        assert view == image
        for path in (work / "context").rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert b"OUTSIDE-SECRET" not in path.read_bytes(), path
