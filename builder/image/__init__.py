"""Images and their filesystems: the Docker engine, registries, base images, rootfs views."""
