"""The pipeline over every backend: recipe → plan → backend → outputs.

``stages.py`` loads and plans a recipe once (and writes ``ppml-build manifest``); ``options.py``,
``job.py``, ``outputs.py`` and the key guard are what each backend is handed and uses;
``backends.py`` dispatches ``ppml-build build`` on ``libos.type``; ``reproducible.py`` builds
twice. (Not named ``build/``: tools and ignore files take that name for build output.)
"""
