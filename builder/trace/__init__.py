"""``ppml-build trace``: which files does the app really open, and does the manifest agree?

The recipe's command runs natively in the built image under ``strace -f``, then under
gramine-direct with the image's signed manifest; every file the app opened is checked the way
Gramine 1.9's chroot filesystem would check it. One module per job, dependencies pointing down:

* ``parse``: what the strace log and the gramine-direct log say (text in, values out).
* ``manifest_view``: what a Gramine manifest trusts, allows and mounts, in in-image paths.
* ``comparison``: every open and exec checked against the manifest, Gramine's way.
* ``report``: the trace document (JSON), its manifest sizes and the LibOS part of the text.
* ``suggest``: the recipe changes the findings ask for, as YAML fragments.
* ``run``: the Docker edge (the tracing image, the native and the LibOS runs); ``run_trace``.

Everything but ``run`` is a pure core that takes text, dicts and a ``RootFS``.
"""
