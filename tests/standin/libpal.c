/*
 * Stand-in for Gramine's SGX libpal.so, used only to exercise the MRENCLAVE code.
 *
 * Built with -nostdlib so the ELF depends on nothing but gcc/ld. It carries the shapes the
 * measurement must handle: code (.text), read-only data (.rodata), RELRO data (.data.rel.ro,
 * which makes the RW segment start in the middle of a page), initialised RW data (.data),
 * a multi-page .bss, and an entry point (e_entry = pal_start) that is a real function.
 */

typedef unsigned long u64;

static const char banner[] = "ppml-build stand-in libpal (not Gramine)";

/* Pointers in a const table go to .data.rel.ro under -fPIC: the RELRO part of the RW segment. */
static const char *const area_names[] = {"manifest", "ssa", "tcs", "tls", "stack", "sig_stack"};

static u64 counters[64] = {1, 2, 3, 5, 8, 13, 21, 34};  /* .data */

char pal_scratch[5 * 4096 + 123];                      /* .bss spanning several pages */

__attribute__((noinline)) static u64 mix(u64 x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdUL;
    x ^= x >> 33;
    return x;
}

u64 pal_checksum(void) {
    u64 sum = 0;
    for (unsigned i = 0; i < sizeof(banner); i++)
        sum = mix(sum + (unsigned char)banner[i]);
    for (unsigned i = 0; i < sizeof(area_names) / sizeof(area_names[0]); i++)
        sum = mix(sum + (u64)area_names[i][0]);
    for (unsigned i = 0; i < 64; i++)
        sum = mix(sum + counters[i]);
    return sum;
}

/* The enclave entry point (TCS.OENTRY points here). */
void pal_start(void) {
    u64 sum = pal_checksum();
    for (unsigned i = 0; i < sizeof(pal_scratch); i += 4096)
        pal_scratch[i] = (char)(sum >> (i / 4096));
    counters[0] = sum;
    for (;;)
        __asm__ volatile("hlt");
}
