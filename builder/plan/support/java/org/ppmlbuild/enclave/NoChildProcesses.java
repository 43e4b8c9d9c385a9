package org.ppmlbuild.enclave;

import java.security.Permission;

/**
 * A JVM in an enclave that another process shares (PySpark, PyFlink: Python starts the JVM)
 * runs with {@code -Djava.security.manager=org.ppmlbuild.enclave.NoChildProcesses}: every
 * attempt to start a program is refused before the JVM forks, everything else is allowed.
 *
 * <p>Why: under Gramine a fork checkpoints the whole parent into a new process while the
 * JVM's other threads keep running (Gramine 1.9 libos/src/libos_checkpoint.c,
 * send_memory_on_stream), and under SGX every child is a new enclave. Spark, Hadoop and Flink
 * call out to setsid, bash, getconf, rm or chmod and fall back when they may not: Hadoop's
 * Shell.isSetsidSupported and checkIsBashSupported catch SecurityException, Spark's
 * JavaUtils.deleteRecursively falls back to java.io on any exception.
 *
 * <p>A JVM that is the enclave's only process gets Gramine's own {@code
 * sys.disallow_subprocesses = true} instead; this class is for the case where the LibOS must
 * still let Python start the JVM.
 */
@SuppressWarnings("removal")
public final class NoChildProcesses extends SecurityManager {
    @Override
    public void checkExec(String cmd) {
        throw new SecurityException("ppml-build: starting '" + cmd + "' from the JVM is refused "
                + "in this enclave (a running JVM must not fork under Gramine)");
    }

    @Override
    public void checkPermission(Permission perm) {
        // Everything but starting programs is allowed, as without a security manager.
    }

    @Override
    public void checkPermission(Permission perm, Object context) {
    }
}
