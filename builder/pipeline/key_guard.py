"""The signing key never enters a build context: what to look for, and the one-line refusal.

``key_scan`` knows the encodings; this module knows where a build puts things (the app layer's
context: ``rootfs/`` for app.files, ``build-src/<i>`` for build.sources) and names the recipe
field that would have shipped the key.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RecipeError
from ..image.app_layer import APP_FILES_DIR, BUILD_SOURCES_DIR
from ..sign import keys
from . import key_scan


def key_needles(key_path: Path, private_key: keys.PrivateKey | None) -> list[bytes]:
    """What must never appear in a build context: the key in every encoding we can derive
    (key_scan: the key file, DER, base64, hex and the raw private numbers)."""
    return key_scan.key_needles(key_path.read_bytes(), private_key)


def refuse_key_in_context(context: Path, needles: list[bytes], source: str) -> None:
    """One line naming where in the image (or build stage) the key would have gone."""
    found = key_scan.find_in_tree(context, needles)
    if found is None:
        return
    rel, needle = found
    encoding = getattr(needle, "encoding", "PEM")
    first, _, rest = rel.partition("/")
    if first == APP_FILES_DIR:
        place, fix = (
            f"app.files would put the signing key ({encoding}) into the image at /{rest}",
            "remove it from app.files",
        )
    elif first == BUILD_SOURCES_DIR:
        index = rest.partition("/")[0]
        place, fix = (
            f"build.sources[{index}] would put the signing key ({encoding}) into "
            f"the build stage ({rel})",
            "remove it from build.sources",
        )
    else:
        place, fix = f"the build context file {rel} holds the signing key ({encoding})", "remove it"
    raise RecipeError(f"{source}: {place}; the signing key must never be shipped: {fix}")


def refuse_key_in_bytes(named: dict[str, bytes], needles: list[bytes], source: str) -> None:
    """The same guard over files made in memory (e.g. Occlum.json, bom.yaml)."""
    for name, data in named.items():
        if any(needle and needle in data for needle in needles):
            raise RecipeError(
                f"{source}: {name} would contain the signing key; never put the "
                "key in app.env or app.files"
            )
