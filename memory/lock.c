/*
 * memory/lock.c - one process per store: an exclusive flock on "STORE.lock".
 *
 * `eddy run` holds it for as long as it runs, `eddy state` while it writes.
 * The file holds the holder's pid (written just after the lock is taken), so
 * whoever cannot take it can say who has it. The file stays after use:
 * removing it would let a third process lock a new file while a second
 * still holds the old one.
 */
#include "eddy/memory.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "eddy/buf.h"
#include "eddy/log.h"

/* The pid the holder wrote into FD, or 0; it writes it just after it took
 * the lock: give it a moment. */
static long lock_holder(int fd)
{
    for (int tries = 0; tries < 50; tries++) {
        char buf[32], *end;
        ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
        struct timespec ts = {0, 10 * 1000 * 1000};
        if (n > 0) {
            long pid;
            buf[n] = '\0';
            errno = 0;
            pid = strtol(buf, &end, 10);
            if (!errno && end != buf && pid > 0 && (*end == '\n' || !*end))
                return pid;
        }
        nanosleep(&ts, NULL);
    }
    return 0;
}

int eddy_store_lock(const char *path, long *holder, eddy_err *err)
{
    char *lock = eddy_aprintf("%s.lock", path), pid[32];
    int fd = -1, n;
    *holder = 0;
    if (!lock) {
        eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        return -1;
    }
    if (eddy_mkdirs_for(lock, err))
        goto out;
    if ((fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644)) < 0) {
        eddy_err_setc(err, EDDY_EIO, errno, "cannot open '%s', the lock of the store: %s", lock,
                      strerror(errno));
        goto out;
    }
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        if (errno == EWOULDBLOCK) {
            *holder = lock_holder(fd);
            eddy_err_set(err, EDDY_EEXIST, "%s is locked by another process", path);
            close(fd);
            fd = -1;
        } else { /* a file system without locks: go on, as before there was one */
            EDDY_WARN("memory", "cannot lock '%s' (%s): nothing stops another process on %s", lock,
                      strerror(errno), path);
        }
        goto out;
    }
    n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) || pwrite(fd, pid, (size_t)n, 0) != n)
        EDDY_WARN("memory", "cannot write our pid into '%s': %s", lock, strerror(errno));
out:
    eddy_free(lock);
    return fd;
}
