/* A slow disk for bench/ingest.py: fsync/fdatasync take BART_FSYNC_DELAY_US longer.
 *
 * LD_PRELOAD=slowfsync.so puts these in front of libc's: each call does the real
 * fsync or fdatasync, then sleeps (default 2000 us, as an SD card or a busy
 * disk may take), so every COMMIT with synchronous=FULL waits that long more.
 * The process only waits (nanosleep): no CPU is spent, as with a real slow disk.
 * bench/ingest.py compiles this at run time with the system cc:
 *   cc -shared -fPIC -O2 -o slowfsync.so bench/slowfsync.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static long delay_us = -1;

static void slow_down(void) {
    if (delay_us < 0) {
        const char *env = getenv("BART_FSYNC_DELAY_US");
        delay_us = env ? atol(env) : 2000;
    }
    if (delay_us > 0) {
        struct timespec ts = {delay_us / 1000000, (delay_us % 1000000) * 1000};
        while (nanosleep(&ts, &ts) != 0) {
        }
    }
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int rc = real(fd);
    slow_down();
    return rc;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int rc = real(fd);
    slow_down();
    return rc;
}
