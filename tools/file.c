/*
 * tools/file.c - eddy.file.read: a tool reads files of its job's folder,
 * and nothing else.
 *
 * Paths are resolved by the kernel below the folder's descriptor with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
 * RESOLVE_NO_XDEV); where openat2 is missing (ENOSYS, or refused by a
 * seccomp filter) the same walk is done one component at a time with
 * O_NOFOLLOW and ".." refused. Only regular files are read (a FIFO is opened
 * non-blocking and refused, so it cannot stall the loop), up to a size cap.
 * Refused as well: anything under a folder named .eddy (eddy's default
 * state), the files the host was told to deny (the job's stores and their
 * journals, compared by device and inode), and SQLite databases and WAL
 * files by their header, wherever they are.
 */
#include "tools_int.h"

#include "eddy/buf.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int eddy__tools_open_base(const char *dir)
{
    return open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
}

int eddy_tools_deny_file(eddy_tools *h, const char *path, eddy_err *err)
{
    char **grown = eddy_realloc(h->deny, (h->ndeny + 1) * sizeof(*grown));
    if (!grown)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    h->deny = grown;
    if (!(h->deny[h->ndeny] = eddy_strdup(path)))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    h->ndeny++;
    return 0;
}

/* Component-wise walk below DIRFD: no "..", no symbolic links. */
static int open_walk(int dirfd, const char *rel)
{
    char part[256];
    int fd = dup(dirfd);
    const char *p = rel;
    while (fd >= 0 && *p) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        int next;
        if (n >= sizeof(part)) {
            close(fd);
            errno = ENAMETOOLONG;
            return -1;
        }
        memcpy(part, p, n);
        part[n] = '\0';
        p += n + (e ? 1 : 0);
        if (n == 0 || !strcmp(part, "."))
            continue;
        if (!strcmp(part, "..")) {
            close(fd);
            errno = EXDEV;
            return -1;
        }
        next = openat(fd, part,
                      (*p ? O_PATH | O_DIRECTORY : O_RDONLY | O_NONBLOCK) | O_NOFOLLOW | O_CLOEXEC);
        close(fd);
        fd = next;
    }
    return fd;
}

static int open_beneath(int dirfd, const char *rel)
{
    struct open_how how;
    long fd;
    memset(&how, 0, sizeof(how));
    how.flags = O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
    fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
    if (fd < 0 && (errno == ENOSYS || errno == EPERM))
        return open_walk(dirfd, rel);
    return (int)fd;
}

static int denied(const eddy_tools *h, const struct stat *st)
{
    static const char *const tails[] = {"", "-wal", "-shm", "-journal", NULL};
    for (size_t i = 0; i < h->ndeny; i++) {
        for (const char *const *t = tails; *t; t++) {
            char path[4096];
            struct stat d;
            snprintf(path, sizeof(path), "%s%s", h->deny[i], *t);
            if (stat(path, &d) == 0 && d.st_dev == st->st_dev && d.st_ino == st->st_ino)
                return 1;
        }
    }
    return 0;
}

static int under_eddy_state(const char *rel)
{
    const char *p = rel;
    while ((p = strstr(p, ".eddy"))) {
        if ((p == rel || p[-1] == '/') && (p[5] == '/' || p[5] == '\0'))
            return 1;
        p += 5;
    }
    return 0;
}

static void close_fd(void *p)
{
    close((int)(intptr_t)p - 1);
}

/* Refuse with nil and a message, as eddy.file.read always has; the file, if
 * open, is closed now (not at the next collection). */
static int refuse_fd(lua_State *L, eddy_holder *hd, const char *rel, const char *why)
{
    eddy__tools_holder_release(hd);
    lua_pushnil(L);
    lua_pushfstring(L, "eddy.file.read: '%s': %s", rel, why);
    return 2;
}

static int refuse(lua_State *L, const char *rel, const char *why)
{
    lua_pushnil(L);
    lua_pushfstring(L, "eddy.file.read: '%s': %s", rel, why);
    return 2;
}

int eddy__tools_file_read(lua_State *L)
{
    eddy_tools *h = eddy__tools_host(L);
    size_t len;
    const char *rel = luaL_checklstring(L, 1, &len);
    eddy_holder *hd;
    struct stat st;
    luaL_Buffer b;
    char *dst;
    int fd;
    if (strlen(rel) != len || rel[0] == '/')
        return luaL_error(L, "eddy.file.read: '%s' is outside the job's folder", rel);
    if (under_eddy_state(rel))
        return refuse(L, rel, "eddy's own state is not readable by tools");
    if (h->base_fd < 0)
        return refuse(L, rel, "the job's folder cannot be opened");
    hd = eddy__tools_holder(L); /* closes the file if an error skips us */
    fd = open_beneath(h->base_fd, rel);
    if (fd < 0) {
        if (errno == EXDEV || errno == ELOOP)
            return luaL_error(L,
                              "eddy.file.read: '%s' is outside the job's folder (or a "
                              "symbolic link)",
                              rel);
        return refuse(L, rel, strerror(errno));
    }
    hd->p = (void *)(intptr_t)(fd + 1);
    hd->free = close_fd;
    if (fstat(fd, &st) != 0)
        return refuse_fd(L, hd, rel, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return refuse_fd(L, hd, rel, "not a regular file");
    if (denied(h, &st))
        return refuse_fd(L, hd, rel, "eddy's own state is not readable by tools");
    if (st.st_size > EDDY_LUA_FILE_MAX)
        return refuse_fd(L, hd, rel, "larger than the 16 MiB a tool may read");
    eddy__tools_charge(L, (int64_t)st.st_size / 16 + 1);
    dst = luaL_buffinitsize(L, &b, (size_t)st.st_size);
    len = 0;
    while (len < (size_t)st.st_size) {
        ssize_t r = read(fd, dst + len, (size_t)st.st_size - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return refuse_fd(L, hd, rel, strerror(errno));
        if (r == 0)
            break;
        len += (size_t)r;
    }
    eddy__tools_holder_release(hd);
    if (len >= 16 && (!memcmp(dst, "SQLite format 3", 16) ||
                      ((unsigned char)dst[0] == 0x37 && (unsigned char)dst[1] == 0x7f &&
                       (unsigned char)dst[2] == 0x06 && ((unsigned char)dst[3] & 0xfe) == 0x82)))
        return refuse(L, rel, "SQLite databases are not readable by tools");
    luaL_pushresultsize(&b, len);
    return 1;
}
