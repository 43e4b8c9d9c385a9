"""ppml-build: recipe → plan → manifest → image → measure/sign → record/policy."""

__version__ = "0.1.0"
