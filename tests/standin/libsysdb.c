/*
 * Stand-in for Gramine's LibOS (libsysdb.so), the loader.entrypoint of a manifest. Only its
 * bytes matter (the manifest carries its sha256); it is never run.
 */

static const char libos_banner[] = "ppml-build stand-in libsysdb (not Gramine)";

static unsigned long syscall_count[16];

unsigned long libos_init(void) {
    unsigned long sum = 0;
    for (unsigned i = 0; i < sizeof(libos_banner); i++)
        sum = sum * 31 + (unsigned char)libos_banner[i];
    syscall_count[0] = sum;
    return sum;
}

void libos_start(void) {
    libos_init();
    for (;;)
        __asm__ volatile("hlt");
}
