package org.ppmlbuild.enclave.hadoop;

import org.apache.hadoop.fs.LocalFileSystem;

/**
 * {@code fs.file.impl} for Spark in an enclave: Hadoop's checksummed LocalFileSystem over
 * {@link NioRawLocalFileSystem}, so local writes never start a chmod process.
 */
public class NioLocalFileSystem extends LocalFileSystem {
    public NioLocalFileSystem() {
        super(new NioRawLocalFileSystem());
    }
}
