"""``ppml-build build`` across backends: options, the backend registry, the key guard, outputs."""
