"""A wrong wall clock for one process: an ``LD_PRELOAD`` library, built by the test
with gcc, that shifts the wall clock by the seconds in a file (the monotonic clock
stays true). Used by ``tests/integration/test_clock.py`` and the chaos run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.base import require_binary

#: libfaketime 0.9.10 (Debian bookworm) cannot fake a Python 3.11 node's clock:
#: with FAKETIME_DONT_FAKE_MONOTONIC, time.sleep (clock_nanosleep on the monotonic
#: clock, TIMER_ABSTIME) fails with EINVAL; without it, threading waits with a
#: timeout (sem_clockwait on the real monotonic clock, deadline from the faked one)
#: never end, and a jump of the wall clock moves the monotonic clock too, which no
#: kernel does. So the node's wall clock is shifted by this small LD_PRELOAD library,
#: built by the test: clock_gettime(CLOCK_REALTIME*), gettimeofday and time only.
WALLSHIFT_C = r"""
/* Shifts CLOCK_REALTIME (only) by the whole seconds in the file $WALL_OFFSET_FILE,
   re-read at most every 100 ms: a wall clock that jumps while the monotonic clock
   runs on, as NTP does. Test-only (tests/support/wallclock.py). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static int (*real_gettime)(clockid_t, struct timespec *);
static long long offset_ns, checked_ns = -1;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static long long offset(void) {
    struct timespec m;
    real_gettime(CLOCK_MONOTONIC, &m);
    long long now = m.tv_sec * 1000000000LL + m.tv_nsec;
    pthread_mutex_lock(&mu);
    if (checked_ns < 0 || now - checked_ns > 100000000LL) {
        checked_ns = now;
        const char *path = getenv("WALL_OFFSET_FILE");
        FILE *f = path ? fopen(path, "r") : NULL;
        if (f) {
            long long s;
            if (fscanf(f, "%lld", &s) == 1) offset_ns = s * 1000000000LL;
            fclose(f);
        }
    }
    long long o = offset_ns;
    pthread_mutex_unlock(&mu);
    return o;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    if (!real_gettime) real_gettime = dlsym(RTLD_NEXT, "clock_gettime");
    int r = real_gettime(id, ts);
    if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
        long long t = ts->tv_sec * 1000000000LL + ts->tv_nsec + offset();
        ts->tv_sec = t / 1000000000LL;
        ts->tv_nsec = t % 1000000000LL;
    }
    return r;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    struct timespec ts;
    (void)tz;
    clock_gettime(CLOCK_REALTIME, &ts);
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
    return 0;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
"""


def wallshift(tmp_path: Path, offset_file: Path) -> dict[str, str]:
    """Environment for a process whose wall clock is shifted by the seconds in
    ``offset_file`` (re-read every 100 ms), its monotonic clock untouched."""
    gcc = require_binary("gcc")
    source = tmp_path / "wallshift.c"
    source.write_text(WALLSHIFT_C)
    lib = tmp_path / "wallshift.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(source), "-ldl"],
                   check=True, capture_output=True, timeout=120)
    return {"LD_PRELOAD": str(lib), "WALL_OFFSET_FILE": str(offset_file)}
