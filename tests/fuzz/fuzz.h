/*
 * The one entry point every fuzz target defines (tests/fuzz/README.md).
 * Built with -DMDB_LIBFUZZER=ON it is driven by libFuzzer; otherwise
 * replay.c's main() feeds it each file of the corpus folders named on the
 * command line, as ctest does. A target reports a bug by crashing (abort,
 * or a sanitizer report); it must not keep state from one input to the next.
 */
#ifndef MDB_FUZZ_H
#define MDB_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Abort with the target's name and a reason: a property the input broke. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fuzz_fail(__FILE__, __LINE__, #cond);                                                  \
    } while (0)
__attribute__((noreturn)) static inline void fuzz_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: fuzz property failed: %s\n", file, line, what);
    abort();
}

/* The input as an anonymous memory file (no file system, gone at close):
 * the fd, or -1; *path (cap >= 32) names it for code that opens paths. */
static inline int fuzz_memfd(const uint8_t *data, size_t size, char *path, size_t cap)
{
    int fd = memfd_create("fuzz-input", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    for (size_t off = 0; off < size;) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    snprintf(path, cap, "/proc/self/fd/%d", fd);
    return fd;
}

#endif
